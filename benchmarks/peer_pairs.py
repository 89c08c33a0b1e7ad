"""The public brain pairs of the peer registration benchmark (issue #17), built from offline data.

Every builder returns a `Pair`: fixed and moving `Volume`s (with their own affines), label maps
on each image's grid, the fixed brain mask (for folding inside the mask), and a description.
The four kinds:

1. `colin_warp`: Colin27 `ch2bet` at 2 mm (mricron-data), brain intensities inverted, against
   itself under a known smooth warp (max 4 or 10 voxels); AAL labels (116).
2. `mni_tissue_warp`: T1-like (fixed) and T2-like (moving, CSF bright) renderings of nilearn's
   MNI152 2009a grey/white maps (CSF = brain mask - GM - WM) under a known warp; labels: CSF,
   GM, WM from the maps plus 12 deep-grey AAL regions (caudate, putamen, pallidum, thalamus,
   hippocampus, amygdala; AAL is drawn on Colin27, which sits in MNI space: a close, not exact,
   fit to MNI152 anatomy; the known warp moves them with the image, so they are exact truth).
3. `mni_to_colin`: MNI152 2009a T1 (moving) onto Colin27 ch2bet (fixed), both 2 mm; brain masks
   as labels: Colin27 = ch2bet > 0 (mricron's brain-extracted T1, nearest-resampled), MNI152 =
   nilearn's `load_mni152_brain_mask` (the template thresholded at 0.2).
4. `colin_header`: pair 1 (max 4 voxels) with the moving header moved by 15 cm and rotated by
   20 degrees (about the left-right axis); the arrays are those of pair 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from benchmarks.bench_registration import MRICRON, colin_pair

__all__ = ["Pair", "colin_warp", "mni_tissue_warp", "mni_to_colin", "colin_header", "build_pairs", "PAIR_KINDS"]

DEEP_AAL = (37, 38, 41, 42, 71, 72, 73, 74, 75, 76, 77, 78)


@dataclass
class Pair:
    """One benchmark pair (all arrays `(X, Y, Z)`; labels on their image's grid)."""

    name: str
    fixed: object            # synthvox.downstream.io.Volume
    moving: object
    fixed_labels: np.ndarray
    moving_labels: np.ndarray
    fixed_mask: np.ndarray   # bool, fixed grid
    note: str


def _brain(img: np.ndarray, frac: float = 0.05) -> np.ndarray:
    return ndimage.binary_fill_holes(img > frac * float(img.max()))


def colin_warp(max_vox: float, seed: int = 0) -> Pair:
    """Pair 1: Colin27 2 mm, inverted brain contrast, known warp of max `max_vox` voxels."""
    fixed, flab, moving, mlab, _ = colin_pair(spacing=2.0, max_disp_mm=2.0 * max_vox, seed=seed)
    return Pair(f"colin-inv-warp{max_vox:g}", fixed, moving, flab, mlab, _brain(fixed.data),
                f"Colin27 ch2bet 2 mm {fixed.data.shape}, inverted brain contrast, known warp max {max_vox:g} vox, AAL 116")


def _mni_maps() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(gm, wm, csf, brain mask, affine) of nilearn's MNI152 2009a at 2 mm."""
    from nilearn import datasets

    gm = np.asarray(datasets.load_mni152_gm_template(resolution=2).dataobj, np.float32)
    wm_img = datasets.load_mni152_wm_template(resolution=2)
    wm = np.asarray(wm_img.dataobj, np.float32)
    mask = np.asarray(datasets.load_mni152_brain_mask(resolution=2).dataobj) > 0
    soft = ndimage.gaussian_filter(mask.astype(np.float32), 0.7)
    csf = np.clip(soft - gm - wm, 0.0, 1.0) * mask
    return gm, wm, csf, mask, np.asarray(wm_img.affine, np.float64)


def mni_tissue_warp(max_vox: float, seed: int = 0) -> Pair:
    """Pair 2: T1-like fixed and warped T2-like moving renderings of MNI152's tissue maps."""
    import torch

    from synthvox.downstream.grid import resample_to_grid, voxel_grid, warp_volume
    from synthvox.downstream.io import Volume, load_labels

    from benchmarks.bench_registration import smooth_field

    gm, wm, csf, mask, A = _mni_maps()
    rng = np.random.default_rng(seed)
    t1 = 0.15 * csf + 0.55 * gm + 0.9 * wm
    t2 = 1.0 * csf + 0.6 * gm + 0.35 * wm
    t1 = t1 + rng.normal(0, 0.02, t1.shape).astype(np.float32) * mask
    t2 = t2 + rng.normal(0, 0.02, t2.shape).astype(np.float32) * mask
    tissue = np.argmax(np.stack([csf, gm, wm]), 0) + 1
    lab = np.where(mask & (np.maximum(np.maximum(csf, gm), wm) > 0.3), tissue, 0).astype(np.int32)
    aal = load_labels(MRICRON / "aal.nii.gz")
    deep = resample_to_grid(aal.data, aal.affine, gm.shape, A, "nearest")
    for n, v in enumerate(DEEP_AAL):
        lab[(deep == v) & mask] = 4 + n
    d = smooth_field(gm.shape, max_vox, 5, rng)
    coords = voxel_grid(gm.shape) + torch.from_numpy(d).permute(1, 2, 3, 0)
    mov = warp_volume(t2.astype(np.float32), coords)
    mlab = warp_volume(lab, coords, "nearest")
    return Pair(f"mni-t1t2-warp{max_vox:g}", Volume(t1.astype(np.float32), A), Volume(mov, A), lab, mlab, mask,
                f"MNI152 T1-like vs T2-like 2 mm {gm.shape}, known warp max {max_vox:g} vox, 3 tissues + 12 deep AAL")


def mni_to_colin() -> Pair:
    """Pair 3: MNI152 T1 onto Colin27 ch2bet (2 mm both), brain-mask labels."""
    from nilearn import datasets

    from synthvox.downstream.io import Volume

    from synthvox.downstream.grid import resample_to_grid
    from synthvox.downstream.io import load_nifti

    fixed = colin_pair(spacing=2.0, max_disp_mm=1e-6, seed=0)[0]
    # ch2bet is zero outside the brain: its non-zero region (before smoothing) is the mask.
    bet = load_nifti(MRICRON / "ch2bet.nii.gz")
    fmask = resample_to_grid((bet.data > 0).astype(np.int32), bet.affine, fixed.data.shape, fixed.affine, "nearest") > 0
    t = datasets.load_mni152_template(resolution=2)
    m = datasets.load_mni152_brain_mask(resolution=2)
    mov = Volume(np.asarray(t.dataobj, np.float32), np.asarray(t.affine, np.float64))
    mmask = (np.asarray(m.dataobj) > 0).astype(np.int32)
    return Pair("mni-to-colin", fixed, mov, fmask.astype(np.int32), mmask, fmask,
                f"MNI152 2009a T1 {mov.data.shape} onto Colin27 ch2bet {fixed.data.shape}, 2 mm; brain-mask Dice "
                "(Colin27: ch2bet > 0; MNI152: nilearn template > 0.2)")


def rigid_world(angle_deg: float, axis: tuple[float, float, float], shift_mm: tuple[float, float, float],
                centre: np.ndarray) -> np.ndarray:
    """A 4x4 world map: rotation by `angle_deg` about `axis` through `centre`, then `shift_mm`."""
    a = np.asarray(axis, np.float64)
    a = a / np.linalg.norm(a)
    t = math.radians(angle_deg)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    R = np.eye(3) + math.sin(t) * K + (1 - math.cos(t)) * K @ K
    M = np.eye(4)
    M[:3, :3] = R
    M[:3, 3] = centre - R @ centre + np.asarray(shift_mm, np.float64)
    return M


def colin_header(seed: int = 0) -> Pair:
    """Pair 4: pair 1 (max 4 voxels) whose moving header is moved 15 cm and rotated 20 degrees."""
    from synthvox.downstream.io import Volume

    p = colin_warp(4, seed)
    centre = (p.moving.affine @ np.r_[(np.asarray(p.moving.data.shape) - 1) / 2.0, 1.0])[:3]
    M = rigid_world(20.0, (1.0, 0.0, 0.0), (100.0, -80.0, 80.0), centre)
    p.moving = Volume(p.moving.data, M @ p.moving.affine)
    p.name = "colin-header-15cm-20deg"
    p.note = "pair colin-inv-warp4 with the moving header moved 15.1 cm and rotated 20 deg (about L-R)"
    return p


PAIR_KINDS = {
    "colin4": lambda: colin_warp(4),
    "colin10": lambda: colin_warp(10),
    "mni4": lambda: mni_tissue_warp(4),
    "mni10": lambda: mni_tissue_warp(10),
    "mni2colin": mni_to_colin,
    "header": colin_header,
}


def build_pairs(names: list[str]) -> list[Pair]:
    """The pairs named (keys of PAIR_KINDS), in order."""
    unknown = [n for n in names if n not in PAIR_KINDS]
    if unknown:
        raise ValueError(f"unknown pairs {unknown}; known: {list(PAIR_KINDS)}")
    if not Path(MRICRON).is_dir():
        raise FileNotFoundError(f"{MRICRON} missing: install Debian's mricron-data")
    return [PAIR_KINDS[n]() for n in names]
