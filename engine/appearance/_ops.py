"""Small tensor helpers shared by the appearance steps (private)."""
from __future__ import annotations

import math

import torch

from ..workspace import TEMP_A, scratch

__all__ = ["scaled_length", "minmax_rescale", "gaussian_kernel_1d", "kernel_transfer_1d", "rfft_freqs", "rfft3", "irfft3", "resize_linear"]

#: the volume side at which lengths in the config are given
REFERENCE_SIDE = 128


def scaled_length(length: float, side: int) -> float:
    """A length given for a 128-voxel side, scaled to `side` and clamped to >= 1 voxel."""
    return max(1.0, float(length) * side / REFERENCE_SIDE)


def minmax_rescale(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """(x - min) / (max - min); a constant volume becomes zeros. `inplace` reuses x's memory.

    Uses only min and max (exact, thread-count independent), never a sum; divides (rather
    than multiplying by 1 / span) so that the maximum maps to exactly 1.
    """
    lo, hi = torch.aminmax(x)
    span = hi - lo
    # torch.where keeps it sync-free on GPU; a constant volume (span 0) gives (x - lo) / 1 = 0.
    span = torch.where(span > 0, span, torch.ones_like(span))
    return (x.sub_(lo) if inplace else x - lo).div_(span)


def gaussian_kernel_1d(sigma: float) -> list[float]:
    """Weights of a unit-sum Gaussian kernel integrated over each voxel (MONAI's 'erf' form).

    Radius ceil(3 sigma) (at least 1); sigma <= 0 gives the identity kernel [1].
    """
    if sigma <= 0:
        return [1.0]
    radius = max(1, int(math.ceil(3.0 * sigma)))
    s2 = sigma * math.sqrt(2.0)
    w = [0.5 * (math.erf((k + 0.5) / s2) - math.erf((k - 0.5) / s2)) for k in range(-radius, radius + 1)]
    total = sum(w)
    return [v / total for v in w]


def kernel_transfer_1d(weights: list[float], freqs: torch.Tensor) -> torch.Tensor:
    """DFT of a symmetric odd-length kernel at `freqs` (cycles per voxel): w0 + 2 sum w_k cos(2 pi k f).

    Multiplying a spectrum by it equals a circular convolution with the kernel.
    """
    r = len(weights) // 2
    out = torch.full_like(freqs, weights[r])
    for k in range(1, r + 1):
        out = out + 2.0 * weights[r + k] * torch.cos(2.0 * math.pi * k * freqs)
    return out


def rfft_freqs(shape: tuple[int, int, int], device: torch.device) -> list[torch.Tensor]:
    """Per-axis frequencies (cycles per voxel, float64) of `torch.fft.rfftn` of a (D, H, W) volume."""
    d, h, w = shape
    return [
        torch.fft.fftfreq(d, device=device, dtype=torch.float64),
        torch.fft.fftfreq(h, device=device, dtype=torch.float64),
        torch.fft.rfftfreq(w, device=device, dtype=torch.float64),
    ]


def rfft3(x: torch.Tensor) -> torch.Tensor:
    """rfftn of a (D, H, W) volume as a batch of 2D transforms over (H, W), then 1D over D.

    Batched transforms give the same bytes with any thread count (threads split the batch);
    torch's single 3D CPU transform (MKL) does not, which would break "identical bytes with
    1 or 2 threads". About as fast as rfftn.
    """
    return torch.fft.fft(torch.fft.rfft2(x), dim=0)


def irfft3(spectrum: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Inverse of rfft3 for a volume of `shape` (batched passes, see rfft3)."""
    return torch.fft.irfft2(torch.fft.ifft(spectrum, dim=0), s=tuple(shape[1:]))



def _linear_taps(n_in: int, n_out: int, align_corners: bool, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices i0, i1 and weights of i1 for 1D linear resampling n_in -> n_out, with
    F.interpolate's conventions (align_corners=False: half-voxel centres, clamped at borders)."""
    if align_corners:
        pos = torch.arange(n_out, dtype=torch.float64, device=device) * ((n_in - 1) / max(n_out - 1, 1))
    else:
        pos = ((torch.arange(n_out, dtype=torch.float64, device=device) + 0.5) * (n_in / n_out) - 0.5).clamp(min=0.0)
    i0 = pos.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    return i0, i1, (pos - i0.to(torch.float64)).to(torch.float32)


#: output elements from which a resize pass along a non-contiguous axis goes slab by slab
#: (along the contiguous last axis, slabs are thin strided writes: the gathers are cheaper)
_SLAB_MIN = 1 << 16


def _lerp_slabs(a: torch.Tensor, dim: int, i0: torch.Tensor, i1: torch.Tensor, w: torch.Tensor,
                out: torch.Tensor | None = None, mul_into: torch.Tensor | None = None) -> torch.Tensor:
    """One resize_linear pass along `dim`, slab by slab: the output slices that share their two
    source slices are lerped from the broadcast source slices (the same elementwise lerp, so
    the same bytes as gathering both neighbours at full size), written into `out` (allocated
    when None) or multiplied into `mul_into` through a small buffer. No full-size gathers
    (index_select along inner dims is slow), one pass over the output."""
    n_out = i0.numel()
    shape = list(a.shape)
    shape[dim] = n_out
    target = mul_into if mul_into is not None else (out if out is not None else a.new_empty(shape))
    tmp = scratch(TEMP_A, tuple(shape), a.dtype, a.device) if mul_into is not None else None
    i0l, i1l = i0.tolist(), i1.tolist()
    wview = [1] * a.dim()
    z = 0
    while z < n_out:
        e = z + 1
        while e < n_out and i0l[e] == i0l[z] and i1l[e] == i1l[z]:
            e += 1
        size = list(a.shape)
        size[dim] = e - z
        lo = a.narrow(dim, i0l[z], 1).expand(size)
        hi = a.narrow(dim, i1l[z], 1).expand(size)
        wview[dim] = e - z
        wk = w[z:e].view(wview)
        if mul_into is None:
            torch.lerp(lo, hi, wk, out=target.narrow(dim, z, e - z))
        else:
            target.narrow(dim, z, e - z).mul_(torch.lerp(lo, hi, wk, out=tmp.narrow(dim, z, e - z)))  # type: ignore[union-attr]
        z = e
    return target


def resize_linear(x: torch.Tensor, shape: tuple[int, int, int], align_corners: bool,
                  out: torch.Tensor | None = None, mul_into: torch.Tensor | None = None) -> torch.Tensor:
    """Trilinear resampling of a (d, h, w) float volume to `shape`, as three separable 1D passes
    (gather two neighbours, lerp), last axis first so that the one full-size pass runs along
    the contiguous first axis: ~40% cheaper than F.interpolate for a 4x up-sampling to 128^3,
    and elementwise (the same bytes with any thread count). Equals F.interpolate(mode=
    "trilinear") up to float rounding.

    `out` (contiguous, `shape`, x's dtype), when given, receives the result (the same bytes;
    no full-size allocation) and is returned; `x` must not alias it. `mul_into` (same
    requirements), when given instead, is multiplied by the result in place and returned
    (the resampled field itself is never stored at full size)."""
    dims = [d for d in (2, 1, 0) if x.shape[d] != shape[d]]
    if not dims:
        if mul_into is not None:
            return mul_into.mul_(x)
        return x if out is None else out.copy_(x)
    for dim in dims:
        i0, i1, w = _linear_taps(x.shape[dim], shape[dim], align_corners, x.device)
        last = dim == dims[-1]
        big = x.numel() // x.shape[dim] * shape[dim] >= _SLAB_MIN and dim < x.dim() - 1
        if last and (out is not None or mul_into is not None) or big:
            x = _lerp_slabs(x, dim, i0, i1, w, out=out if last else None, mul_into=mul_into if last else None)
        else:   # small passes: two gathers cost less than a Python loop over slabs
            view = [1, 1, 1]
            view[dim] = shape[dim]
            x = x.index_select(dim, i0).lerp_(x.index_select(dim, i1), w.view(view))
    return x
