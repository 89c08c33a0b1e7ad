"""The nnU-Net v2 raw dataset layout (single channel), read and written with clear errors.

A dataset folder::

    dataset.json            {"name": ..., "channel_names": {"0": "T1"},
                             "labels": {"background": 0, "brain": 1, ...},
                             "numTraining": N, "file_ending": ".nii.gz"}
    imagesTr/CASE_0000.nii.gz   labelsTr/CASE.nii.gz     (labelled cases: support + validation)
    imagesTs/CASE_0000.nii.gz   labelsTs/CASE.nii.gz     (held-out cases; labels optional)

Images and labels are read with nibabel; arrays keep the NIfTI axis order (i, j, k) and the
affine travels with them (world coordinates in mm). Only single-channel datasets and plain
integer labels (no region-based label lists) are supported.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import nibabel as nib
import numpy as np

from synthvox.core import atomic
from synthvox.core.errors import SynthvoxError

__all__ = [
    "DatasetError",
    "Case",
    "NnunetDataset",
    "read_nnunet_dataset",
    "load_case",
    "write_nnunet_dataset",
    "write_nifti",
]

_SUFFIX = "_0000"


class DatasetError(SynthvoxError, ValueError):
    """A dataset folder does not follow the nnU-Net v2 raw layout; the message names the file."""


@dataclass(frozen=True)
class Case:
    """One case: its id, image file and label file (None when the split has no labels)."""

    id: str
    image: Path
    label: Path | None


@dataclass(frozen=True)
class NnunetDataset:
    """A parsed dataset: `labels` maps label value -> name (0 = background)."""

    root: Path
    name: str
    labels: dict[int, str]
    train: tuple[Case, ...]
    test: tuple[Case, ...]
    file_ending: str = ".nii.gz"

    @property
    def foreground(self) -> dict[int, str]:
        """The labels without background."""
        return {k: v for k, v in self.labels.items() if k != 0}

    def case(self, case_id: str) -> Case:
        for c in self.train + self.test:
            if c.id == case_id:
                return c
        raise DatasetError(f"{self.root}: no case {case_id!r} (have {[c.id for c in self.train + self.test]})")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DatasetError(f"{path} is missing: an nnU-Net v2 dataset needs dataset.json with a 'labels' map")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise DatasetError(f"{path} must hold a JSON object")
    return d


def _parse_labels(meta: dict[str, Any], path: Path) -> dict[int, str]:
    raw = meta.get("labels")
    if not isinstance(raw, dict) or not raw:
        raise DatasetError(f"{path}: 'labels' must be a non-empty map like {{\"background\": 0, \"brain\": 1}}")
    labels: dict[int, str] = {}
    for name, value in raw.items():
        if isinstance(value, (list, tuple)):
            raise DatasetError(
                f"{path}: label {name!r} = {value}: region-based labels (lists) are not supported; use one integer per label"
            )
        try:
            v = int(value)
        except (TypeError, ValueError):
            raise DatasetError(f"{path}: label {name!r} has value {value!r}; label values must be integers") from None
        if v in labels:
            raise DatasetError(f"{path}: labels {labels[v]!r} and {name!r} share the value {v}")
        labels[v] = str(name)
    if 0 not in labels:
        raise DatasetError(f"{path}: 'labels' needs the background, e.g. \"background\": 0")
    return dict(sorted(labels.items()))


def _nifti_shape(path: Path) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in nib.load(str(path)).shape)
    except Exception as e:  # nibabel raises several types for broken files
        raise DatasetError(f"{path} cannot be read as NIfTI: {e}") from None


def _scan_split(root: Path, images: str, labels: str, ending: str, need_labels: bool) -> tuple[Case, ...]:
    img_dir, lab_dir = root / images, root / labels
    if not img_dir.is_dir():
        if need_labels:
            raise DatasetError(f"{img_dir} is missing: put the training images there as CASE_0000{ending}")
        return ()
    cases = []
    for f in sorted(img_dir.iterdir()):
        if f.name.startswith(".") or not f.name.endswith(ending):
            continue
        stem = f.name[: -len(ending)]
        if not stem.endswith(_SUFFIX):
            if len(stem) > 5 and stem[-5] == "_" and stem[-4:].isdigit():
                raise DatasetError(
                    f"{f}: channel {stem[-4:]} found; only single-channel datasets (CASE_0000{ending}) are supported"
                )
            raise DatasetError(
                f"{f} lacks the channel suffix: nnU-Net images are named CASE_0000{ending}; rename it to {stem}_0000{ending}"
            )
        cid = stem[: -len(_SUFFIX)]
        lab = lab_dir / f"{cid}{ending}"
        if not lab.is_file():
            if need_labels:
                raise DatasetError(f"{f} has no label file: expected {lab}")
            lab = None
        cases.append(Case(cid, f, lab))
    if lab_dir.is_dir():
        ids = {c.id for c in cases}
        for f in sorted(lab_dir.iterdir()):
            if f.name.endswith(ending) and not f.name.startswith(".") and f.name[: -len(ending)] not in ids:
                raise DatasetError(
                    f"{f} has no image: expected {img_dir / (f.name[: -len(ending)] + _SUFFIX + ending)}"
                )
    return tuple(cases)


def read_nnunet_dataset(root: str | Path, *, check_values: bool = False) -> NnunetDataset:
    """Parse and check an nnU-Net v2 raw dataset folder.

    Checks names (`_0000`), label files, and image/label shapes (from headers, cheap); with
    `check_values` also that every label value appears in dataset.json (reads all labels).
    Raises DatasetError naming the offending file and what to fix.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a directory")
    meta_path = root / "dataset.json"
    meta = _read_json(meta_path)
    labels = _parse_labels(meta, meta_path)
    ending = str(meta.get("file_ending", ".nii.gz"))
    channels = meta.get("channel_names", meta.get("modality", {"0": "image"}))
    if isinstance(channels, dict) and len(channels) != 1:
        raise DatasetError(f"{meta_path}: channel_names {channels} has {len(channels)} channels; only 1 is supported")
    train = _scan_split(root, "imagesTr", "labelsTr", ending, need_labels=True)
    test = _scan_split(root, "imagesTs", "labelsTs", ending, need_labels=False)
    if not train:
        raise DatasetError(f"{root / 'imagesTr'} holds no CASE_0000{ending} images")
    for c in train + test:
        if c.label is not None:
            si, sl = _nifti_shape(c.image), _nifti_shape(c.label)
            if si[:3] != sl[:3] or len(sl) > 3 and any(s != 1 for s in sl[3:]):
                raise DatasetError(
                    f"{c.label} has shape {sl} but its image {c.image} has shape {si}; "
                    "labels must be on the image's voxel grid (resample them with nearest neighbour)"
                )
            if len(si) > 3 and any(s != 1 for s in si[3:]):
                raise DatasetError(f"{c.image} has shape {si}: expected a single 3D volume")
    ds = NnunetDataset(root, str(meta.get("name", root.name)), labels, train, test, ending)
    if check_values:
        for c in train + test:
            if c.label is not None:
                load_case(ds, c)
    return ds


