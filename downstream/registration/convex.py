"""Coupled convex discrete optimisation (ConvexAdam's first stage) on a coarse grid.

Features are pooled into `grid_sp`-voxel cells; for every cell the SSD to the moving cells at
all integer offsets within +-`disp_hw` cells is computed (a cost volume), box-filtered, and
minimised with a coupling term that pulls each cell's displacement towards the smoothed field
of the previous round, with growing weights. Optionally the forward and backward fields are
made inverse-consistent.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .fields import smooth, warp_features

__all__ = ["cost_volume", "coupled_convex", "convex_stage"]


def cost_volume(fix: torch.Tensor, mov: torch.Tensor, disp_hw: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SSD cost `(N, K)` (N = d*h*w cells, K offsets) and offsets `(K, 3)` in cells, between
    pooled features `(1, C, d, h, w)`; normalised to mean 1 so coupling weights are scale-free."""
    r = disp_hw
    d, h, w = fix.shape[2:]
    movp = F.pad(mov, (r,) * 6, mode="replicate")[0]
    f0 = fix[0]
    offs = torch.stack(torch.meshgrid(*[torch.arange(-r, r + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    cost = torch.empty(len(offs), d, h, w, dtype=fix.dtype, device=fix.device)
    for n, (a, b, c) in enumerate(offs.tolist()):
        diff = f0 - movp[:, r + a: r + a + d, r + b: r + b + h, r + c: r + c + w]
        torch.sum(diff.square_(), 0, out=cost[n])  # in place: one temporary per offset
    cost /= f0.shape[0]
    # Aggregate over a 3x3x3 cell neighbourhood (robustness), then cells-major for the arg-mins.
    cost = smooth(cost[None], 1)[0]
    cost = cost.reshape(len(offs), -1).T.contiguous()
    return cost / cost.mean().clamp(min=1e-12), offs.to(fix.device, fix.dtype)


def coupled_convex(cost: torch.Tensor, offs: torch.Tensor, coupling: Sequence[float], shape: Sequence[int]) -> torch.Tensor:
    """The coupled arg-min displacement `(1, 3, d, h, w)` in cells for a cost `(N, K)`."""
    d, h, w = shape

    def field(idx: torch.Tensor) -> torch.Tensor:
        return smooth(offs[idx].T.reshape(1, 3, d, h, w), 1)

    soft = field(cost.argmin(1))
    onorm = offs.pow(2).sum(1)  # |o|^2; |o - s|^2 = |o|^2 - 2 o.s + |s|^2 and |s|^2 is constant in o
    for lam in coupling:
        s = soft.reshape(3, -1).T  # (N, 3)
        total = torch.addmm(cost + lam * onorm, s, offs.T, alpha=-2.0 * lam)
        soft = field(total.argmin(1))
    return soft


def _inverse_consistent(fwd: torch.Tensor, bwd: torch.Tensor, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    # ConvexAdam's symmetrisation: each field becomes half of itself minus the other pulled back.
    for _ in range(iters):
        f, b = fwd, bwd
        fwd = 0.5 * (f - warp_features(b, f, 1))
        bwd = 0.5 * (b - warp_features(f, b, 1))
    return fwd, bwd


def convex_stage(fp: torch.Tensor, mp: torch.Tensor, grid_sp: int, disp_hw: int, coupling: Sequence[float],
                 inverse_consistent: bool = True, ic_iters: int = 10) -> torch.Tensor:
    """Coarse displacement `(1, 3, d, h, w)` in full-resolution voxels on the `grid_sp` grid.

    `fp`, `mp`: `(1, C, d, h, w)` features already pooled into `grid_sp`-voxel cells.
    """
    shape = fp.shape[2:]
    cost, offs = cost_volume(fp, mp, disp_hw)
    fwd = coupled_convex(cost, offs, coupling, shape)
    del cost
    if inverse_consistent:
        cost_b, _ = cost_volume(mp, fp, disp_hw)
        bwd = coupled_convex(cost_b, offs, coupling, shape)
        del cost_b
        fwd, _ = _inverse_consistent(fwd, bwd, ic_iters)
    return fwd * grid_sp
