"""Multi-scale multiplicative texture: image * (1 + amplitude * noise).

noise is a sum over scales (grid spacings 4/8/16/32 voxels at a 128 side, scaled with the
volume and clamped to >= 1 voxel) of coarse Gaussian grids with std U(texture_std) per scale.
The grids are summed coarse to fine, each partial sum trilinearly upsampled onto the next
grid, so only the finest grid is upsampled to the full volume (one full-size interpolation
instead of one per scale). Up-sampling uses align_corners=True: the grids span the volume
from border voxel to border voxel, so smooth fields multiplied in on the finest grid (the
bias field) are interpolated, never extrapolated.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from ._ops import resize_linear, scaled_length
from .config import AppearanceConfig
from .params import TextureParams

__all__ = ["sample_texture", "texture_field"]


def sample_texture(cfg: AppearanceConfig, rng: np.random.Generator) -> TextureParams:
    """Per-scale stds and the amplitude (always applied)."""
    stds = rng.uniform(cfg.texture_std[0], cfg.texture_std[1], len(cfg.texture_scales))
    return TextureParams(
        scales=tuple(int(s) for s in cfg.texture_scales),
        stds=tuple(float(v) for v in stds),
        amplitude=float(cfg.texture_amplitude),
    )


def _grid_shape(shape: tuple[int, ...], scale: int) -> tuple[int, int, int]:
    return tuple(max(2, math.ceil(n / scaled_length(scale, n))) for n in shape)  # type: ignore[return-value]


def texture_field(shape: tuple[int, int, int], params: TextureParams, generator: torch.Generator,
                  device: torch.device,
                  coarse_factor: Callable[[tuple[int, int, int]], torch.Tensor] | None = None,
                  out: torch.Tensor | None = None, mul_into: torch.Tensor | None = None) -> torch.Tensor:
    """The float32 (D, H, W) factor 1 + amplitude * noise (written into `out` when given, or
    multiplied into `mul_into` in place, which is returned).

    `coarse_factor(grid_shape)`, when given, returns another smooth multiplicative field on the
    finest grid; it is multiplied in before the one full-size up-sampling (the pipeline fuses
    the bias field this way: one full-size pass instead of three).
    """
    order = sorted(zip(params.scales, params.stds), key=lambda t: -t[0])  # coarse first
    acc: torch.Tensor | None = None
    for scale, std in order:
        gshape = _grid_shape(shape, scale)
        grid = torch.randn(gshape, generator=generator, device=device, dtype=torch.float32) * std
        if acc is not None:
            grid = grid + resize_linear(acc, gshape, align_corners=True)
        acc = grid
    assert acc is not None
    coarse = acc.mul_(params.amplitude).add_(1.0)
    if coarse_factor is not None:
        coarse = coarse * coarse_factor(tuple(coarse.shape))  # type: ignore[arg-type]
    return resize_linear(coarse, tuple(shape), align_corners=True, out=out, mul_into=mul_into)  # type: ignore[arg-type]
