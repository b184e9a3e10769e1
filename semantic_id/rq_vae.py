"""RQ-VAE: an MLP autoencoder whose latent is residual-quantized into ``L`` codes of ``K`` (TIGER / Meta semantic IDs).

Shapes: content ``x [n, D]`` -> (standardised) -> encoder MLP -> ``z [n, d]``; ``r_1 = z``;
``c_l = argmin_k ||V_l[k] - r_l||`` with codebooks ``V [L, K, d]``; ``r_{l+1} = r_l - V_l[c_l]``;
``z_q = sum_l V_l[c_l]``; decoder MLP(``z_q``) -> ``x_hat [n, D]``. Codes are ``[n, L]`` int64.

Loss (per batch): ``||x - x_hat||^2 + sum_l [ beta ||r_l - sg(V_l[c_l])||^2 + ||sg(r_l) - V_l[c_l]||^2 ]`` with
``beta = 0.25`` by default (Meta used 0.5), squared errors averaged over elements. The decoder sees
``z + sg(z_q - z)`` (straight-through estimator), so reconstruction gradients reach the encoder.

Training details that keep all codes alive:
* a short plain-autoencoder warm-up, then k-means initialisation of each level's codebook on the residuals of
  (a sample of) the encoder outputs;
* dead-code reset: after every epoch, a code that no item picked in that epoch is moved to a random residual
  of the last batch at its level;
* codebook usage per level, the share of distinct full codes and reconstruction MSE are logged each epoch
  (``self.history``) and shown on a tqdm progress bar.
Inputs are standardised with the training mean / overall std (buffers), so the scale of the user's
embeddings (e.g. unit-norm sentence embeddings) does not matter; ``reconstruction_error`` is in input units.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from semantic_id.kmeans import kmeans, nearest


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: List[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class RQVAE(nn.Module):
    """Residual-quantized VAE over content embeddings of ``input_dim`` floats.

    Args:
        input_dim: D, width of the content embeddings.
        levels / codebook_size: L codebooks of K codes each.
        latent_dim: d, width of the quantized latent.
        hidden_dims: encoder hidden widths (the decoder mirrors them).
        beta: weight of the commitment term ``||r_l - sg(v)||^2``.
        seed: seeds parameter init, k-means init, batching and dead-code resets.
    """

    method = "rqvae"

    def __init__(self, input_dim: int, levels: int, codebook_size: int, latent_dim: int = 32,
                 hidden_dims: Sequence[int] = (256, 128), beta: float = 0.25, seed: int = 0) -> None:
        super().__init__()
        if input_dim < 1 or levels < 1 or codebook_size < 1 or latent_dim < 1:
            raise ValueError("input_dim, levels, codebook_size and latent_dim must be >= 1")
        self.input_dim = int(input_dim)
        self.levels = int(levels)
        self.codebook_size = int(codebook_size)
        self.latent_dim = int(latent_dim)
        self.hidden_dims = tuple(int(h) for h in hidden_dims)
        self.beta = float(beta)
        self.seed = int(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.encoder = _mlp([self.input_dim, *self.hidden_dims, self.latent_dim])
            self.decoder = _mlp([self.latent_dim, *reversed(self.hidden_dims), self.input_dim])
            self.codebooks = nn.Parameter(torch.randn(self.levels, self.codebook_size, self.latent_dim) * 0.1)
        self.register_buffer("input_mean", torch.zeros(self.input_dim))
        self.register_buffer("input_scale", torch.ones(()))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.history: List[Dict[str, float]] = []

    def config(self) -> Dict[str, Any]:
        """Constructor arguments, for ``save_quantizer``/``load_quantizer``."""
        return dict(input_dim=self.input_dim, levels=self.levels, codebook_size=self.codebook_size,
                    latent_dim=self.latent_dim, hidden_dims=list(self.hidden_dims), beta=self.beta, seed=self.seed)

    # ------------------------------------------------------------------------------------------------ core
    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"expected content embeddings [n, {self.input_dim}], got {tuple(x.shape)}")
        x = x.detach().float().to(self.codebooks.device)
        return (x - self.input_mean) / self.input_scale

    def quantize(self, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, List[torch.Tensor]]:
        """Residual quantization of ``z [n, d]``: (``z_q [n, d]``, codes ``[n, L]``, vq loss, residuals per level)."""
        residual = z
        z_q = torch.zeros_like(z)
        codes = []
        residuals = []
        vq_loss = z.new_zeros(())
        for level in range(self.levels):
            book = self.codebooks[level]
            index, _ = nearest(residual.detach(), book.detach())
            chosen = book[index]
            residuals.append(residual.detach())
            commitment = F.mse_loss(residual, chosen.detach())      # moves the encoder towards its code
            codebook = F.mse_loss(residual.detach(), chosen)         # moves the code towards the residual
            vq_loss = vq_loss + self.beta * commitment + codebook
            z_q = z_q + chosen
            residual = residual - chosen.detach()
            codes.append(index)
        return z_q, torch.stack(codes, 1), vq_loss, residuals

    def forward(self, x_std: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Training pass on standardised inputs: reconstruction, codes and the loss terms."""
        z = self.encoder(x_std)
        z_q, codes, vq_loss, residuals = self.quantize(z)
        z_st = z + (z_q - z).detach()  # straight-through estimator
        x_hat = self.decoder(z_st)
        recon = F.mse_loss(x_hat, x_std)
        return dict(x_hat=x_hat, codes=codes, recon_loss=recon, vq_loss=vq_loss, loss=recon + vq_loss,
                    residuals=residuals)  # type: ignore[dict-item]

    # ------------------------------------------------------------------------------------------------ fit
    @torch.no_grad()
    def _kmeans_init(self, x_std: torch.Tensor, generator: torch.Generator, sample: int) -> None:
        if x_std.shape[0] > sample:
            x_std = x_std[torch.randperm(x_std.shape[0], generator=generator)[:sample].to(x_std.device)]
        residual = self.encoder(x_std)
        for level in range(self.levels):
            centroids = kmeans(residual, self.codebook_size, iters=20, seed=self.seed + level)
            self.codebooks.data[level] = centroids
            index, _ = nearest(residual, centroids)
            residual = residual - centroids[index]

    def fit(self, x: torch.Tensor, epochs: int = 30, batch_size: int = 512, lr: float = 2e-3,
            weight_decay: float = 0.0, warmup_epochs: int = 5, kmeans_init: bool = True,
            dead_code_reset: bool = True, init_sample: int = 20000, progress: bool = True) -> "RQVAE":
        """Train on content embeddings ``x [n, input_dim]``; per-epoch metrics go to ``self.history``.

        ``warmup_epochs`` first train the plain autoencoder (no quantization), so the k-means initialisation of the
        codebooks clusters a latent that already describes the items; then ``epochs`` of RQ-VAE training.
        """
        if x.dim() != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"expected content embeddings [n, {self.input_dim}], got {tuple(x.shape)}")
        x = x.detach().float().to(self.codebooks.device)
        with torch.no_grad():
            self.input_mean.copy_(x.mean(0))
            self.input_scale.fill_(float((x - self.input_mean).std().clamp_min(1e-8)))
        x_std = (x - self.input_mean) / self.input_scale
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            optimizer = torch.optim.Adam(self.parameters(), lr=lr, weight_decay=weight_decay)
            n = x_std.shape[0]
            self.train()
            for _ in range(warmup_epochs):
                order = torch.randperm(n, generator=generator).to(x_std.device)
                for start in range(0, n, batch_size):
                    batch = x_std[order[start : start + batch_size]]
                    loss = F.mse_loss(self.decoder(self.encoder(batch)), batch)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
            if kmeans_init:
                self._kmeans_init(x_std, generator, init_sample)
            optimizer = torch.optim.Adam(self.parameters(), lr=lr, weight_decay=weight_decay)
            bar = tqdm(total=epochs, desc=f"rq-vae L={self.levels} K={self.codebook_size}", disable=not progress,
                       leave=False)
            self.train()
            for epoch in range(epochs):
                order = torch.randperm(n, generator=generator).to(x_std.device)
                counts = torch.zeros(self.levels, self.codebook_size, dtype=torch.int64, device=x_std.device)
                sums = {"loss": 0.0, "recon": 0.0, "vq": 0.0}
                batches = 0
                last: Optional[Dict[str, Any]] = None
                for start in range(0, n, batch_size):
                    out = self(x_std[order[start : start + batch_size]])
                    optimizer.zero_grad(set_to_none=True)
                    out["loss"].backward()
                    optimizer.step()
                    for level in range(self.levels):
                        counts[level] += torch.bincount(out["codes"][:, level], minlength=self.codebook_size)
                    sums["loss"] += out["loss"].item()
                    sums["recon"] += out["recon_loss"].item()
                    sums["vq"] += out["vq_loss"].item()
                    batches += 1
                    last = out
                usage = (counts > 0).float().mean(1)
                resets = 0
                if dead_code_reset and last is not None and epoch < epochs - 1:
                    resets = self._reset_dead_codes(counts, last["residuals"], generator)
                record = {"epoch": float(epoch), "loss": sums["loss"] / batches, "recon_mse": sums["recon"] / batches,
                          "vq_loss": sums["vq"] / batches, "dead_codes_reset": float(resets)}
                record.update({f"usage_l{level}": float(usage[level]) for level in range(self.levels)})
                self.history.append(record)
                bar.set_postfix(recon=f"{record['recon_mse']:.4f}",
                                usage="/".join(f"{float(u):.2f}" for u in usage), refresh=False)
                bar.update(1)
            bar.close()
            self.eval()
        with torch.no_grad():
            self.fitted.fill_(True)
        return self

    @torch.no_grad()
    def _reset_dead_codes(self, counts: torch.Tensor, residuals: List[torch.Tensor], generator: torch.Generator) -> int:
        resets = 0
        for level in range(self.levels):
            dead = (counts[level] == 0).nonzero().flatten()
            if dead.numel() == 0:
                continue
            pool = residuals[level]
            picks = torch.randint(pool.shape[0], (dead.numel(),), generator=generator).to(pool.device)
            self.codebooks.data[level, dead] = pool[picks]
            resets += int(dead.numel())
        return resets

    # ------------------------------------------------------------------------------------------------ inference
    @torch.no_grad()
    def encode(self, x: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
        """Codes ``[n, levels]`` (int64) of content embeddings ``x [n, input_dim]`` (deterministic, eval mode)."""
        if not bool(self.fitted):
            raise RuntimeError("RQVAE.encode before fit (or load a fitted quantizer)")
        was_training = self.training
        self.eval()
        x_std = self._prepare(x)
        parts = [self.quantize(self.encoder(x_std[s : s + chunk]))[1] for s in range(0, x_std.shape[0], chunk)]
        self.train(was_training)
        if not parts:
            return torch.empty(0, self.levels, dtype=torch.int64)
        return torch.cat(parts)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``[n, input_dim]`` in input units from codes ``[n, levels]``."""
        z_q = torch.zeros(codes.shape[0], self.latent_dim, device=self.codebooks.device)
        for level in range(min(self.levels, codes.shape[1])):
            z_q += self.codebooks[level][codes[:, level].to(self.codebooks.device)]
        return self.decoder(z_q) * self.input_scale + self.input_mean

    @torch.no_grad()
    def reconstruction_error(self, x: torch.Tensor, codes: Optional[torch.Tensor] = None) -> float:
        """Mean squared error per element of ``decode(encode(x))`` against ``x`` (input units)."""
        x = x.detach().float().to(self.codebooks.device)
        codes = self.encode(x) if codes is None else codes
        return float((self.decode(codes) - x).pow(2).mean())
