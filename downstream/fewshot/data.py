"""Few-shot volumes: resampling to the protocol grid, normalisation, padding and random crops.

Arrays are (D, H, W) = NIfTI (i, j, k). Resampling keeps the field of view (voxel corners
aligned: `interpolate(..., align_corners=False)`), so a prediction on the protocol grid maps
back onto the original grid by the inverse zoom.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from ..features import normalise_image

__all__ = ["Prepared", "voxel_sizes", "prepare_volume", "to_original_grid", "crop_shape", "sample_crops", "normalise"]


@dataclass
class Prepared:
    """A volume on the protocol grid.

    image (D, H, W) float32 normalised; label (D, H, W) int64 or None; spacing (3,) mm of this
    grid; orig_shape / orig_spacing of the file's grid.
    """

    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, float, float]
    orig_shape: tuple[int, int, int]
    orig_spacing: tuple[float, float, float]


def voxel_sizes(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel sizes (mm) along i, j, k from a 4x4 affine."""
    return tuple(float(v) for v in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)))  # type: ignore[return-value]


def normalise(image: np.ndarray, normalisation: dict[str, Any] | None) -> np.ndarray:
    """The checkpoint's input normalisation (min-max to [0, 1], optional clip first)."""
    try:  # the registration engineer's helper is the one definition when present

        out = normalise_image(image, normalisation or {"kind": "minmax", "clip": None})
        return np.asarray(out.detach().cpu() if isinstance(out, torch.Tensor) else out, dtype=np.float32)
    except ImportError:
        pass
    x = np.asarray(image, dtype=np.float32)
    clip = (normalisation or {}).get("clip")
    if clip is not None:
        x = np.clip(x, clip[0], clip[1])
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def _resize(x: np.ndarray, shape: tuple[int, ...], label: bool) -> np.ndarray:
    if tuple(x.shape) == tuple(shape):
        return x
    t = torch.from_numpy(np.ascontiguousarray(x))[None, None]
    if label:
        return F.interpolate(t.float(), size=shape, mode="nearest-exact")[0, 0].to(torch.int64).numpy()
    down = all(s <= o for s, o in zip(shape, x.shape))
    mode = "area" if down else "trilinear"
    kw = {} if down else {"align_corners": False}
    return F.interpolate(t.float(), size=shape, mode=mode, **kw)[0, 0].numpy()


def prepare_volume(
    image: np.ndarray, label: np.ndarray | None, affine: np.ndarray, spacing_mm: float | None, normalisation: dict[str, Any] | None
) -> Prepared:
    """Resample to `spacing_mm` (isotropic; None keeps the grid) and normalise the image."""
    orig_spacing = voxel_sizes(affine)
    if spacing_mm is None:
        shape = tuple(image.shape)
        spacing = orig_spacing
    else:
        shape = tuple(max(1, int(round(n * s / spacing_mm))) for n, s in zip(image.shape, orig_spacing))
        spacing = tuple(n * s / m for n, s, m in zip(image.shape, orig_spacing, shape))
    img = normalise(_resize(np.asarray(image, np.float32), shape, label=False), normalisation)
    lab = None if label is None else _resize(np.asarray(label, np.int64), shape, label=True)
    return Prepared(img.astype(np.float32), lab, spacing, tuple(image.shape), orig_spacing)  # type: ignore[arg-type]


def to_original_grid(pred: np.ndarray, prepared: Prepared) -> np.ndarray:
    """A label map on the protocol grid back onto the file's grid (nearest)."""
    return _resize(np.asarray(pred, np.int64), prepared.orig_shape, label=True)


def crop_shape(shape: tuple[int, ...], crop: int, divisor: int) -> tuple[int, int, int]:
    """The crop per axis: `crop`, shrunk to the volume rounded up to a multiple of `divisor`."""
    c = max(divisor, (crop // divisor) * divisor)
    return tuple(min(c, -(-n // divisor) * divisor) for n in shape)  # type: ignore[return-value]


def _pad_to(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    pad = [(0, max(0, s - n)) for n, s in zip(x.shape, shape)]
    return np.pad(x, pad) if any(p[1] for p in pad) else x


def sample_crops(
    volumes: list[Prepared], csize: tuple[int, int, int], batch: int, fg_fraction: float, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of random crops: images (B, 1, *csize) float32, labels (B, 1, *csize) int64.

    Each crop picks a support volume uniformly; with probability `fg_fraction` it is centred on
    a random foreground voxel, otherwise placed uniformly. Volumes smaller than the crop are
    zero-padded (background).
    """
    imgs, labs = [], []
    for _ in range(batch):
        v = volumes[int(rng.integers(len(volumes)))]
        img = _pad_to(v.image, csize)
        lab = _pad_to(v.label, csize)
        fg = np.flatnonzero(lab) if rng.random() < fg_fraction else np.empty(0, dtype=np.int64)
        start = []
        if fg.size:
            centre = np.unravel_index(int(fg[int(rng.integers(fg.size))]), lab.shape)
            for n, c, m in zip(lab.shape, csize, centre):
                start.append(int(np.clip(m - c // 2, 0, n - c)))
        else:
            start = [int(rng.integers(0, n - c + 1)) for n, c in zip(lab.shape, csize)]
        sl = tuple(slice(s, s + c) for s, c in zip(start, csize))
        imgs.append(img[sl])
        labs.append(lab[sl])
    return torch.from_numpy(np.stack(imgs)[:, None].copy()), torch.from_numpy(np.stack(labs)[:, None].copy())
