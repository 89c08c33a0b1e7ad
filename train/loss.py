"""Multi-positive voxel contrastive loss (supervised contrastive over sampled voxels).

Per tapped layer and per sample: N voxel locations are sampled (the same positions in every
view; all voxels, in order, when the layer has no more than N), their features from every view
go through the layer's projection head and are L2-normalised; with M = V x N points,

    loss_i = logsumexp_{k != i} (s_ik / t) - mean_{j in P(i)} s_ij / t

where s = cosine similarity, t the temperature and P(i) every other sampled point of any view
with the same label (labels nearest-downsampled to the layer). Anchors without positives are
skipped (never happens for V >= 2: the same location in another view is one). The layer loss
is the mean over anchors, then over samples; the total is the tap-weighted mean over layers.

Similarities are matrix products of normalised features, computed `chunk_rows` rows at a
time under activation checkpointing, so memory is O(chunk_rows x M + M x C), never (N, N, C).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from .heads import make_heads

__all__ = ["downsample_labels", "sample_voxels", "supcon_loss", "VoxelContrastiveLoss"]


def downsample_labels(labels: torch.Tensor, stride: int) -> torch.Tensor:
    """Nearest downsampling of `(B, D, H, W)` labels by an integer `stride` (voxel i*stride)."""
    if stride == 1:
        return labels
    return labels[:, ::stride, ::stride, ::stride]


def sample_voxels(labels: torch.Tensor, n: int, generator: torch.Generator, balanced: bool = False,
                  bg_max: float = 1.0) -> torch.Tensor:
    """Indices (int64, CPU) of `min(n, M)` distinct voxels of the flat `(M,)` label vector.

    All voxels in order when M <= n. `balanced`: each label is equally likely to be drawn
    (weights 1 / label count), still without replacement. `bg_max` < 1 caps the background
    (label 0): at most floor(bg_max * n) of the n voxels are background while foreground lasts
    (the rest come from the foreground, uniform or balanced over its labels); when the
    foreground has fewer voxels, all of it is taken and background fills up to n.
    Randomness only from `generator`.
    """
    m = labels.numel()
    if m <= n:
        return torch.arange(m)
    if bg_max < 1.0:
        lab = labels.to("cpu", torch.int64)
        fg = torch.nonzero(lab != 0).reshape(-1)
        bg = torch.nonzero(lab == 0).reshape(-1)
        n_fg = min(fg.numel(), n - int(bg_max * n))
        pick_fg = fg[_draw(lab[fg], n_fg, generator, balanced)] if n_fg else fg[:0]
        pick_bg = bg[torch.randperm(bg.numel(), generator=generator)[: n - n_fg]]
        return torch.cat([pick_fg, pick_bg])
    return _draw(labels, n, generator, balanced)


def _draw(labels: torch.Tensor, n: int, generator: torch.Generator, balanced: bool) -> torch.Tensor:
    """`n` distinct positions of `labels` (n <= numel): uniform, or balanced over label values."""
    m = labels.numel()
    if not balanced:
        return torch.randperm(m, generator=generator)[:n]
    lab = labels.to("cpu", torch.int64)
    _, inverse, counts = torch.unique(lab, return_inverse=True, return_counts=True)
    weights = 1.0 / counts.to(torch.float64)[inverse]
    return torch.multinomial(weights, n, replacement=False, generator=generator)


def _rows_loss(zr: torch.Tensor, z: torch.Tensor, lr: torch.Tensor, lab: torch.Tensor, start: int, inv_t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of per-anchor losses of rows [start, start+R) and the count of anchors with positives."""
    r = zr.shape[0]
    logits = (zr @ z.T) * inv_t  # (R, M)
    rows = torch.arange(r, device=z.device)
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[rows, rows + start] = True
    logits = logits.masked_fill(self_mask, float("-inf"))
    lse = torch.logsumexp(logits, dim=1)
    pos = (lr[:, None] == lab[None, :]) & ~self_mask
    npos = pos.sum(1)
    mean_pos = torch.where(pos, logits, torch.zeros_like(logits)).sum(1) / npos.clamp(min=1)
    valid = npos > 0
    per = torch.where(valid, lse - mean_pos, torch.zeros_like(lse))
    return per.sum(), valid.sum()


def supcon_loss(z: torch.Tensor, labels: torch.Tensor, temperature: float = 0.33, chunk_rows: int | None = 1024) -> torch.Tensor:
    """Mean multi-positive contrastive loss of `(M, P)` L2-normalised points with `(M,)` labels.

    Chunks of `chunk_rows` anchors are recomputed in the backward pass (activation
    checkpointing), so peak memory is about chunk_rows x M floats. None: one plain pass.
    Returns 0 (with a graph) when no anchor has a positive.
    """
    if z.ndim != 2 or labels.shape != (z.shape[0],):
        raise ValueError(f"z must be (M, P) and labels (M,), got {tuple(z.shape)} and {tuple(labels.shape)}")
    m = z.shape[0]
    inv_t = 1.0 / float(temperature)
    if chunk_rows is None or m <= chunk_rows:
        total, count = _rows_loss(z, z, labels, labels, 0, inv_t)
    else:
        total = z.new_zeros(())
        count = torch.zeros((), dtype=torch.int64, device=z.device)
        for s in range(0, m, chunk_rows):
            e = min(m, s + chunk_rows)
            t, c = checkpoint(_rows_loss, z[s:e], z, labels[s:e], labels, s, inv_t, use_reentrant=False)
            total = total + t
            count = count + c
    return total / count.clamp(min=1)