def load_case(ds: NnunetDataset, case: Case) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """(image float32 (i, j, k), label int64 (i, j, k) or None, affine (4, 4)) of one case.

    Raises DatasetError when the label holds a value dataset.json does not name.
    """
    img_nii = nib.load(str(case.image))
    image = np.asarray(img_nii.dataobj, dtype=np.float32).reshape(img_nii.shape[:3])
    label = None
    if case.label is not None:
        lab_nii = nib.load(str(case.label))
        raw = np.asarray(lab_nii.dataobj)
        if raw.shape[:3] != image.shape:
            raise DatasetError(f"{case.label} has shape {raw.shape} but its image {case.image} has shape {image.shape}")
        if np.issubdtype(raw.dtype, np.floating) and not np.all(raw == np.round(raw)):
            raise DatasetError(f"{case.label} holds non-integer values; labels must be integers")
        label = raw.reshape(image.shape).astype(np.int64)
        unknown = sorted(set(np.unique(label).tolist()) - set(ds.labels))
        if unknown:
            raise DatasetError(
                f"{case.label} holds label values {unknown} that {ds.root / 'dataset.json'} does not name "
                f"(it names {sorted(ds.labels)}); add them to 'labels' or fix the label file"
            )
    return image, label, np.asarray(img_nii.affine, dtype=np.float64)


def write_nifti(path: str | Path, array: np.ndarray, affine: np.ndarray) -> Path:
    """Write a NIfTI file atomically (temporary name in the same folder, then rename)."""
    return atomic.write_nifti(path, nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64)))


def write_nnunet_dataset(
    root: str | Path,
    name: str,
    labels: Mapping[int, str],
    train: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    test: Mapping[str, tuple[np.ndarray, np.ndarray | None, np.ndarray]] | None = None,
    *,
    channel: str = "image",
    description: str = "",
) -> NnunetDataset:
    """Write a single-channel nnU-Net v2 raw dataset; cases map id -> (image, label, affine).

    Images are written as float32, labels as uint8/uint16; dataset.json is written last so a
    folder with a dataset.json is complete.
    """
    root = Path(root)
    labels = {int(k): str(v) for k, v in labels.items()}
    if 0 not in labels:
        raise DatasetError(f"labels {labels} need a background entry 0")
    dtype = np.uint8 if max(labels) < 256 else np.uint16
    for split, cases in (("Tr", train), ("Ts", test or {})):
        for cid, (img, lab, aff) in cases.items():
            write_nifti(root / f"images{split}" / f"{cid}{_SUFFIX}.nii.gz", np.asarray(img, np.float32), aff)
            if lab is not None:
                write_nifti(root / f"labels{split}" / f"{cid}.nii.gz", np.asarray(lab).astype(dtype), aff)
    meta = {
        "name": name,
        "description": description,
        "channel_names": {"0": channel},
        "labels": {v: k for k, v in sorted(labels.items())},
        "numTraining": len(train),
        "file_ending": ".nii.gz",
    }
    atomic.write_json(root / "dataset.json", meta, sort_keys=False, newline=False)
    return read_nnunet_dataset(root)
