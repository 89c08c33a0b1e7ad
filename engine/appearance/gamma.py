"""Gamma (contrast) change: rescale to [0, 1], raise to gamma, map back to the input range."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .config import AppearanceConfig

__all__ = ["sample_gamma", "apply_gamma"]


def sample_gamma(cfg: AppearanceConfig, rng: np.random.Generator) -> dict[str, Any] | None:
    """gamma U(cfg.gamma) (MONAI's RandAdjustContrast), or None (p = 1 - gamma_p)."""
    if not rng.random() < cfg.gamma_p:
        return None
    return {"gamma": float(rng.uniform(cfg.gamma[0], cfg.gamma[1]))}


def apply_gamma(volume: torch.Tensor, params: dict[str, Any] | None, generator: torch.Generator | None = None) -> torch.Tensor:
    """((x - min) / (max - min)) ** gamma * (max - min) + min; None or gamma 1 is the identity."""
    if params is None or params["gamma"] == 1.0:
        return volume
    lo, hi = torch.aminmax(volume)
    span = (hi - lo).clamp(min=torch.finfo(volume.dtype).tiny)
    y = (volume - lo).div_(span).clamp_(0.0, 1.0)
    # y ** gamma as exp(gamma * log y) (log 0 = -inf -> 0): torch's CPU pow rounds differently in
    # its vectorised body and scalar tail, so its bytes would depend on the thread count.
    y.log_().mul_(params["gamma"]).exp_()
    return y.mul_(span).add_(lo)
