"""Gaussian blur with a small per-axis sigma U(0, blur_sigma_max) voxels.

Applied in the Fourier domain (see kspace.py) as the exact DFT of the voxel-integrated
Gaussian kernel, i.e. a circular convolution with that kernel; it shares one FFT with Gibbs
ringing, k-space spikes and sharpening. When blur is the only k-space step of a view and its
kernels are short (radius <= 2 voxels: sigma <= 2/3, so always with the default
blur_sigma_max 0.33), the same circular convolution is computed directly in space
(`circular_blur`: ~4 passes per axis instead of an FFT round trip; equal up to float rounding).
"""
from __future__ import annotations


import numpy as np
import torch

from ..workspace import TEMP_A, TEMP_B, TEMP_C, scratch
from ._ops import gaussian_kernel_1d, kernel_transfer_1d
from .config import AppearanceConfig
from .params import BlurParams

__all__ = ["sample_blur", "blur_transfer", "is_neutral_blur", "circular_blur", "spatial_ok", "SPATIAL_RADIUS"]

#: longest kernel radius (voxels) that `circular_blur` handles (longer ones go through the FFT)
SPATIAL_RADIUS = 2


def sample_blur(cfg: AppearanceConfig, rng: np.random.Generator) -> BlurParams | None:
    """Per-axis sigmas (voxels), or None (p = 1 - blur_p)."""
    if not rng.random() < cfg.blur_p:
        return None
    return BlurParams(sigma=tuple(float(s) for s in rng.uniform(0.0, cfg.blur_sigma_max, 3)))  # type: ignore[arg-type]


def is_neutral_blur(params: BlurParams | None) -> bool:
    return params is None or all(s <= 0 for s in params.sigma)


def blur_transfer(freqs: list[torch.Tensor], params: BlurParams) -> list[torch.Tensor]:
    """Per-axis transfer functions (float64) at the rfft frequencies `freqs` (each of the shape of its `freqs`)."""
    return [kernel_transfer_1d(gaussian_kernel_1d(s), f) for s, f in zip(params.sigma, freqs)]


def spatial_ok(shape: tuple[int, ...], params: BlurParams) -> bool:
    """True when `circular_blur` handles these sigmas on a volume of `shape` (short kernels that
    fit the axis)."""
    for n, sg in zip(shape, params.sigma):
        r = len(gaussian_kernel_1d(sg)) // 2
        if r > SPATIAL_RADIUS or n < 2 * r + 1:
            return False
    return True


def _pair_sum(x: torch.Tensor, k: int, dim: int, out: torch.Tensor) -> torch.Tensor:
    """out[i] = x[i - k] + x[i + k] along `dim`, indices modulo the axis length (n >= 2k + 1)."""
    n = x.shape[dim]
    torch.add(x.narrow(dim, 0, n - 2 * k), x.narrow(dim, 2 * k, n - 2 * k), out=out.narrow(dim, k, n - 2 * k))
    torch.add(x.narrow(dim, n - k, k), x.narrow(dim, k, k), out=out.narrow(dim, 0, k))
    torch.add(x.narrow(dim, n - 2 * k, k), x.narrow(dim, 0, k), out=out.narrow(dim, n - k, k))
    return out


def circular_blur(volume: torch.Tensor, params: BlurParams, inplace: bool = False) -> torch.Tensor:
    """The circular convolution of a float32 (D, H, W) volume with the per-axis erf kernels,
    in space: per axis w0 x + sum_k w_k (x[i - k] + x[i + k]). Needs `spatial_ok`. `inplace`
    writes the result into the volume (temporaries go through reused buffers)."""
    kernels = [(d, gaussian_kernel_1d(sg)) for d, sg in enumerate(params.sigma)]
    kernels = [(d, w) for d, w in kernels if len(w) > 1]
    shape, dev = tuple(volume.shape), volume.device
    if not kernels:
        return volume if inplace else volume.clone()
    final = volume if inplace else torch.empty_like(volume)
    bufs = [scratch(t, shape, volume.dtype, dev) for t in (TEMP_A, TEMP_B)]
    tmp = scratch(TEMP_C, shape, volume.dtype, dev)
    src = volume
    for j, (dim, w) in enumerate(kernels):
        last = j == len(kernels) - 1
        dst = final if last and src is not final else bufs[j % 2]
        r = len(w) // 2
        torch.mul(src, w[r], out=dst)
        for k in range(1, r + 1):
            dst.add_(_pair_sum(src, k, dim, tmp).mul_(w[r + k]))
        src = dst
    return src if src is final else final.copy_(src)
