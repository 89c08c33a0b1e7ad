"""Gibbs ringing: keep only the k-space inside a sphere of radius (1 - alpha) * r_max.

r_max is the distance from the centre of k-space to its corner, so alpha = 0 keeps every
frequency (the identity; MONAI's GibbsNoise uses max(shape) * sqrt(2) / 2, which already cuts
the corners of a 3D spectrum at alpha = 0). alpha U(0, gibbs_alpha_max).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .config import AppearanceConfig
from .params import GibbsParams

__all__ = ["sample_gibbs", "gibbs_mask", "gibbs_factor", "is_neutral_gibbs"]


def sample_gibbs(cfg: AppearanceConfig, rng: np.random.Generator) -> GibbsParams | None:
    """alpha, or None (p = 1 - gibbs_p)."""
    if not rng.random() < cfg.gibbs_p:
        return None
    return GibbsParams(alpha=float(rng.uniform(0.0, cfg.gibbs_alpha_max)))


def is_neutral_gibbs(params: GibbsParams | None) -> bool:
    return params is None or params.alpha <= 0


def gibbs_mask(shape: tuple[int, int, int], freqs: list[torch.Tensor], params: GibbsParams) -> torch.Tensor:
    """Bool mask of the rfft spectrum of a `shape` volume: (D, H, W // 2 + 1) for 1D `freqs`,
    their broadcast shape for `freqs` already shaped to broadcast against each other."""
    r_max = math.sqrt(sum((n / 2.0) ** 2 for n in shape))
    radius = (1.0 - params.alpha) * r_max
    kd, kh, kw = ((f * n) ** 2 for f, n in zip(freqs, shape))
    if kd.dim() == 1:
        kd, kh, kw = kd[:, None, None], kh[None, :, None], kw[None, None, :]
    # float64 on the small 2D plane, then one float32 comparison over the spectrum
    plane = (kd + kh).to(torch.float32)
    return (plane + kw.to(torch.float32)) <= radius * radius


def gibbs_factor(shape: tuple[int, int, int], freqs: list[torch.Tensor], params: GibbsParams,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """`gibbs_mask` as float32 1/0 (written into `out` when given), by float arithmetic only:
    v = |k|^2 - r^2 in float32 (exactly 0 iff the two are equal), keep = min(1 - sign(v), 1).
    A bool comparison plus conversion costs several times more on the CPU."""
    r_max = math.sqrt(sum((n / 2.0) ** 2 for n in shape))
    radius = (1.0 - params.alpha) * r_max
    r2 = float(np.float32(radius * radius))   # the float32 value gibbs_mask compares against
    kd, kh, kw = ((f * n) ** 2 for f, n in zip(freqs, shape))
    if kd.dim() == 1:
        kd, kh, kw = kd[:, None, None], kh[None, :, None], kw[None, None, :]
    plane = (kd + kh).to(torch.float32)
    v = torch.add(plane, kw.to(torch.float32)) if out is None else torch.add(plane, kw.to(torch.float32), out=out)
    return v.sub_(r2).sign_().neg_().add_(1.0).clamp_(max=1.0)
