"""NIfTI label files for ingestion: integer 3D volumes and the label names of their sidecars."""
from __future__ import annotations

import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from synthvox.core.errors import SynthvoxError

__all__ = ["IngestError", "read_label_names", "load_label_volume", "nifti_stem", "is_nifti"]

_NII = (".nii.gz", ".nii")


class IngestError(SynthvoxError, ValueError):
    """A source that cannot be ingested (names the file and says what to do)."""


def nifti_stem(path: Path) -> str:
    """The file name without its NIfTI extension."""
    n = path.name
    for ext in _NII:
        if n.endswith(ext):
            return n[: -len(ext)]
    return n


def is_nifti(path: Path) -> bool:
    """Whether the name ends in .nii or .nii.gz."""
    return path.name.endswith(_NII)


def read_label_names(path: str | Path) -> dict[int, str]:
    """Label value -> name from an atlas's sidecar text file (`aal.nii.txt` beside `aal.nii.gz`),
    or {} when there is none. Lines are "VALUE NAME [...]"; others are skipped."""
    path = Path(path)
    stem = nifti_stem(path)
    for cand in (path.with_name(stem + ".nii.txt"), path.with_name(stem + ".txt"), path.with_name(path.name + ".txt")):
        if cand.is_file():
            names: dict[int, str] = {}
            for line in cand.read_text(errors="replace").splitlines():
                parts = line.split()
                if len(parts) >= 2:
                    try:
                        names[int(parts[0])] = parts[1]
                    except ValueError:
                        continue
            return names
    return {}


def load_label_volume(path: str | Path) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """(integer 3D array, voxel spacing, affine) of a NIfTI label file.

    A trailing singleton axis (X, Y, Z, 1) is dropped; other shapes and non-integral or
    non-finite values raise IngestError naming the file.
    """
    path = Path(path)
    try:
        img = nib.load(str(path))
    except Exception as e:  # nibabel raises many types for bad files
        raise IngestError(f"{path}: cannot read as NIfTI ({e})") from e
    shape = img.shape
    if len(shape) < 3 or any(s != 1 for s in shape[3:]):
        what = "4D" if len(shape) >= 4 else f"{len(shape)}D"
        raise IngestError(f"{path}: {what} image of shape {tuple(shape)}; a label file must be one 3D volume "
                          f"(X, Y, Z) (a trailing singleton axis is accepted): split it into 3D files first")
    try:
        data = np.asarray(img.dataobj)
    except (EOFError, OSError, ValueError, zlib.error) as e:  # nibabel reads lazily: a truncated file fails here
        raise IngestError(f"{path}: the image data cannot be read ({type(e).__name__}: {e}); the file is truncated "
                          "or corrupt: copy or export it again") from None
    data = data.reshape(shape[:3])
    if not np.issubdtype(data.dtype, np.integer):
        if data.dtype == bool:
            data = data.astype(np.uint8)
        else:
            finite = np.isfinite(data)
            if not finite.all():
                raise IngestError(f"{path}: holds non-finite values (NaN/inf); a label file must hold integers")
            frac = data != np.round(data)
            if frac.any():
                bad = data[frac].flat[0]
                raise IngestError(f"{path}: non-integral value {float(bad)!r} in {int(frac.sum())} voxels; a label "
                                  f"file must hold integer labels (is it an intensity image, or resampled linearly?)")
            lo, hi = float(data.min()), float(data.max())
            data = data.astype(np.int32 if -2**31 <= lo and hi < 2**31 else np.int64)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    return data, zooms, np.asarray(img.affine)  # type: ignore[return-value]
