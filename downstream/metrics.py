"""Registration and segmentation metrics: small pure functions on numpy arrays.

Conventions
- Label maps are integer arrays of one shape; 0 is background and never scored.
- Displacement fields are `(3, D, H, W)` with component `c` along array axis `c`, in the same
  unit as `spacing` (voxels with spacing 1, or mm with the voxel size in mm). A field in a
  rotated (oblique) world frame must first be expressed along the grid axes; the Jacobian
  determinant of `x -> x + u(x)` does not depend on that choice.
- Dice and HD95 agree with MONAI's `DiceMetric` / `compute_hausdorff_distance(percentile=95)`
  (tested); the Jacobian metrics are ours (MONAI has none).
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

__all__ = [
    "labels_present",
    "dice_per_label",
    "macro_dice",
    "hd95_per_label",
    "hd95",
    "jacobian_determinant",
    "folding_fraction",
    "sdlogj",
]


def labels_present(labels: np.ndarray) -> set[int]:
    """The non-zero label values of an integer map."""
    return {int(v) for v in np.unique(labels) if v != 0}


def _labels_to_score(fn: str, pred: np.ndarray, ref: np.ndarray, labels: Iterable[int] | None) -> list[int]:
    """Same shapes checked; `labels` or, when None, the union of non-zero values of both maps."""
    if pred.shape != ref.shape:
        raise ValueError(f"{fn}: shapes differ, {pred.shape} vs {ref.shape}")
    return sorted(labels_present(pred) | labels_present(ref)) if labels is None else list(labels)


def dice_per_label(pred: np.ndarray, ref: np.ndarray, labels: Iterable[int] | None = None) -> dict[int, float]:
    """Dice `2|P∩R| / (|P|+|R|)` per label.

    `labels` defaults to the union of non-zero values in both maps. Edge cases: a label absent
    from both maps gives NaN (not scoreable, never averaged as 0 or 1); a label in only one
    map gives 0.0.
    """
    labels = _labels_to_score("dice_per_label", pred, ref, labels)
    out: dict[int, float] = {}
    for lab in labels:
        p, r = pred == lab, ref == lab
        denom = int(p.sum()) + int(r.sum())
        out[int(lab)] = float("nan") if denom == 0 else 2.0 * int(np.logical_and(p, r).sum()) / denom
    return out


def macro_dice(per_label: dict[int, float]) -> float:
    """Mean over labels with a finite Dice; NaN when there are none."""
    vals = [v for v in per_label.values() if math.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def _surface(mask: np.ndarray) -> np.ndarray:
    # Voxels of the mask with a face neighbour outside it (MONAI's edges: mask XOR erosion).
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1), border_value=0)


def hd95(a: np.ndarray, b: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0), percentile: float = 95.0) -> float:
    """Symmetric robust Hausdorff distance between two binary masks, in the unit of `spacing`.

    The maximum of the two directed `percentile`-th percentiles of the distances from the
    surface voxels of one mask to the surface of the other (MONAI's and DeepMind's convention).
    Edge cases: both empty -> NaN; exactly one empty -> inf.
    """
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if not a.any() and not b.any():
        return float("nan")
    if not a.any() or not b.any():
        return float("inf")
    sa, sb = _surface(a), _surface(b)
    da = ndimage.distance_transform_edt(~sb, sampling=spacing)[sa]  # a's surface -> b's surface
    db = ndimage.distance_transform_edt(~sa, sampling=spacing)[sb]
    return float(max(np.percentile(da, percentile), np.percentile(db, percentile)))


def hd95_per_label(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                   labels: Iterable[int] | None = None) -> dict[int, float]:
    """`hd95` per label (labels as in `dice_per_label`), distances in the unit of `spacing` (mm)."""
    labels = _labels_to_score("hd95_per_label", pred, ref, labels)
    out: dict[int, float] = {}
    for lab in labels:
        p, r = pred == lab, ref == lab
        if p.any() or r.any():
            # Crop to the joint bounding box (plus a margin) so a label costs its size, not the volume's.
            sl = ndimage.find_objects((p | r).astype(np.int8))[0]
            sl = tuple(slice(max(s.start - 2, 0), s.stop + 2) for s in sl)
            p, r = p[sl], r[sl]
        out[int(lab)] = hd95(p, r, spacing)
    return out


def jacobian_determinant(disp: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Determinant of the Jacobian of `x -> x + u(x)`, shape `(D, H, W)`.

    `disp` is `(3, D, H, W)`, component `c` along axis `c`, in the unit of `spacing`.
    Derivatives are central differences inside, one-sided at the borders (`np.gradient`), so
    the identity field gives exactly 1 everywhere (no "+3" offset trick).
    """
    disp = np.asarray(disp, np.float64)
    if disp.ndim != 4 or disp.shape[0] != 3:
        raise ValueError(f"jacobian_determinant: expected a (3, D, H, W) field, got {disp.shape}")
    if min(disp.shape[1:]) < 2:
        raise ValueError(f"jacobian_determinant: every axis needs >= 2 voxels, got {disp.shape[1:]}")
    J = np.empty(disp.shape[1:] + (3, 3))
    for c in range(3):
        grads = np.gradient(disp[c], *[float(s) for s in spacing])
        for a in range(3):
            J[..., c, a] = grads[a] + (1.0 if a == c else 0.0)
    return np.linalg.det(J)


def _masked(det: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    if mask is None:
        return det.ravel()
    if mask.shape != det.shape:
        raise ValueError(f"mask shape {mask.shape} differs from the determinant's {det.shape}")
    return det[np.asarray(mask, bool)]


def folding_fraction(det: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Fraction of voxels (inside `mask` if given) with Jacobian determinant <= 0; NaN if none."""
    d = _masked(det, mask)
    return float(np.mean(d <= 0)) if d.size else float("nan")


def sdlogj(det: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Standard deviation of log(det) over voxels with det > 0 (inside `mask`); NaN if none."""
    d = _masked(det, mask)
    d = d[d > 0]
    return float(np.std(np.log(d))) if d.size else float("nan")