class VoxelContrastiveLoss(nn.Module):
    """The pretraining loss over several taps, with one projection head per tap.

    forward(feats, labels, views, generator) -> (total, {tap: loss}), where feats maps tap ->
    `(B * V, C, d, h, w)` ordered sample-major (b0v0, b0v1, ..., b1v0, ...) and labels is
    `(B, D, H, W)` integers at input resolution. Sampling uses `generator` (CPU) only.
    """

    def __init__(
        self,
        tap_channels: Mapping[str, int],
        tap_strides: Mapping[str, int],
        n_voxels: int = 512,
        temperature: float = 0.33,
        tap_weights: Mapping[str, float] | Sequence[float] | None = None,
        balanced: bool = False,
        head_width: int = 256,
        head_layers: int = 3,
        chunk_rows: int | None = 1024,
        bg_max: float = 1.0,
    ) -> None:
        super().__init__()
        self.taps = tuple(tap_channels)
        if not self.taps:
            raise ValueError("VoxelContrastiveLoss needs at least one tap")
        if n_voxels < 1 or temperature <= 0:
            raise ValueError(f"n_voxels = {n_voxels} must be >= 1 and temperature = {temperature} > 0")
        if not 0.0 <= bg_max <= 1.0:
            raise ValueError(f"bg_max = {bg_max} must be in [0, 1] (the largest background share of sampled anchors)")
        if tap_weights is None:
            weights = {t: 1.0 for t in self.taps}
        elif isinstance(tap_weights, Mapping):
            weights = {t: float(tap_weights.get(t, 0.0)) for t in self.taps}
        else:
            if len(tap_weights) != len(self.taps):
                raise ValueError(f"tap_weights {list(tap_weights)} must have one weight per tap {list(self.taps)}")
            weights = {t: float(w) for t, w in zip(self.taps, tap_weights)}
        if sum(weights.values()) <= 0 or any(w < 0 for w in weights.values()):
            raise ValueError(f"tap weights {weights} must be >= 0 with a positive sum")
        self.weights = weights
        self.strides = {t: int(tap_strides[t]) for t in self.taps}
        self.n_voxels, self.temperature, self.balanced, self.chunk_rows = int(n_voxels), float(temperature), bool(balanced), chunk_rows
        self.bg_max = float(bg_max)
        self.heads = make_heads(dict(tap_channels), head_width, head_layers)

    def tap_loss(self, tap: str, feat: torch.Tensor, labels: torch.Tensor, views: int, generator: torch.Generator) -> torch.Tensor:
        """The loss of one tap, mean over the B samples."""
        b = labels.shape[0]
        if feat.shape[0] != b * views:
            raise ValueError(f"tap {tap}: features batch {feat.shape[0]} != samples {b} x views {views}")
        lab = downsample_labels(labels, self.strides[tap])
        if tuple(lab.shape[1:]) != tuple(feat.shape[2:]):
            raise ValueError(f"tap {tap}: labels downsampled to {tuple(lab.shape[1:])} but features are {tuple(feat.shape[2:])}")
        c = feat.shape[1]
        flat = feat.reshape(b, views, c, -1)
        losses = []
        for i in range(b):
            li = lab[i].reshape(-1)
            idx = sample_voxels(li, self.n_voxels, generator, self.balanced, self.bg_max).to(feat.device)
            f = flat[i][:, :, idx].permute(0, 2, 1).reshape(-1, c)  # (V * n, C)
            f = f.to(self.heads[tap].mlp[0].weight.dtype)  # float32 even under autocast
            z = F.normalize(self.heads[tap](f), dim=1)
            lz = li[idx].to(torch.int64).repeat(views)
            losses.append(supcon_loss(z, lz, self.temperature, self.chunk_rows))
        return torch.stack(losses).mean()

    def forward(
        self, feats: Mapping[str, torch.Tensor], labels: torch.Tensor, views: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        missing = [t for t in self.taps if t not in feats]
        if missing:
            raise ValueError(f"features for taps {missing} are missing; got {list(feats)}")
        dev_type = labels.device.type
        per: dict[str, torch.Tensor] = {}
        with torch.autocast(device_type=dev_type, enabled=False):  # the loss in float32
            for t in self.taps:
                per[t] = self.tap_loss(t, feats[t], labels, views, generator)
        wsum = sum(self.weights.values())
        total = sum(self.weights[t] * per[t] for t in self.taps) / wsum
        return total, per
