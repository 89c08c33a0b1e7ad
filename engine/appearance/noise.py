"""Additive Gaussian noise with std U(noise_std) on the [0, 1] scale."""
from __future__ import annotations


import numpy as np
import torch

from ..workspace import TEMP_A, scratch
from .config import AppearanceConfig
from .params import NoiseParams

__all__ = ["sample_noise", "apply_noise"]


def sample_noise(cfg: AppearanceConfig, rng: np.random.Generator) -> NoiseParams | None:
    """The noise std, or None (p = 1 - noise_p)."""
    if not rng.random() < cfg.noise_p:
        return None
    return NoiseParams(std=float(rng.uniform(cfg.noise_std[0], cfg.noise_std[1])))


def apply_noise(volume: torch.Tensor, params: NoiseParams | None, generator: torch.Generator,
                inplace: bool = False) -> torch.Tensor:
    """volume + std * N(0, 1) (one normal per voxel from `generator`); None or std 0 is the identity.
    `inplace` adds into the volume (the noise goes through a reused buffer)."""
    if params is None or params.std == 0:
        return volume
    if not inplace:
        noise = torch.randn(volume.shape, generator=generator, device=volume.device, dtype=volume.dtype)
        return torch.add(volume, noise, alpha=params.std)
    noise = scratch(TEMP_A, tuple(volume.shape), volume.dtype, volume.device)
    torch.randn(volume.shape, generator=generator, out=noise)
    return volume.add_(noise, alpha=params.std)
