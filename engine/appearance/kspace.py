"""The Fourier-domain group: k-space spikes, blur, Gibbs ringing and sharpening in ONE FFT.

All four are linear in the spectrum (spikes add to it; blur, Gibbs and sharpening multiply
it), so a view pays one rfft round trip whenever any of them fires, instead of one per step
(or slow spatial convolutions). Order inside: spikes are added first, then the spectrum is
multiplied by blur x Gibbs x sharpen (the reference applies spikes, gamma, blur, Gibbs,
sharpen; here gamma runs before this group). Convolutions are circular (periodic borders).
"""
from __future__ import annotations

import torch

from ..workspace import TEMP_A, TEMP_B, TEMP_C, scratch
from ._ops import irfft3, rfft3, rfft_freqs
from .params import BlurParams, GibbsParams, SharpenParams, SpikesParams
from .blur import blur_transfer, circular_blur, is_neutral_blur, spatial_ok
from .gibbs import gibbs_factor, is_neutral_gibbs
from .sharpen import is_neutral_sharpen, sharpen_transfer
from .spikes import add_spikes, is_neutral_spikes

__all__ = ["apply_kspace", "KSPACE_STEPS"]

KSPACE_STEPS = ("spikes", "blur", "gibbs", "sharpen")


def _float_layout(spectrum: torch.Tensor) -> tuple[tuple[int, ...], torch.Tensor | None]:
    """(order, flat): the axis order of the spectrum in memory (outermost first) and a float32
    view of its (re, im) pairs shaped (n_order[0], n_order[1], 2 n_order[2]) with no copy; flat
    is None when the memory is not a plain permutation of the axes."""
    order = tuple(sorted(range(3), key=lambda a: -spectrum.stride(a)))
    p = spectrum.permute(order)
    if not p.is_contiguous():
        return (0, 1, 2), None
    return order, torch.view_as_real(p).view(p.shape[0], p.shape[1], 2 * p.shape[2])


def apply_kspace(volume: torch.Tensor, *, spikes: SpikesParams | None = None, blur: BlurParams | None = None,
                 gibbs: GibbsParams | None = None, sharpen: SharpenParams | None = None,
                 inplace: bool = False) -> torch.Tensor:
    """Apply the given members of KSPACE_STEPS (None = skipped) to a (D, H, W) volume.

    When every member is neutral the volume is returned unchanged (no FFT). `inplace` writes
    the result into the (float32, contiguous) volume's memory.
    """
    if is_neutral_spikes(spikes) and is_neutral_blur(blur) and is_neutral_gibbs(gibbs) and is_neutral_sharpen(sharpen):
        return volume
    shape: tuple[int, int, int] = tuple(volume.shape)  # type: ignore[assignment]
    if (is_neutral_spikes(spikes) and is_neutral_gibbs(gibbs) and is_neutral_sharpen(sharpen)
            and volume.dtype == torch.float32 and spatial_ok(shape, blur)):  # type: ignore[arg-type]
        # blur alone with short kernels: the same circular convolution in space, ~5x cheaper
        return circular_blur(volume, blur, inplace=inplace)  # type: ignore[arg-type]
    spectrum = _rfft3_reused(volume) if inplace and volume.dtype == torch.float32 else rfft3(volume.float())
    if not is_neutral_spikes(spikes):
        add_spikes(spectrum, spikes, shape)  # type: ignore[arg-type]
    if not (is_neutral_blur(blur) and is_neutral_gibbs(gibbs) and is_neutral_sharpen(sharpen)):
        _filter(spectrum, shape, blur, gibbs, sharpen)
    if inplace and volume.dtype == torch.float32 and volume.is_contiguous():
        return _irfft3_reused(spectrum, volume)
    return irfft3(spectrum, shape)


def _layout_buffer(tag: str, like: tuple[int, int, int], device: torch.device) -> torch.Tensor:
    """A reused complex64 (D, H, Wc) buffer laid out (H, Wc, D) in memory: the layout torch's
    FFT over dim 0 produces, so writing into it neither copies nor changes the bytes."""
    d, h, wc = like
    return scratch(tag, (h, wc, d), torch.complex64, device).permute(2, 0, 1)


def _rfft3_reused(volume: torch.Tensor) -> torch.Tensor:
    """rfft3 into per-thread reused buffers (the same bytes; no fresh 8 MB spectra per view)."""
    d, h, w = volume.shape
    half = scratch("kspace.half", (d, h, w // 2 + 1), torch.complex64, volume.device)
    torch.fft.rfft2(volume, out=half)
    return torch.fft.fft(half, dim=0, out=_layout_buffer("kspace.spec", tuple(half.shape), volume.device))


def _irfft3_reused(spectrum: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """irfft3 of `spectrum` into `out` through a reused buffer (the same bytes)."""
    tmp = _layout_buffer("kspace.half", tuple(spectrum.shape), spectrum.device)
    return torch.fft.irfft2(torch.fft.ifft(spectrum, dim=0, out=tmp), s=tuple(out.shape[1:]), out=out)


def _filter(spectrum: torch.Tensor, shape: tuple[int, int, int], blur: BlurParams | None,
            gibbs: GibbsParams | None, sharpen: SharpenParams | None) -> None:
    """Multiply the rfft spectrum by the real transfer function blur x sharpen x Gibbs, in place.

    The transfer is built directly in the spectrum's memory layout (the FFT over D leaves D
    innermost) on the float view of its (re, im) pairs, i.e. with the innermost axis's
    frequencies repeated twice: a plain same-layout float product, ~3x cheaper than
    `spectrum.mul_(real)` (torch promotes a real factor to complex and walks strided memory).
    Every voxel's factor is computed by the same operations in the same order as on the
    logical (D, H, W // 2 + 1) grid, so the bytes do not depend on the layout. Separable
    factors stay 1D until one broadcast product.
    """
    order, flat = _float_layout(spectrum)
    freqs = rfft_freqs(shape, spectrum.device)
    if flat is not None:
        freqs[order[2]] = freqs[order[2]].repeat_interleave(2)
    for a in range(3):   # axis a's vector along its position in memory order, broadcastable
        view = [1, 1, 1]
        view[order.index(a)] = -1
        freqs[a] = freqs[a].view(view)
    # each vector is long along one axis only; not torch.broadcast_shapes, whose first call imports
    # sympy (+35 MB resident in every worker, ~1 s)
    full = tuple(max(int(f.shape[i]) for f in freqs) for i in range(3))
    bufs = [scratch(t, full, torch.float32, spectrum.device) for t in (TEMP_A, TEMP_B)]
    transfer: torch.Tensor | None = None
    if not is_neutral_blur(blur):
        b = [t.to(torch.float32) for t in blur_transfer(freqs, blur)]  # type: ignore[arg-type]
        transfer = torch.mul(b[0] * b[1], b[2], out=bufs[0])
    if not is_neutral_sharpen(sharpen):
        s = sharpen_transfer(freqs, sharpen, out=bufs[1] if transfer is not None else bufs[0],  # type: ignore[arg-type]
                             tmp=scratch(TEMP_C, full, torch.float32, spectrum.device))
        transfer = s if transfer is None else transfer.mul_(s)
    if not is_neutral_gibbs(gibbs):
        m = gibbs_factor(shape, freqs, gibbs, out=bufs[1] if transfer is not None else bufs[0])  # type: ignore[arg-type]
        transfer = m if transfer is None else transfer.mul_(m)
    assert transfer is not None
    if flat is not None:
        flat.mul_(transfer)
    else:
        spectrum.mul_(transfer)
