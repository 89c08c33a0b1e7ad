"""Gaussian sharpening (MONAI's GaussianSharpen): b1 = G(sigma1) x, b2 = G(sigma2) b1,
out = b1 + alpha (b1 - b2); sigma1 U(sharpen_sigma1), sigma2 U(0.5, sigma1), alpha U(sharpen_alpha).

Applied in the Fourier domain as the transfer function G1 (1 + alpha (1 - G2)) (see kspace.py).
"""
from __future__ import annotations


import numpy as np
import torch

from ._ops import gaussian_kernel_1d, kernel_transfer_1d
from .config import AppearanceConfig
from .params import SharpenParams

__all__ = ["sample_sharpen", "sharpen_transfer", "is_neutral_sharpen"]


def sample_sharpen(cfg: AppearanceConfig, rng: np.random.Generator) -> SharpenParams | None:
    """sigma1, sigma2 (voxels) and alpha, or None (p = 1 - sharpen_p)."""
    if not rng.random() < cfg.sharpen_p:
        return None
    s1 = float(rng.uniform(cfg.sharpen_sigma1[0], cfg.sharpen_sigma1[1]))
    s2 = float(rng.uniform(min(0.5, s1), s1))
    return SharpenParams(sigma1=s1, sigma2=s2, alpha=float(rng.uniform(cfg.sharpen_alpha[0], cfg.sharpen_alpha[1])))


def is_neutral_sharpen(params: SharpenParams | None) -> bool:
    return params is None or (params.sigma1 <= 0 and params.alpha == 0)


def sharpen_transfer(freqs: list[torch.Tensor], params: SharpenParams, out: torch.Tensor | None = None,
                     tmp: torch.Tensor | None = None) -> torch.Tensor:
    """float32 transfer function G1 (1 + alpha (1 - G2)) = (1 + alpha) G1 - alpha G1 G2, both
    terms separable (two outer products). `freqs`: the per-axis frequencies, either 1D (the
    result is (len0, len1, len2)) or already shaped to broadcast against each other (the
    result takes their broadcast shape). `out` / `tmp` (that shape, float32), when given,
    hold the result and the second term (no allocation)."""
    g1 = [kernel_transfer_1d(gaussian_kernel_1d(params.sigma1), f) for f in freqs]
    g2 = [kernel_transfer_1d(gaussian_kernel_1d(params.sigma2), f) for f in freqs]
    a = params.alpha
    t1 = _outer([(1.0 + a) * g1[0], g1[1], g1[2]], out)
    t2 = _outer([a * g1[0] * g2[0], g1[1] * g2[1], g1[2] * g2[2]], tmp)
    return t1.sub_(t2)


def _outer(v: list[torch.Tensor], out: torch.Tensor | None = None) -> torch.Tensor:
    """float32 outer product (a * b) * c of three float64 vectors (1D, or shaped to broadcast)."""
    a, b, c = (t.to(torch.float32) for t in v)
    if a.dim() == 1:
        a, b, c = a[:, None, None], b[None, :, None], c[None, None, :]
    return torch.mul(a * b, c) if out is None else torch.mul(a * b, c, out=out)
