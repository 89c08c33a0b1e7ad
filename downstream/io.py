"""NIfTI input/output that keeps affines; atomic writes; displacement fields per the Coordinates contract.

Images are read with nibabel's `get_fdata` (scl_slope/scl_inter applied) as float32 `(i, j, k)`;
trailing singleton axes are dropped; NaN stays NaN here and is handled by normalisation.
Displacement fields are written ITK-style: 5D `(X, Y, Z, 1, 3)`, intent "vector", pull-back
(moving point = fixed point + u), on the fixed grid, in mm, with the frame (`LPS` as ITK and
ANTs expect, or `RAS`) named in the header description.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import nibabel as nib
import numpy as np

from synthvox.core.atomic import write_figure, write_nifti
from synthvox.core.errors import SynthvoxError

__all__ = ["NiftiError", "Volume", "load_nifti", "load_labels", "save_nifti", "save_displacement", "load_displacement", "save_figure",
           "DISP_DESCRIPTION"]

DISP_DESCRIPTION = "synthvox disp pull-back mm {frame}"
_RAS2LPS = np.array([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Volume:
    """A 3D array `(i, j, k)` with its voxel-to-world (RAS mm) affine."""

    data: np.ndarray
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis (column norms of the affine)."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))


def _squeeze3(data: np.ndarray, path: str | Path) -> np.ndarray:
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise NiftiError(f"{path}: expected a 3D volume, got shape {data.shape}")
    return data


class NiftiError(SynthvoxError, ValueError):
    """A NIfTI file is missing, unreadable, truncated or of the wrong shape; the message names it."""


def _load(path: str | Path) -> nib.Nifti1Image:
    p = Path(path)
    if not p.is_file():
        raise NiftiError(f"{p}: no such NIfTI file")
    try:
        return nib.load(str(p))
    except Exception as e:  # nibabel raises several kinds for unreadable files
        raise NiftiError(f"{p}: not a readable NIfTI file ({e})") from None


def _fdata(img: nib.Nifti1Image, path: str | Path) -> np.ndarray:
    """The image's voxels as float32; a truncated or corrupt file (nibabel reads lazily, so
    this is where gzip and short reads fail) raises NiftiError naming it."""
    try:
        return np.asarray(img.get_fdata(dtype=np.float32))
    except (EOFError, OSError, ValueError, zlib.error) as e:
        raise NiftiError(f"{path}: the image data cannot be read ({type(e).__name__}: {e}); the file is truncated "
                         "or corrupt: copy or export it again") from None


def load_nifti(path: str | Path) -> Volume:
    """A float32 image volume with its affine (scaling applied, NaN kept)."""
    img = _load(path)
    data = _squeeze3(_fdata(img, path), path)
    return Volume(data, np.asarray(img.affine, np.float64))


def load_labels(path: str | Path) -> Volume:
    """An integer label map (int32) with its affine; non-integer values raise."""
    img = _load(path)
    data = _squeeze3(_fdata(img, path), path)
    if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)):
        raise NiftiError(f"{path}: a label map must hold integers; found non-integer or NaN values")
    return Volume(data.astype(np.int32), np.asarray(img.affine, np.float64))


def save_nifti(data: np.ndarray, affine: np.ndarray, path: str | Path, description: str = "",
               intent: str | None = None, on_disk: str | None = None,
               edit_header: Callable[[nib.Nifti1Header], None] | None = None) -> Path:
    """Write `data` with `affine` atomically (temporary file in the same folder, then rename).

    `on_disk`: a numpy dtype name for the file; an integer type for float data makes nibabel
    store scaled integers (scl_slope/inter), e.g. "int16" as the 2-byte stand-in for float16,
    which NIfTI-1 lacks. `edit_header(header)` makes last changes (e.g. the 4th axis' spacing).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(data), np.asarray(affine, np.float64))
    img.header.set_xyzt_units("mm")
    img.set_qform(np.asarray(affine), code=1)
    img.set_sform(np.asarray(affine), code=1)
    if on_disk:
        img.header.set_data_dtype(np.dtype(on_disk))
    if description:
        img.header["descrip"] = description.encode()[:79]
    if intent:
        img.header.set_intent(intent)
    if edit_header is not None:
        edit_header(img.header)
    return write_nifti(path, img)


def save_displacement(disp_ras: np.ndarray, affine: np.ndarray, path: str | Path, frame: str = "LPS") -> Path:
    """Write a pull-back displacement `(X, Y, Z, 3)` given in RAS mm as a 5D ITK vector NIfTI.

    `frame="LPS"` (default) flips the first two components, as ITK/ANTs read them.
    """
    if frame not in ("LPS", "RAS"):
        raise ValueError(f"frame must be 'LPS' or 'RAS', got {frame!r}")
    d = np.asarray(disp_ras, np.float32)
    if d.ndim != 4 or d.shape[-1] != 3:
        raise ValueError(f"displacement must be (X, Y, Z, 3), got {d.shape}")
    if frame == "LPS":
        d = d * _RAS2LPS.astype(np.float32)
    return save_nifti(d[:, :, :, None, :], affine, path, DISP_DESCRIPTION.format(frame=frame), intent="vector")


def load_displacement(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a field written by `save_displacement`: `(X, Y, Z, 3)` in RAS mm, and its affine."""
    img = _load(path)
    d = _fdata(img, path)
    if d.ndim == 5:
        d = d[:, :, :, 0, :]
    descr = img.header["descrip"].tobytes().decode(errors="ignore")
    if "LPS" in descr:
        d = d * _RAS2LPS.astype(np.float32)
    elif "RAS" not in descr:
        raise ValueError(f"{path}: header description {descr!r} names no frame (LPS or RAS)")
    return d, np.asarray(img.affine, np.float64)


def save_figure(fig: Any, path: str | Path, dpi: int = 80, **savefig_kwargs: Any) -> Path:
    """Save a matplotlib figure as PNG atomically (private temporary, then rename) and close it."""
    return write_figure(path, fig, format="png", dpi=dpi, **savefig_kwargs)
