"""The warped-sphere foreground mask and its envelope shell.

The mask is `f(x) < 0` with the warped signed radius

    f(p) = |p + u(p) - c| - r,

where `u` is a smooth multi-scale random displacement: for each scale s (8, 16, 32 voxels
at 128, scaled with the side) a grid of spacing ~s of N(0, std_s^2) vectors, drawn from the
torch generator and upsampled trilinearly. The envelope is the band `-t_in <= f < t_out`
across the mask edge, about `t_in + t_out` voxels thick (|grad f| ~ 1), which replaces a
costly dilation and erosion (a 9x9x9 max-pool costs 0.7 s at 128^3). Like the reference's
dilation minus erosion, the default band lies on both sides of the edge (t_in = t_out):
the "skin" covers the outermost organs as well as wrapping them (records drawn before that
have t_in = 0, a shell just outside the mask).

Inside the mask, the voxels that no shape covers get a label of their own ("interior",
drawn per map) instead of background, as in the reference: a body's tissue between organs
is not the air around it, and without it a masked map is mostly background (0.88 of the
volume with the built-in bank) and the contrastive anchors mostly "background".

Cost: `f` is evaluated on a coarse grid (spacing ~4 voxels at 128; exact up to the
trilinear interpolation of an already smooth field) and upsampled to full resolution with
three separable linear passes, instead of 3-channel full-resolution warps.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .params import REF_SIDE, ForegroundParams
from ..workspace import TEMP_A, scratch

__all__ = ["warped_radius", "mask_with", "inside_box"]

_EVAL_SPACING = 4.0   # coarse evaluation spacing of f, voxels at 128


def _n_points(size: int, spacing: float) -> int:
    return int(min(size, max(2, round((size - 1) / max(spacing, 1.0)) + 1)))


def _upsample_axis(a: torch.Tensor, ax: int, size: int, reuse: bool = False) -> torch.Tensor:
    """Linear interpolation along `ax` from its n points (spanning [0, size-1]) to `size`.
    `reuse`: the last (dim 0) pass writes into a per-thread reused buffer."""
    n = a.shape[ax]
    if n == size:
        return a
    t = torch.arange(size, device=a.device, dtype=torch.float64) * ((n - 1) / max(size - 1, 1))
    i0 = t.floor().clamp_(max=n - 2).long()
    w = (t - i0).to(a.dtype)
    shape = [1, 1, 1]
    shape[ax] = size
    if reuse and ax == 0:
        # slab by slab from the broadcast source planes (the same elementwise lerp, so the same
        # bytes): no two full-size gathered volumes
        out = scratch(TEMP_A, (size,) + tuple(a.shape[1:]), a.dtype, a.device)
        starts = i0.tolist()
        z = 0
        while z < size:
            e = z + 1
            while e < size and starts[e] == starts[z]:
                e += 1
            j, k = starts[z], e - z
            torch.lerp(a[j].expand(k, *a.shape[1:]), a[j + 1].expand(k, *a.shape[1:]), w[z:e].view(k, 1, 1),
                       out=out[z:e])
            z = e
        return out
    a0 = a.index_select(ax, i0)
    a1 = a.index_select(ax, i0 + 1)
    return torch.lerp(a0, a1, w.view(shape), out=a0)


def warped_radius(fg: ForegroundParams, size: int, generator: torch.Generator, device: torch.device,
                  reuse: bool = False) -> torch.Tensor:
    """(size, size, size) float32 field f on `device`: < 0 inside the mask, ~ distance outside.

    The noise (~17k values at 128^3) is drawn on the generator's own device: pass a CPU
    generator to get the same mask whatever `device` renders (CUDA's Philox stream differs
    from the CPU's); the remaining float32 interpolation can differ between devices only in
    the last ulp, i.e. for voxels within ~1e-6 voxel of the mask surface. `reuse`: the
    result lives in a per-thread reused buffer (valid until the next call in this thread).
    """
    n = _n_points(size, _EVAL_SPACING * size / REF_SIDE)
    u = torch.zeros(3, n, n, n, dtype=torch.float32, device=device)
    for s, std in zip(fg.warp_scales, fg.warp_std):
        k = _n_points(size, s)
        # drawn where the generator lives: a CPU generator gives the same noise on every device
        g = torch.randn(1, 3, k, k, k, generator=generator, device=generator.device, dtype=torch.float32)
        g = g.to(device).mul_(float(std))
        u += F.interpolate(g, size=(n, n, n), mode="trilinear", align_corners=True)[0]
    p = torch.linspace(0.0, size - 1.0, n, device=device, dtype=torch.float32)
    c = torch.tensor(fg.centre, dtype=torch.float32, device=device)
    d2 = torch.zeros(n, n, n, dtype=torch.float32, device=device)
    for ax in range(3):
        shape = [1, 1, 1]
        shape[ax] = n
        d = u[ax] + (p - c[ax]).view(shape)
        d2 += d * d
    f = d2.sqrt_().sub_(float(fg.radius))
    for ax in (2, 1, 0):   # the largest pass last
        f = _upsample_axis(f, ax, size, reuse=reuse)
    return f


def inside_box(f: torch.Tensor, margin: int = 1) -> tuple[slice, slice, slice] | None:
    """Bounding box of `f < 0` grown by `margin` voxels (clipped), or None when empty.

    From minima of f (a slice holds a voxel < 0 iff its minimum is < 0): two float passes,
    ~10x cheaper than any() over a full bool volume."""
    D, H, W = f.shape
    plane = f.amin(0)                                    # (H, W): min over D
    mins = (f.reshape(D, -1).amin(1), plane.amin(1), plane.amin(0))
    box = []
    for ax, m in enumerate(mins):
        idx = (m < 0).nonzero()
        if idx.numel() == 0:
            return None
        lo, hi = int(idx[0]), int(idx[-1]) + 1
        box.append(slice(max(0, lo - margin), min(f.shape[ax], hi + margin)))
    return box[0], box[1], box[2]


def mask_with(labels: torch.Tensor, f: torch.Tensor, fg: ForegroundParams, envelope_id: int,
              interior_id: int | None = None) -> torch.Tensor:
    """Apply the foreground mask to `labels` in place and return it.

    With `t_in = fg.envelope_inner`, `t_out = fg.envelope_thickness` (the band only when
    `fg.envelope`, else t_in = t_out = 0): voxels with f >= t_out become 0; the band
    -t_in <= f < t_out becomes `envelope_id`; inside (f < -t_in) shapes keep their ids and,
    when `fg.interior`, the uncovered voxels (0) become `interior_id`.

    As integer arithmetic on the 0/1 bytes of the bool masks (labels * core + id * band ...):
    masked_fill_ with an irregular mask costs ~14 ms at 128^3, a uint8 product ~0.2 ms.
    """
    t_in = float(fg.envelope_inner) if fg.envelope else 0.0
    core = torch.lt(f, -t_in).view(torch.uint8)          # bool bytes are 0/1
    labels.mul_(core)
    if fg.interior:
        if interior_id is None:
            raise ValueError("the foreground mask draws an interior label: pass interior_id")
        # uncovered core voxels: core & (labels == 0) as bytes, times the id
        hole = torch.eq(labels, 0).view(torch.uint8).mul_(core)
        labels.add_(hole, alpha=interior_id)
    if fg.envelope:
        band = torch.lt(f, float(fg.envelope_thickness)).view(torch.uint8).sub_(core)   # core is a subset
        labels.add_(band, alpha=envelope_id)
    return labels
