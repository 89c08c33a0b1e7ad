"""Additive Gaussian noise with std U(noise_std) on the [0, 1] scale."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .config import AppearanceConfig

__all__ = ["sample_noise", "apply_noise"]


def sample_noise(cfg: AppearanceConfig, rng: np.random.Generator) -> dict[str, Any] | None:
    """The noise std, or None (p = 1 - noise_p)."""
    if not rng.random() < cfg.noise_p:
        return None
    return {"std": float(rng.uniform(cfg.noise_std[0], cfg.noise_std[1]))}


def apply_noise(volume: torch.Tensor, params: dict[str, Any] | None, generator: torch.Generator) -> torch.Tensor:
    """volume + std * N(0, 1) (one normal per voxel from `generator`); None or std 0 is the identity."""
    if params is None or params["std"] == 0:
        return volume
    noise = torch.randn(volume.shape, generator=generator, device=volume.device, dtype=volume.dtype)
    return torch.add(volume, noise, alpha=params["std"])
