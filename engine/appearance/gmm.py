"""Per-label Gaussian intensities (the "GMM" step): the first step of every view.

Each label id gets a mean U(mean) and a std U(std) on the 0..255 scale; with probability
`background_zero_p` the background (label 0) stays exactly 0. The volume is then clipped at
0 and min-max rescaled to [0, 1]. Intensities come from a lookup-table gather (one pass over
the voxels, no per-label loop).
"""
from __future__ import annotations


import numpy as np
import torch

from ..workspace import TEMP_A, scratch
from ._ops import minmax_rescale
from .config import AppearanceConfig
from .params import GMMParams

__all__ = ["sample_gmm", "apply_gmm"]


def sample_gmm(cfg: AppearanceConfig, rng: np.random.Generator, n_labels: int) -> GMMParams:
    """Means and stds for label ids 0..n_labels (lists of n_labels + 1 floats)."""
    if n_labels < 0:
        raise ValueError(f"n_labels must be >= 0, got {n_labels}")
    means = rng.uniform(cfg.mean[0], cfg.mean[1], n_labels + 1)
    stds = rng.uniform(cfg.std[0], cfg.std[1], n_labels + 1)
    background_zero = bool(rng.random() < cfg.background_zero_p)
    if background_zero:
        means[0] = 0.0
        stds[0] = 0.0
    return GMMParams(means=tuple(float(v) for v in means), stds=tuple(float(v) for v in stds),
                     background_zero=background_zero)


def apply_gmm(labels: torch.Tensor, params: GMMParams, generator: torch.Generator,
              out: torch.Tensor | None = None, check: bool = True) -> torch.Tensor:
    """(D, H, W) integer labels -> float32 (D, H, W) in [0, 1]: mean[l] + std[l] * N(0, 1), clipped, rescaled.

    Draws one standard normal per voxel from `generator` (on the labels' device). `out`
    (float32, contiguous, labels' shape), when given, receives the result (same bytes). `check`
    False skips the label-range check (the caller has checked the ids already).
    """
    device = labels.device
    means = torch.tensor(params.means, dtype=torch.float32, device=device)
    stds = torch.tensor(params.stds, dtype=torch.float32, device=device)
    idx = labels if labels.dtype in (torch.int64, torch.int32) else labels.long()
    if check:
        lo, top = (int(v) for v in torch.aminmax(idx)) if idx.numel() else (0, 0)
        if top >= means.numel() or lo < 0:
            raise ValueError(
                f"labels hold id {top} but the appearance parameters cover ids 0..{means.numel() - 1}; "
                "sample them with n_labels >= the largest label id"
            )
    if out is None:
        x = torch.randn(labels.shape, generator=generator, device=device, dtype=torch.float32)
    else:
        x = torch.randn(labels.shape, generator=generator, out=out)
    # ONE lookup-table gather of (std, mean) pairs, each pair moved as one int64 (index_select
    # on the flat labels: ~2x faster than torch.take on CPU; one 8-byte gather costs about
    # what one 4-byte gather does), into a reused buffer; then x * std + mean in place as two
    # roundings (addcmul would fuse them: other bytes, and its vector body and scalar tail
    # could round differently, i.e. depend on the thread count)
    flat = idx.reshape(-1)
    table = torch.stack([stds, means], 1).view(torch.int64).view(-1)
    g = scratch(TEMP_A, (flat.numel(), 2), torch.float32, device)
    torch.index_select(table, 0, flat, out=g.view(torch.int64).view(-1))
    x.view(-1).mul_(g[:, 0]).add_(g[:, 1])
    return minmax_rescale(x.clamp_(min=0.0), inplace=True)
