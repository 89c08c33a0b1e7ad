"""Displacement-grid helpers. Fields are `(1, 3, d, h, w)` tensors in FULL-resolution voxel
units, components along (i, j, k); a grid of step `s` has its point `v` at voxel `v*s + (s-1)/2`.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..grid import sample_voxels, voxel_grid

__all__ = ["pool", "resample_field", "warp_features", "smooth", "compose"]


def pool(x: torch.Tensor, step: int) -> torch.Tensor:
    """Average-pool `(B, C, D, H, W)` by `step` (shape a multiple of `step`).

    A reshape-mean: exact for non-overlapping windows and much faster than CPU avg_pool3d.
    """
    if step == 1:
        return x
    b, c, d, h, w = x.shape
    return x.reshape(b, c, d // step, step, h // step, step, w // step, step).mean(dim=(3, 5, 7))


def resample_field(field: torch.Tensor, src_step: int, dst_shape: Sequence[int], dst_step: int) -> torch.Tensor:
    """A field on a grid of step `src_step` resampled (trilinear, border) to a grid of step `dst_step`."""
    g = voxel_grid(dst_shape, field.device)
    pos = (g * dst_step + (dst_step - 1) / 2.0 - (src_step - 1) / 2.0) / src_step
    return sample_voxels(field, pos[None], "linear", padding="border")


def warp_features(feats: torch.Tensor, field: torch.Tensor, step: int) -> torch.Tensor:
    """Pull `feats` `(1, C, d, h, w)` (a grid of step `step`) through `field` (same grid, voxels)."""
    g = voxel_grid(feats.shape[2:], feats.device)
    return sample_voxels(feats, (g + field[0].permute(1, 2, 3, 0) / step)[None], "linear", padding="border")


def smooth(field: torch.Tensor, passes: int) -> torch.Tensor:
    """`passes` 3x3x3 box filters (edge-replicated), applied separably (9 taps, not 27)."""
    for _ in range(passes):
        for dim in (2, 3, 4):
            n = field.shape[dim]
            # Shifted sums with edge replication (CPU avg_pool3d is several times slower).
            lo = torch.cat([field.narrow(dim, 0, 1), field.narrow(dim, 0, n - 1)], dim)
            hi = torch.cat([field.narrow(dim, 1, n - 1), field.narrow(dim, n - 1, 1)], dim)
            field = (lo + field + hi) / 3.0
    return field


def compose(outer: torch.Tensor, inner: torch.Tensor, step: int) -> torch.Tensor:
    """The field of `x -> x + inner(x) + outer(x + inner(x))` on one grid (scaling and squaring)."""
    return inner + warp_features(outer, inner, step)
