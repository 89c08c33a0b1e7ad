"""Render drawn ensemble parameters into a label map: place, smooth, mask, compact."""
from __future__ import annotations

from typing import Any

import torch

from .mask import inside_box, mask_with, warped_radius
from .params import EnsembleParams
from .place import place_shapes
from .smooth import majority3
from ..workspace import scratch

__all__ = ["apply_ensemble", "compact_ids", "label_map"]


def _compaction(labels: torch.Tensor, max_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(lut, counts): int64 lut[old id] = new id (0 stays 0; the k-th smallest present
    foreground id becomes k) and the voxel count of every old id (at least max_id + 1 long)."""
    counts = torch.bincount(labels.view(-1), minlength=max_id + 1)
    present = counts > 0
    present[0] = True
    return present.cumsum(0) - 1, counts


def compact_ids(labels: torch.Tensor, max_id: int) -> torch.Tensor:
    """Renumber the ids present in `labels` (0..max_id) to 0..K keeping their order; int64.

    0 stays 0; the k-th smallest present foreground id becomes k.
    """
    lut, _ = _compaction(labels, max_id)
    ix = labels.view(-1).to(torch.int32 if labels.dtype != torch.int64 else torch.int64)
    return lut.index_select(0, ix).view(labels.shape)


def _raw_labels(params: EnsembleParams, bank: Any, size: int, generator: torch.Generator,
                device: torch.device) -> torch.Tensor:
    """Placed, smoothed and masked labels before compaction (work dtype, see place.py)."""
    if size != params.size:
        raise ValueError(f"ensemble params were drawn for size {params.size}, asked to render size {size}; "
                         "draw them with sample_ensemble(cfg, size, ...) for this size")
    labels = place_shapes(params, bank, device)
    fg = params.foreground
    f = warped_radius(fg, size, generator, device, reuse=True) if fg is not None else None
    if params.smoothing:
        if f is None:
            labels = majority3(labels)
        else:
            # only voxels inside the mask keep their label: smooth just the mask's bounding box
            # grown by one voxel, where every kept voxel sees its whole 3x3x3 window (identical
            # to smoothing the whole volume, at about half the cost)
            box = inside_box(f, margin=1)
            if box is not None:
                labels[box] = majority3(labels[box].contiguous())
    if f is not None:
        mask_with(labels, f, fg, params.envelope_label or 0, params.interior_label)
    return labels


def apply_ensemble(params: EnsembleParams, bank: Any, size: int, generator: torch.Generator,
                   device: str | torch.device = "cpu") -> torch.Tensor:
    """The (size, size, size) int64 label map of `params` on `device` (0 = background).

    Deterministic in (params, bank content, generator state); the generator supplies only
    the foreground-mask warp noise and may live on `device` or on the CPU (a CPU generator
    makes the labels the same on every device; everything else is integer arithmetic). Ids:
    shape k -> k + 1, the uncovered mask interior (when drawn) -> n_shapes + 1, the envelope
    -> the next id; with `params.compact` the ids present are renumbered 1..K in that order,
    so the map's maximum is its foreground label count. Always <= params.max_labels.
    """
    labels = _raw_labels(params, bank, size, generator, torch.device(device))
    if params.compact:
        return compact_ids(labels, params.max_labels)
    return labels.long()


def label_map(params: EnsembleParams, bank: Any, size: int, generator: torch.Generator,
              device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(labels, counts): the map of `apply_ensemble` as int32 (the index dtype the appearance
    gathers take; half the bytes of int64) and the voxel count of each id 0..max (int64, at
    least params.max_labels + 1 long). On the CPU the map lives in a per-thread reused buffer:
    it is valid until the next call in this thread (copy it to keep it).
    """
    device = torch.device(device)
    labels = _raw_labels(params, bank, size, generator, device)
    lut, counts = _compaction(labels, params.max_labels)
    out = scratch("ensemble.labels32", tuple(labels.shape), torch.int32, device)
    if params.compact:
        # counts of the new ids: the present old ids' counts in order (+ the background's)
        keep = counts > 0
        keep[0] = True
        counts = counts[keep]
        ix = scratch("ensemble.raw32", tuple(labels.shape), torch.int32, device).copy_(labels)
        torch.index_select(lut.to(torch.int32), 0, ix.view(-1), out=out.view(-1))
    else:
        out.copy_(labels)
    return out, counts
