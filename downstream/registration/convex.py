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


def _box3_(x: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """3-tap box sums (edge-replicated) along `dims`, then / 3^len(dims); fewer passes than `smooth`."""
    for dim in dims:
        n = x.shape[dim]
        y = x.clone()
        y.narrow(dim, 1, n - 1).add_(x.narrow(dim, 0, n - 1))
        y.narrow(dim, 0, 1).add_(x.narrow(dim, 0, 1))
        y.narrow(dim, 0, n - 1).add_(x.narrow(dim, 1, n - 1))
        y.narrow(dim, n - 1, 1).add_(x.narrow(dim, n - 1, 1))
        x = y
    return x.div_(3.0 ** len(dims))


def cost_volume(fix: torch.Tensor, mov: torch.Tensor, disp_hw: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SSD cost `(N, K)` (N = d*h*w cells, K offsets) and offsets `(K, 3)` in cells, between
    pooled features `(1, C, d, h, w)` (the moving ones edge-replicated beyond the border),
    box-filtered over 3x3x3 cells and normalised to mean 1 so coupling weights are scale-free.

    |f - m|^2 = |f|^2 + |m|^2 - 2 f.m, and the products f.m of a row of cells with a row of
    moving cells are one batched matrix product per (i, j) offset; the k offsets are the
    product matrix's diagonals. About 6x less work than a difference per offset at C = 28.
    """
    r = disp_hw
    k = 2 * r + 1
    c = fix.shape[1]
    d, h, w = fix.shape[2:]
    wp = w + 2 * r
    movp = F.pad(mov, (r,) * 6, mode="replicate")[0]                 # (C, d+2r, h+2r, wp)
    f = fix[0].permute(1, 2, 3, 0).contiguous()                      # (d, h, w, C)
    f2 = f.pow(2).sum(-1, keepdim=True)                              # (d, h, w, 1)
    m2 = movp.pow(2).sum(0)                                          # (d+2r, h+2r, wp)
    # Per j offset a contiguous (d+2r, h, C, wp) copy, so every (i, j) slice is a plain batch.
    mt = [movp[:, :, b: b + h].permute(1, 2, 0, 3).contiguous() for b in range(k)]
    cost = torch.empty(k, k, d, h, w, k, dtype=fix.dtype, device=fix.device)
    for a in range(k):
        for b in range(k):
            prod = torch.matmul(f, mt[b][a: a + d])                   # (d, h, w, wp): f(x) . m(x')
            band = prod.as_strided((d, h, w, k), (prod.stride(0), prod.stride(1), wp + 1, 1))
            out = cost[a, b]
            torch.add(m2[a: a + d, b: b + h].unfold(-1, k, 1), band, alpha=-2.0, out=out)
            out.add_(f2).clamp_(min=0.0)  # rounding can make |f - m|^2 slightly negative
    del mt
    # Aggregate over a 3x3x3 cell neighbourhood (robustness), then cells-major for the arg-mins.
    cost = _box3_(cost, (2, 3, 4))
    scale = 1.0 / float(cost.mean().clamp(min=1e-12 * c))
    cost = cost.permute(2, 3, 4, 0, 1, 5).reshape(d * h * w, k**3).mul_(scale)
    offs = torch.stack(torch.meshgrid(*[torch.arange(-r, r + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    return cost, offs.to(fix.device, fix.dtype)


def coupled_convex(cost: torch.Tensor, offs: torch.Tensor, coupling: Sequence[float], shape: Sequence[int]) -> torch.Tensor:
    """The coupled arg-min displacement `(1, 3, d, h, w)` in cells for a cost `(N, K)`."""
    d, h, w = shape

    def field(idx: torch.Tensor) -> torch.Tensor:
        return smooth(offs[idx].T.reshape(1, 3, d, h, w), 1)

    soft = field(cost.argmin(1))
    # cost + lam |o - s|^2 = cost + lam |o|^2 - 2 lam o.s + const(s): one addmm with [s, 1] x [-2 lam o, lam |o|^2].
    onorm = offs.pow(2).sum(1, keepdim=True)
    ones = torch.ones(cost.shape[0], 1, dtype=cost.dtype, device=cost.device)
    total = torch.empty_like(cost)
    for lam in coupling:
        s = torch.cat([soft.reshape(3, -1).T, ones], 1)              # (N, 4)
        o = torch.cat([-2.0 * lam * offs, lam * onorm], 1)           # (K, 4)
        torch.addmm(cost, s, o.T, out=total)
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
