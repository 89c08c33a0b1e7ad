"""The Fourier-domain group: k-space spikes, blur, Gibbs ringing and sharpening in ONE FFT.

All four are linear in the spectrum (spikes add to it; blur, Gibbs and sharpening multiply
it), so a view pays one rfft round trip whenever any of them fires, instead of one per step
(or slow spatial convolutions). Order inside: spikes are added first, then the spectrum is
multiplied by blur x Gibbs x sharpen (the reference applies spikes, gamma, blur, Gibbs,
sharpen; here gamma runs before this group). Convolutions are circular (periodic borders).
"""
from __future__ import annotations

from typing import Any

import torch

from ._ops import irfft3, rfft3, rfft_freqs
from .blur import blur_transfer, is_neutral_blur
from .gibbs import gibbs_mask, is_neutral_gibbs
from .sharpen import is_neutral_sharpen, sharpen_transfer
from .spikes import add_spikes, is_neutral_spikes

__all__ = ["apply_kspace", "KSPACE_STEPS"]

KSPACE_STEPS = ("spikes", "blur", "gibbs", "sharpen")


def apply_kspace(volume: torch.Tensor, params: dict[str, dict[str, Any] | None]) -> torch.Tensor:
    """Apply the given members of KSPACE_STEPS (missing or None = skipped) to a (D, H, W) volume.

    When every member is neutral the volume is returned unchanged (no FFT).
    """
    unknown = set(params) - set(KSPACE_STEPS)
    if unknown:
        raise ValueError(f"unknown k-space steps {sorted(unknown)}; known: {list(KSPACE_STEPS)}")
    spikes, blur, gibbs, sharpen = (params.get(k) for k in KSPACE_STEPS)
    if is_neutral_spikes(spikes) and is_neutral_blur(blur) and is_neutral_gibbs(gibbs) and is_neutral_sharpen(sharpen):
        return volume
    shape: tuple[int, int, int] = tuple(volume.shape)  # type: ignore[assignment]
    freqs = rfft_freqs(shape, volume.device)
    spectrum = rfft3(volume.float())
    if not is_neutral_spikes(spikes):
        add_spikes(spectrum, spikes, shape)  # type: ignore[arg-type]
    if is_neutral_blur(blur) and is_neutral_gibbs(gibbs) and is_neutral_sharpen(sharpen):
        return irfft3(spectrum, shape)
    # the real transfer function, float32 (D, H, W // 2 + 1); separable factors stay 1D until
    # one outer product
    transfer: torch.Tensor | None = None
    if not is_neutral_blur(blur):
        b = [t.to(torch.float32) for t in blur_transfer(freqs, blur)]  # type: ignore[arg-type]
        transfer = (b[0][:, None] * b[1][None, :])[:, :, None] * b[2][None, None, :]
    if not is_neutral_sharpen(sharpen):
        s = sharpen_transfer(freqs, sharpen)  # type: ignore[arg-type]
        transfer = s if transfer is None else transfer.mul_(s)
    if not is_neutral_gibbs(gibbs):
        m = gibbs_mask(shape, freqs, gibbs)  # type: ignore[arg-type]
        transfer = m.to(torch.float32) if transfer is None else transfer.mul_(m)
    assert transfer is not None
    spectrum.mul_(transfer)
    return irfft3(spectrum, shape)
