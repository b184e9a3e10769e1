"""Synthetic data with Criteo's shape, for experiments and tests that need no download.

Each sample has 13 dense counts and 26 categorical ids, one per feature, like Criteo's ``train.txt`` after
preprocessing (dense already ``log1p``-ed). What makes it Criteo-like:
* per-feature cardinalities = Criteo Kaggle's (``CRITEO_KAGGLE_CARDINALITIES``) x ``cardinality_scale``
  (clamped to ``[min_cardinality, max_cardinality]``);
* Zipf-like id frequencies: the id of feature f is ``perm_f(rank)`` with ``rank`` drawn from a truncated
  power law of exponent ``zipf_exponent`` (varied a little per feature) and ``perm_f`` a fixed pseudo-random
  bijection of ``[0, N_f)``, so popular ids are scattered over the id range as Criteo's hashed ids are;
* a planted label: ``logit = bias + a*z + sum_f alpha_f e_f(id_f) + beta * sum_{(f,g) in P} <u_f(id_f), u_g(id_g)>
  / sqrt(latent_dim)``, ``label ~ Bernoulli(sigmoid(logit))``, where ``z ~ N(0, 1)`` is a per-sample latent
  that also drives the dense counts, ``e_f(id)`` a per-id scalar effect and ``u_f(id)`` a per-id latent vector,
  both pseudo-random functions of (seed, feature, id) computed by hashing -- so nothing of size #ids is stored
  and any scale streams. A model can only learn an id's effect from the samples that hold it, so AUC rises
  with embedding capacity (collisions mix effects) and tail ids are hard, as in real data.
The bias is calibrated to ``target_ctr`` (Criteo's is about 0.25). Batches are reproducible: batch ``i`` of a
stream depends only on (seed, stream, i), so train and eval streams never overlap and any slice can be
regenerated. ``bayes_logits`` exposes the true logits, so experiments can print the Bayes-optimal AUC ceiling.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Tuple

import torch
from torchrec.datasets.utils import Batch

from cuda_ext import ops
from experiments.data.batch import CAT_NAMES, make_batch

CRITEO_KAGGLE_CARDINALITIES: List[int] = [
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
]  # fmt: skip
_UNIT = float(2**53)
_TWO53 = 2**53


@dataclass
class SyntheticCriteoConfig:
    cardinality_scale: float = 0.01
    min_cardinality: int = 3
    max_cardinality: Optional[int] = None
    zipf_exponent: float = 1.1
    zipf_exponent_spread: float = 0.15  # per-feature exponent in exponent +- spread (fixed by seed)
    latent_dim: int = 8
    effect_scale: float = 0.45  # alpha: std of the per-id scalar effects' total
    interaction_scale: float = 0.6  # beta
    num_interaction_pairs: int = 24
    dense_scale: float = 0.7  # a
    target_ctr: float = 0.25
    seed: int = 0
    cardinalities: List[int] = field(default_factory=list)  # explicit, overrides the scaled Criteo ones


class SyntheticCriteo:
    """Deterministic generator of Criteo-shaped batches (see the module docstring)."""

    def __init__(self, config: Optional[SyntheticCriteoConfig] = None) -> None:
        self.config = config or SyntheticCriteoConfig()
        c = self.config
        if c.cardinalities:
            cards = list(c.cardinalities)
        else:
            cards = [int(round(n * c.cardinality_scale)) for n in CRITEO_KAGGLE_CARDINALITIES]
            cards = [max(c.min_cardinality, n) for n in cards]
            if c.max_cardinality is not None:
                cards = [min(c.max_cardinality, n) for n in cards]
        if len(cards) != len(CAT_NAMES) or min(cards) < 1:
            raise ValueError(f"need {len(CAT_NAMES)} cardinalities >= 1, got {cards}")
        self.cardinalities: List[int] = cards
        gen = torch.Generator().manual_seed(c.seed)
        f = len(cards)
        self.exponents = c.zipf_exponent + c.zipf_exponent_spread * (2 * torch.rand(f, generator=gen) - 1)
        self.perm_mult = [self._coprime_multiplier(n, gen) for n in cards]
        self.perm_shift = [int(torch.randint(0, n, (1,), generator=gen)) for n in cards]
        # per-feature weight of the scalar effect; a few features matter more, as in real data
        weights = torch.rand(f, generator=gen) ** 2
        self.effect_weight = c.effect_scale * weights / weights.norm() * math.sqrt(f) / math.sqrt(f)
        big = [i for i, n in enumerate(cards) if n > 1]
        pairs = set()
        while len(pairs) < min(c.num_interaction_pairs, len(big) * (len(big) - 1) // 2):
            a, b = torch.randint(0, len(big), (2,), generator=gen).tolist()
            if a != b:
                pairs.add((min(big[a], big[b]), max(big[a], big[b])))
        self.pairs: List[Tuple[int, int]] = sorted(pairs)
        self.dense_mu = 1.0 + 2.0 * torch.rand(13, generator=gen)
        self.dense_sigma = 0.5 + torch.rand(13, generator=gen)
        self.dense_rho = 0.8 * torch.rand(13, generator=gen)
        self.dense_missing = 0.3 * torch.rand(13, generator=gen)
        self.bias = 0.0
        self.bias = self._calibrate_bias()

    @staticmethod
    def _coprime_multiplier(n: int, gen: torch.Generator) -> int:
        if n == 1:
            return 1
        a = int(torch.randint(1, n, (1,), generator=gen)) | 1
        while math.gcd(a, n) != 1:
            a += 1
        return a % n or 1

    # ---- pseudo-random functions of (feature, id) ------------------------------------------------------
    def _uniform(self, keys: torch.Tensor, salt: int) -> torch.Tensor:
        return (ops.mix_hash(keys, _TWO53, self.config.seed * 1_000_003 + salt).double() + 0.5) / _UNIT

    def _gaussian(self, keys: torch.Tensor, salt: int) -> torch.Tensor:
        u1 = self._uniform(keys, 2 * salt)
        u2 = self._uniform(keys, 2 * salt + 1)
        return (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2 * math.pi * u2)).float()

    def id_effect(self, feature: int, ids: torch.Tensor) -> torch.Tensor:
        """e_f(id): the planted scalar effect of each id ([n] float)."""
        return self._gaussian(ids, 1000 + feature)

    def id_latent(self, feature: int, ids: torch.Tensor) -> torch.Tensor:
        """u_f(id): the planted latent vector of each id ([n, latent_dim] float)."""
        d = self.config.latent_dim
        keys = ids.unsqueeze(1) * d + torch.arange(d)
        return self._gaussian(keys.reshape(-1), 5000 + feature).reshape(-1, d)

    def item_content(self, feature: int, ids: torch.Tensor, dim: int = 32, noise: float = 0.5) -> torch.Tensor:
        """Content embeddings ``[n, dim]`` of ids of ``feature``: what a content model (text, image) would know.

        A fixed random linear map of the id's planted behaviour ``[e_f(id), u_f(id)]`` plus per-id noise of std
        ``noise`` relative to the signal -- similar content means similar clicks, imperfectly, which is the
        premise of semantic IDs. Deterministic per (seed, feature, id).
        """
        behaviour = torch.cat([self.id_effect(feature, ids).unsqueeze(1), self.id_latent(feature, ids)], dim=1)
        gen = torch.Generator().manual_seed(self.config.seed * 7919 + feature)
        projection = torch.randn(behaviour.shape[1], dim, generator=gen) / behaviour.shape[1] ** 0.5
        keys = ids.unsqueeze(1) * dim + torch.arange(dim)
        jitter = self._gaussian(keys.reshape(-1), 9000 + feature).reshape(-1, dim) / dim ** 0.5
        return behaviour @ projection + noise * jitter * behaviour.norm(dim=1, keepdim=True).mean()

    # ---- sampling ------------------------------------------------------------------------------------
    def _generator(self, stream: int, index: int) -> torch.Generator:
        key = torch.tensor([stream * 1_000_000_007 + index])
        return torch.Generator().manual_seed(int(ops.mix_hash(key, 2**62, self.config.seed)))

    def sample_ids(self, batch_size: int, gen: torch.Generator) -> torch.Tensor:
        """[B, 26] int64 ids with per-feature truncated-Zipf popularity."""
        cols = []
        for f, n in enumerate(self.cardinalities):
            u = torch.rand(batch_size, generator=gen, dtype=torch.float64)
            s = float(self.exponents[f])
            if abs(s - 1.0) < 1e-6:
                rank = torch.exp(u * math.log(n + 1.0)) - 1.0
            else:
                rank = (1.0 + u * ((n + 1.0) ** (1.0 - s) - 1.0)) ** (1.0 / (1.0 - s)) - 1.0
            rank = rank.floor().clamp_(0, n - 1).to(torch.int64)
            cols.append((rank * self.perm_mult[f] + self.perm_shift[f]) % n)
        return torch.stack(cols, dim=1)

    def bayes_logits(self, ids: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """True logits of samples with ids [B, 26] and dense latent z [B]."""
        c = self.config
        logit = self.bias + c.dense_scale * z
        for f in range(ids.shape[1]):
            logit = logit + self.effect_weight[f] * self.id_effect(f, ids[:, f])
        if self.pairs:
            inter = torch.zeros_like(z)
            latents = {}
            for f, g in self.pairs:
                for h in (f, g):
                    if h not in latents:
                        latents[h] = self.id_latent(h, ids[:, h])
                inter = inter + (latents[f] * latents[g]).sum(1)
            logit = logit + c.interaction_scale * inter / math.sqrt(c.latent_dim * len(self.pairs))
        return logit

    def _sample(self, batch_size: int, gen: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        ids = self.sample_ids(batch_size, gen)
        z = torch.randn(batch_size, generator=gen)
        noise = torch.randn(batch_size, 13, generator=gen)
        rho = self.dense_rho
        latent = rho * z.unsqueeze(1) + torch.sqrt(1 - rho**2) * noise
        counts = torch.floor(torch.exp(self.dense_mu + self.dense_sigma * latent) - 1.0).clamp_(min=0)
        missing = torch.rand(batch_size, 13, generator=gen) < self.dense_missing
        dense = torch.log1p(counts.masked_fill(missing, 0.0))
        logits = self.bayes_logits(ids, z)
        labels = (torch.rand(batch_size, generator=gen) < torch.sigmoid(logits)).float()
        return dense, ids, labels, logits

    def _calibrate_bias(self) -> float:
        gen = torch.Generator().manual_seed(self.config.seed + 77)
        ids = self.sample_ids(20000, gen)
        z = torch.randn(20000, generator=gen)
        logits = self.bayes_logits(ids, z)
        lo, hi = -10.0, 10.0
        for _ in range(50):
            mid = (lo + hi) / 2
            if float(torch.sigmoid(logits + mid).mean()) < self.config.target_ctr:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    def batch(self, batch_size: int, index: int, stream: int = 0, with_logits: bool = False):
        """Batch ``index`` of ``stream`` (0 = train, 1 = eval by convention); reproducible."""
        dense, ids, labels, logits = self._sample(batch_size, self._generator(stream, index))
        batch = make_batch(dense, ids, labels)
        return (batch, logits) if with_logits else batch

    def batches(self, batch_size: int, num_batches: int, stream: int = 0, start: int = 0) -> Iterator[Batch]:
        """Stream ``num_batches`` batches of ``batch_size`` samples (never all held at once)."""
        for i in range(start, start + num_batches):
            yield self.batch(batch_size, i, stream)
