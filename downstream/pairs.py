"""Real-data registration pairs under a known warp: Colin27 against itself, contrast inverted.

`colin_pair(spacing, max_disp_mm, seed)` builds the pair that the registration benchmarks and the
real-data probe use: Colin27's brain-extracted T1 (Debian `mricron-data`) resampled to `spacing`
mm, its AAL labels (116 regions, nearest), and a moving copy pulled through a smooth random
field with the contrast inverted inside the brain, so only a contrast-invariant representation
(or MIND-SSC) can register it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from .grid import resample_to_grid, voxel_grid, warp_volume
from .io import Volume, load_labels, load_nifti

__all__ = ["MRICRON", "smooth_field", "colin_image", "colin_pair", "colin_available"]

#: where Debian's mricron-data installs Colin27 (ch2bet.nii.gz) and AAL (aal.nii.gz)
MRICRON = Path("/usr/share/mricron/templates")


def colin_available(root: str | Path = MRICRON) -> bool:
    """True when Colin27 (ch2bet) and AAL are installed under `root`."""
    return (Path(root) / "ch2bet.nii.gz").is_file() and (Path(root) / "aal.nii.gz").is_file()


def smooth_field(shape: tuple[int, ...], max_disp: float, ctrl: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth random displacement `(3, *shape)` (voxels), max |component| = `max_disp`."""
    coarse = rng.normal(size=(3, ctrl, ctrl, ctrl))
    d = np.stack([ndimage.zoom(c, [n / ctrl for n in shape], order=3) for c in coarse])
    return (d / np.abs(d).max() * max_disp).astype(np.float32)


def _grid(img: Volume, spacing: float) -> tuple[tuple[int, ...], np.ndarray]:
    s = float(spacing)
    shape = tuple(int(np.ceil(n / s)) for n in img.data.shape)
    A = img.affine @ np.array([[s, 0, 0, (s - 1) / 2], [0, s, 0, (s - 1) / 2], [0, 0, s, (s - 1) / 2], [0, 0, 0, 1]])
    return shape, A


def colin_image(spacing: float = 2.0, root: str | Path = MRICRON) -> tuple[Volume, np.ndarray]:
    """Colin27's brain-extracted T1 at `spacing` mm (anti-aliased) and its AAL labels on that grid."""
    root = Path(root)
    img, lab = load_nifti(root / "ch2bet.nii.gz"), load_labels(root / "aal.nii.gz")
    shape, A = _grid(img, spacing)
    smooth = ndimage.gaussian_filter(img.data, 0.4 * float(spacing))  # anti-aliasing before decimation
    fixed = resample_to_grid(smooth, img.affine, shape, A)
    flab = resample_to_grid(lab.data, lab.affine, shape, A, "nearest")
    return Volume(fixed, A), flab


def colin_pair(spacing: float = 2.0, max_disp_mm: float = 8.0, seed: int = 0, root: str | Path = MRICRON):
    """(fixed Volume, fixed labels, moving Volume, moving labels, true field) at `spacing` mm.

    The moving image is the fixed one pulled through a smooth field (max `max_disp_mm`, drawn
    from `default_rng(seed)`) with inverted contrast inside the brain (background stays 0);
    labels are AAL (116 regions). The field is `(3, X, Y, Z)` in fixed-grid voxels.
    """
    fixed_v, flab = colin_image(spacing, root)
    fixed, A = fixed_v.data, fixed_v.affine
    shape = fixed.shape
    rng = np.random.default_rng(seed)
    d = smooth_field(shape, max_disp_mm / spacing, 5, rng)
    coords = voxel_grid(shape) + torch.from_numpy(d).permute(1, 2, 3, 0)
    mov = warp_volume(fixed, coords)
    mlab = warp_volume(flab, coords, "nearest")
    brain = mov > 0.05 * mov.max()
    mov = np.where(brain, mov.max() * 1.05 - mov, 0.0).astype(np.float32)
    return Volume(fixed, A), flab, Volume(mov, A), mlab, d
