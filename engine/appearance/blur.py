"""Gaussian blur with a small per-axis sigma U(0, blur_sigma_max) voxels.

Applied in the Fourier domain (see kspace.py) as the exact DFT of the voxel-integrated
Gaussian kernel, i.e. a circular convolution with that kernel; it shares one FFT with Gibbs
ringing, k-space spikes and sharpening.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._ops import gaussian_kernel_1d, kernel_transfer_1d
from .config import AppearanceConfig

__all__ = ["sample_blur", "apply_blur", "blur_transfer", "is_neutral_blur"]


def sample_blur(cfg: AppearanceConfig, rng: np.random.Generator) -> dict[str, Any] | None:
    """Per-axis sigmas (voxels), or None (p = 1 - blur_p)."""
    if not rng.random() < cfg.blur_p:
        return None
    return {"sigma": [float(s) for s in rng.uniform(0.0, cfg.blur_sigma_max, 3)]}


def is_neutral_blur(params: dict[str, Any] | None) -> bool:
    return params is None or all(s <= 0 for s in params["sigma"])


def blur_transfer(freqs: list[torch.Tensor], params: dict[str, Any]) -> list[torch.Tensor]:
    """Per-axis 1D transfer functions (float64) at the rfft frequencies `freqs`."""
    return [kernel_transfer_1d(gaussian_kernel_1d(s), f) for s, f in zip(params["sigma"], freqs)]


def apply_blur(volume: torch.Tensor, params: dict[str, Any] | None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Blur alone (one FFT round trip); None or zero sigmas are the identity."""
    from .kspace import apply_kspace

    return apply_kspace(volume, {"blur": params})
