"""Instance optimisation (ConvexAdam's second stage) and the affine stage, both with Adam."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .fields import compose, smooth
from ..grid import sample_voxels, voxel_grid

__all__ = ["adam_stage", "affine_stage", "principal_channels", "integrate_velocity"]


def integrate_velocity(v: torch.Tensor, squarings: int) -> torch.Tensor:
    """exp(v) by scaling and squaring: the displacement `(1, 3, d, h, w)` of the flow of the
    stationary velocity `v` (grid-point units) after unit time. Each step composes the field
    with itself, so the map stays invertible while `v / 2**squarings` is small."""
    u = v / float(2**squarings)
    for _ in range(squarings):
        u = compose(u, u, 1)
    return u


def _masked_mse(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    err = (a - b).pow(2).mean(1, keepdim=True)
    if weight is None:
        return err.mean()
    return (err * weight).sum() / weight.sum().clamp(min=1.0)


def principal_channels(fix: torch.Tensor, mov: torch.Tensor, energy: float) -> tuple[torch.Tensor, torch.Tensor]:
    """`fix`, `mov` `(1, C, ...)` projected on the fewest principal directions (of both, about
    their joint mean) that keep `energy` of the variance, scaled by sqrt(k / C) so a mean over
    the k channels of a squared difference equals the sum over C channels / C less the dropped
    part. Trilinear sampling commutes with the projection, so warping projected features is
    exact; only the dropped variance is lost. `energy >= 1`: unchanged."""
    c = fix.shape[1]
    if energy >= 1.0 or c <= 3:
        return fix, mov
    x = torch.cat([fix.reshape(c, -1), mov.reshape(c, -1)], 1).double()
    x = x - x.mean(1, keepdim=True)
    evals, evecs = torch.linalg.eigh(x @ x.T)                      # ascending
    evals, evecs = evals.flip(0).clamp(min=0), evecs.flip(1)
    frac = torch.cumsum(evals, 0) / evals.sum().clamp(min=1e-30)
    k = int((frac < energy).sum()) + 1
    if k >= c:
        return fix, mov
    w = (evecs[:, :k] * math.sqrt(k / c)).T.to(fix.dtype)          # (k, C)

    def proj(t: torch.Tensor) -> torch.Tensor:
        return (w @ t.reshape(c, -1)).reshape(1, k, *t.shape[2:])

    return proj(fix), proj(mov)


def adam_stage(fix: torch.Tensor, mov: torch.Tensor, init: torch.Tensor, level: int, iters: int, lr: float,
               lambda_reg: float, smooth_passes: int, weight: torch.Tensor | None = None,
               energy: float = 1.0, squarings: int | None = None) -> torch.Tensor:
    """Refine a displacement grid by Adam on feature MSE + `lambda_reg` * diffusion.

    `fix`, `mov`: `(1, C, d, h, w)` features pooled by `level`; `init`: `(1, 3, d, h, w)` in
    full-resolution voxels; `weight` `(1, 1, d, h, w)`: optional ROI weights of the similarity;
    `energy` < 1: the features are first reduced by `principal_channels`. `squarings` (not
    None): the parameter is a stationary velocity field and the displacement its
    `integrate_velocity` (diffeomorphic; the regulariser acts on the displacement).
    The parameter lives in grid-point units (voxels / `level`); the returned field (smoothed
    as used in the loss) is in full-resolution voxels: the displacement, or with `squarings`
    the velocity (integrate it with `integrate_velocity` on the grid it is wanted on).
    """
    # Fewer channels: grid_sample's cost is proportional to them (the stage's main cost).
    fix, mov = principal_channels(fix, mov, energy)
    # Both channels-last, once: grid_sample is faster so, and the difference then needs no relayout.
    mov = mov.contiguous(memory_format=torch.channels_last_3d)
    fix = fix.contiguous(memory_format=torch.channels_last_3d)
    disp = torch.nn.Parameter((init / level).clone())
    opt = torch.optim.Adam([disp], lr=lr)
    grid = voxel_grid(fix.shape[2:], fix.device)[None]
    for _ in range(iters):
        opt.zero_grad(set_to_none=True)
        u = _field(disp, smooth_passes, squarings)
        reg = sum(torch.diff(u, dim=d).pow(2).mean() for d in (2, 3, 4))
        warped = sample_voxels(mov, grid + u[0].permute(1, 2, 3, 0)[None], "linear", padding="border")
        loss = _masked_mse(warped, fix, weight) + lambda_reg * reg
        loss.backward()
        opt.step()
    with torch.no_grad():
        if squarings is not None:  # the velocity: the caller integrates it at full resolution
            return smooth(disp, smooth_passes) * level
        return _field(disp, smooth_passes, squarings) * level


def _field(p: torch.Tensor, smooth_passes: int, squarings: int | None) -> torch.Tensor:
    u = smooth(p, smooth_passes)
    return u if squarings is None else integrate_velocity(u, squarings)


def affine_stage(fix: torch.Tensor, mov: torch.Tensor, level: int, iters: int, lr: float,
                 weight: torch.Tensor | None = None) -> torch.Tensor:
    """A 4x4 voxel map (fixed voxel -> fixed voxel) that aligns pooled `mov` to `fix` by Adam.

    `fix`, `mov`: `(1, C, d, h, w)` features pooled by `level` from full grids. The 12
    parameters act on centred, radius-normalised coordinates so all have comparable scale.
    """
    shape = torch.tensor(fix.shape[2:], dtype=torch.float32)
    centre = (shape - 1) / 2.0
    radius = float(shape.max()) / 2.0
    grid = voxel_grid(fix.shape[2:], fix.device)
    p = (grid - centre) / radius
    mov = mov.contiguous(memory_format=torch.channels_last_3d)
    fix = fix.contiguous(memory_format=torch.channels_last_3d)
    theta = torch.nn.Parameter(torch.zeros(3, 4))
    opt = torch.optim.Adam([theta], lr=lr)
    for _ in range(iters):
        opt.zero_grad(set_to_none=True)
        q = p @ (torch.eye(3) + theta[:, :3]).T + theta[:, 3]
        warped = sample_voxels(mov, (q * radius + centre)[None], "linear", padding="border")
        loss = _masked_mse(warped, fix, weight)
        loss.backward()
        opt.step()
    with torch.no_grad():
        a = torch.eye(3) + theta[:, :3]
        t = theta[:, 3] * radius
        # In pooled grid-point units: x' = c + a (x - c) + t; then to full-resolution voxels,
        # where grid point v sits at v*level + (level-1)/2.
        lvl = torch.eye(4, dtype=torch.float64)
        lvl[:3, :3] *= level
        lvl[:3, 3] = (level - 1) / 2.0
        m = torch.eye(4, dtype=torch.float64)
        m[:3, :3] = a.double()
        m[:3, 3] = (centre - a @ centre + t).double()
        return lvl @ m @ torch.linalg.inv(lvl)
