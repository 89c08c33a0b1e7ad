"""The start of a registration: the world map (fixed world -> moving world, pull-back) that the
affine and deformable stages refine.

- `header`: the identity in world coordinates (both images' affines as they are);
- `com`: a translation matching the foregrounds' centres of mass (world mm);
- `moments`: centres of mass plus the rotation between the foregrounds' principal axes (the
  axis signs that give a proper rotation are tried and the candidate with the lowest MIND-SSC
  dissimilarity at a coarse level is kept);
- `auto` (default): `header` while the header-aligned foregrounds overlap (Dice >=
  `overlap_min`), else the better of `com` and `moments` by the same dissimilarity.

Foregrounds are the masks when given, else voxels that differ from the border's median value
by over 10% of the image's robust range.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from ..grid import apply_matrix, resample_to_grid
from ..io import Volume
from ..mind import mind_ssc

__all__ = ["INIT_KINDS", "InitResult", "foreground", "initial_world"]

INIT_KINDS = ("auto", "header", "com", "moments")


@dataclass
class InitResult:
    """The chosen start: `world` (4x4, fixed world -> moving world) and what it did."""

    kind: str
    world: np.ndarray
    overlap_header: float
    translation_mm: float
    rotation_deg: float
    candidates: dict[str, float] = field(default_factory=dict)   # dissimilarity per tried start

    def describe(self) -> dict:
        return {"kind": self.kind, "header_foreground_dice": self.overlap_header,
                "translation_mm": self.translation_mm, "rotation_deg": self.rotation_deg,
                "world": self.world.tolist(), "candidates": self.candidates}


def foreground(data: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """A boolean foreground: `mask > 0`, else voxels that differ from the background (the median
    of the volume's outer faces, so a bright background works too) by over 10% of the 1-99
    percentile range."""
    if mask is not None:
        return np.asarray(mask) > 0
    x = np.nan_to_num(np.asarray(data, np.float32))
    lo, hi = np.percentile(x, [1, 99])
    faces = np.concatenate([np.take(x, i, axis=a).ravel() for a in range(3) for i in (0, -1)])
    return np.abs(x - float(np.median(faces))) > 0.1 * max(float(hi - lo), 1e-12)


def _moments(fg: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World centre of mass and principal axes (columns, descending variance) of a foreground."""
    idx = np.argwhere(fg).astype(np.float64)
    if len(idx) > 200_000:  # a fixed stride keeps this deterministic and fast
        idx = idx[:: len(idx) // 200_000]
    w = idx @ affine[:3, :3].T + affine[:3, 3]
    c = w.mean(0)
    evals, evecs = np.linalg.eigh(np.cov((w - c).T))
    return c, evecs[:, ::-1]


def _world(c_f: np.ndarray, c_m: np.ndarray, R: np.ndarray) -> np.ndarray:
    M = np.eye(4)
    M[:3, :3] = R
    M[:3, 3] = c_m - R @ c_f
    return M


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 2.0 * int(np.logical_and(a, b).sum()) / s if s else 0.0


def _dissimilarity(moving: Volume, world: np.ndarray, fmind: torch.Tensor,
                   shape: tuple[int, ...], A: np.ndarray) -> float:
    mov = resample_to_grid(np.nan_to_num(moving.data), moving.affine, shape, A, world=world)
    mm = mind_ssc(torch.from_numpy(mov)[None, None], 1, 1)
    inside = torch.from_numpy(mov != 0)[None, None]
    # Outside the moving field of view nothing is known: those voxels cost as if unmatched.
    err = ((mm - fmind) ** 2).mean(1, keepdim=True)
    return float(torch.where(inside, err, torch.full_like(err, float(err.max()))).mean())


def initial_world(fixed: Volume, moving: Volume, kind: Literal["auto", "header", "com", "moments"] = "auto",
                  fixed_mask: np.ndarray | None = None, moving_mask: Volume | None = None,
                  overlap_min: float = 0.5) -> InitResult:
    """The start of `kind` (see the module docstring)."""
    if kind not in INIT_KINDS:
        raise ValueError(f"init = {kind!r} is not one of {list(INIT_KINDS)}")
    ff = foreground(fixed.data, fixed_mask)
    fm = foreground(moving.data, None if moving_mask is None else
                    resample_to_grid(moving_mask.data.astype(np.float32), moving_mask.affine, moving.data.shape,
                                     moving.affine, "nearest"))
    hdr = resample_to_grid(fm.astype(np.float32), moving.affine, fixed.data.shape, fixed.affine, "nearest") > 0
    overlap = _dice(ff, hdr)
    eye = np.eye(4)
    if kind == "header" or (kind == "auto" and overlap >= overlap_min):
        return InitResult("header", eye, overlap, 0.0, 0.0)
    c_f, e_f = _moments(ff, fixed.affine)
    c_m, e_m = _moments(fm, moving.affine)
    cands = {"com": _world(c_f, c_m, np.eye(3))}
    if kind in ("moments", "auto"):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            R = e_m @ np.diag(signs) @ e_f.T
            if np.linalg.det(R) > 0:
                cands["moments" + "".join("+" if s > 0 else "-" for s in signs)] = _world(c_f, c_m, R)
    if kind == "com":
        chosen, scores = "com", {}
    else:
        # Score the candidates on a coarse (about 4x the voxel) fixed grid with MIND-SSC.
        step = max(1, round(min(fixed.data.shape) / 24))
        shape = tuple(max(2, n // step) for n in fixed.data.shape)
        A = fixed.affine @ np.diag([step, step, step, 1.0])
        fimg = resample_to_grid(np.nan_to_num(fixed.data), fixed.affine, shape, A)
        fmind = mind_ssc(torch.from_numpy(fimg)[None, None], 1, 1)
        scores = {k: _dissimilarity(moving, w, fmind, shape, A) for k, w in cands.items()
                  if kind == "auto" or k.startswith("moments")}
        chosen = min(scores, key=lambda k: (scores[k], k))
    W = cands[chosen]
    centre = c_f
    moved = float(np.linalg.norm(apply_matrix(W, torch.from_numpy(centre[None]).double()).numpy()[0] - centre))
    angle = math.degrees(math.acos(float(np.clip((np.trace(W[:3, :3]) - 1) / 2, -1, 1))))
    return InitResult("com" if chosen == "com" else "moments", W, overlap, moved, angle,
                      {k: round(v, 6) for k, v in scores.items()})
