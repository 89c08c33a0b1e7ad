"""Smooth multiplicative bias field: exp of a degree-3 Legendre polynomial (MONAI's form).

Coefficients U(-bias_max, bias_max) for every term P_i(x) P_j(y) P_k(z) with i + j + k <= 3
on coordinates in [-1, 1]; the field is evaluated separably (three small contractions),
never voxel by voxel.
"""
from __future__ import annotations


import numpy as np
import torch

from .config import AppearanceConfig
from .params import BiasParams

__all__ = ["sample_bias_field", "bias_field", "DEGREE"]

DEGREE = 3


def _terms() -> list[tuple[int, int, int]]:
    return [(i, j, k) for i in range(DEGREE + 1) for j in range(DEGREE + 1 - i) for k in range(DEGREE + 1 - i - j)]


def sample_bias_field(cfg: AppearanceConfig, rng: np.random.Generator) -> BiasParams | None:
    """20 polynomial coefficients, or None when the coin (p = bias_p) says skip."""
    if not rng.random() < cfg.bias_p:
        return None
    coeffs = rng.uniform(-cfg.bias_max, cfg.bias_max, len(_terms()))
    return BiasParams(coeffs=tuple(float(c) for c in coeffs))


def _legendre(grid: int, device: torch.device) -> torch.Tensor:
    """(DEGREE + 1, grid) float64: P_0..P_3 at `grid` nodes spread from -1 (the first voxel) to
    1 (the last voxel), i.e. the nodes of an align_corners=True up-sampling onto the volume."""
    x = torch.linspace(-1.0, 1.0, grid, dtype=torch.float64, device=device)
    return torch.stack([torch.ones_like(x), x, 0.5 * (3 * x**2 - 1), 0.5 * (5 * x**3 - 3 * x)])


def bias_field(shape: tuple[int, int, int], params: BiasParams, device: torch.device,
               grid: tuple[int, int, int] | None = None) -> torch.Tensor:
    """The float32 multiplicative field exp(sum c_ijk P_i P_j P_k) on the (D, H, W) voxels, or on a
    coarser `grid` whose nodes sit where trilinear up-sampling with align_corners=True puts them
    (first and last nodes on the border voxels, so no extrapolation)."""
    grid = grid or shape
    coeffs = np.zeros((DEGREE + 1,) * 3)
    for (i, j, k), v in zip(_terms(), params.coeffs):
        coeffs[i, j, k] = v
    c = torch.from_numpy(coeffs).to(device)  # one small copy, not 20 device writes
    px, py, pz = (_legendre(g, device) for g in grid)
    # contract the small axes first: (i,j,k)x(k,W) -> (i,j,W) -> (i,H,W); the last,
    # full-size contraction is four explicit multiply-adds (a BLAS product could sum in a
    # thread-count-dependent order and break identical bytes).
    t = torch.einsum("ijk,kw->ijw", c, pz)
    t = torch.einsum("ijw,jh->ihw", t, py).float()
    px = px.float()
    log_field = px[0, :, None, None] * t[0]
    for i in range(1, DEGREE + 1):
        log_field.addcmul_(px[i, :, None, None], t[i])
    return log_field.exp_()
