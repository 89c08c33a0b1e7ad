"""Low-resolution simulation: down-sample by a factor (nearest-exact), up-sample back (trilinear).

`nearest-exact` picks the voxel whose centre is nearest; plain `nearest` shifts the content
by half a voxel.
"""
from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F

from ._ops import resize_linear
from .config import AppearanceConfig
from .params import LowresParams

__all__ = ["sample_lowres", "apply_lowres"]


def sample_lowres(cfg: AppearanceConfig, rng: np.random.Generator) -> LowresParams | None:
    """An isotropic down-sampling factor U(lowres_factor), or None (p = 1 - lowres_p)."""
    if not rng.random() < cfg.lowres_p:
        return None
    return LowresParams(factor=float(rng.uniform(cfg.lowres_factor[0], cfg.lowres_factor[1])))


def apply_lowres(volume: torch.Tensor, params: LowresParams | None, generator: torch.Generator | None = None,
                 inplace: bool = False) -> torch.Tensor:
    """Down to round(n / factor) voxels per axis (>= 1), back up to n; factor 1 is the identity.
    `inplace` writes the result into the volume's memory."""
    if params is None:
        return volume
    shape = tuple(volume.shape)
    low = tuple(max(1, int(round(n / params.factor))) for n in shape)
    if low == shape:
        return volume
    x = F.interpolate(volume[None, None], size=low, mode="nearest-exact")
    return resize_linear(x[0, 0], shape, align_corners=False, out=volume if inplace else None)  # type: ignore[arg-type]
