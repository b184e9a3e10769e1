"""RQ-KMeans: residual k-means, level by level, no encoder/decoder (fast, deterministic, a strong baseline).

For content embeddings ``x [n, D]`` and ``L`` levels of ``K`` codes: ``r_1 = x``; level ``l`` runs k-means on the
residuals ``r_l`` to get its codebook ``V_l [K, D]``; ``c_l = argmin_k ||V_l[k] - r_l||``; ``r_{l+1} = r_l - V_l[c_l]``.
Codes are ``[n, L]`` int64; ``decode(codes) = sum_l V_l[c_l]`` approximates ``x``. The codebooks are one buffer
``codebooks [L, K, D]`` so ``state_dict`` saves the quantizer and new items are quantized with the same codebooks.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import nn

from semantic_id.kmeans import kmeans, nearest


class RQKMeans(nn.Module):
    """Residual k-means quantizer with ``levels`` codebooks of ``codebook_size`` codes over ``input_dim`` floats."""

    method = "rqkmeans"

    def __init__(self, input_dim: int, levels: int, codebook_size: int, kmeans_iters: int = 25, seed: int = 0,
                 init_sample: int = 20000) -> None:
        super().__init__()
        if input_dim < 1 or levels < 1 or codebook_size < 1:
            raise ValueError(f"input_dim, levels, codebook_size must be >= 1, got {input_dim}, {levels}, "
                             f"{codebook_size}")
        self.input_dim = int(input_dim)
        self.levels = int(levels)
        self.codebook_size = int(codebook_size)
        self.kmeans_iters = int(kmeans_iters)
        self.seed = int(seed)
        self.init_sample = int(init_sample)
        self.register_buffer("codebooks", torch.zeros(self.levels, self.codebook_size, self.input_dim))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def config(self) -> Dict[str, Any]:
        """Constructor arguments, for ``save_quantizer``/``load_quantizer``."""
        return dict(input_dim=self.input_dim, levels=self.levels, codebook_size=self.codebook_size,
                    kmeans_iters=self.kmeans_iters, seed=self.seed, init_sample=self.init_sample)

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"expected content embeddings [n, {self.input_dim}], got {tuple(x.shape)}")
        return x.detach().float().to(self.codebooks.device)

    @torch.no_grad()
    def fit(self, x: torch.Tensor, verbose: bool = False) -> "RQKMeans":
        """Fit the codebooks level by level on ``x [n, input_dim]``; returns ``self``."""
        residual = self._check_input(x).clone()
        for level in range(self.levels):
            centroids = kmeans(residual, self.codebook_size, self.kmeans_iters, self.seed + level, self.init_sample)
            self.codebooks[level] = centroids
            index, _ = nearest(residual, centroids)
            residual -= centroids[index]
            if verbose:
                used = torch.unique(index).numel() / self.codebook_size
                print(f"rq-kmeans level {level}: usage {used:.1%}, residual mse {float(residual.pow(2).mean()):.4g}")
        self.fitted.fill_(True)
        return self

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes ``[n, levels]`` (int64) of ``x [n, input_dim]`` with the fitted codebooks."""
        if not bool(self.fitted):
            raise RuntimeError("RQKMeans.encode before fit (or load a fitted quantizer)")
        residual = self._check_input(x).clone()
        codes = torch.empty(residual.shape[0], self.levels, dtype=torch.int64, device=residual.device)
        for level in range(self.levels):
            index, _ = nearest(residual, self.codebooks[level])
            codes[:, level] = index
            residual -= self.codebooks[level][index]
        return codes

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``[n, input_dim]`` = sum over levels of the chosen code vectors."""
        out = torch.zeros(codes.shape[0], self.input_dim, device=self.codebooks.device)
        for level in range(min(self.levels, codes.shape[1])):
            out += self.codebooks[level][codes[:, level].to(self.codebooks.device)]
        return out

    @torch.no_grad()
    def reconstruction_error(self, x: torch.Tensor, codes: Optional[torch.Tensor] = None) -> float:
        """Mean squared error per element of ``decode(encode(x))`` against ``x``."""
        x = self._check_input(x)
        codes = self.encode(x) if codes is None else codes
        return float((self.decode(codes) - x).pow(2).mean())
