"""The sample contract: what the engine yields and every store reader yields back.

A sample is a plain dict::

    labels  (D, H, W)     uint8 or uint16 (fixed per store by `label_dtype`), 0 = background
    views   (V, D, H, W)  uint8, intensity in [0, 1] quantised to 0..255 (round half to even)
    index   int           the sample's global index in its run
    meta    dict          JSON-able: drawn parameters, seeds, label count, device type

Axis order (D, H, W) is NIfTI (i, j, k) of a volume with an identity affine; synthetic
volumes are isotropic, 1 voxel = 1 unit. V >= 2 views share the labels' geometry.

Bump `SCHEMA_VERSION` on any change of keys, dtypes, quantiser or meta layout: it is
recorded in store manifests and checkpoints, and readers refuse other versions.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from synthvox.core.errors import SynthvoxError

__all__ = [
    "SCHEMA_VERSION",
    "SAMPLE_KEYS",
    "SchemaError",
    "label_dtype",
    "quantise",
    "validate_sample",
    "check_schema_version",
]

SCHEMA_VERSION = 1

#: key -> (dtype description, shape description)
SAMPLE_KEYS: dict[str, tuple[str, str]] = {
    "labels": ("uint8|uint16", "(D, H, W)"),
    "views": ("uint8", "(V, D, H, W), V >= 2"),
    "index": ("int", "()"),
    "meta": ("JSON-able dict", "-"),
}


class SchemaError(SynthvoxError, ValueError):
    """A sample or store does not follow the contract."""


def label_dtype(max_labels: int) -> np.dtype:
    """The label dtype of a store whose samples hold at most `max_labels` foreground ids.

    uint8 up to 255 foreground labels, uint16 up to 65535; more is refused rather than
    wrapped around.
    """
    if max_labels < 1:
        raise SchemaError(f"max_labels must be >= 1, got {max_labels}")
    if max_labels <= np.iinfo(np.uint8).max:
        return np.dtype(np.uint8)
    if max_labels <= np.iinfo(np.uint16).max:
        return np.dtype(np.uint16)
    raise SchemaError(f"max_labels={max_labels} exceeds uint16; reduce the label count")


def quantise(x: torch.Tensor) -> torch.Tensor:
    """Float intensities in [0, 1] -> uint8 0..255 (clamped, rounded half to even).

    The one quantiser every writer uses, so that views re-rendered from a labels store
    equal the stored ones byte for byte on the same device type.
    """
    return torch.round(x.float().clamp(0.0, 1.0) * 255.0).to(torch.uint8)


def validate_sample(sample: dict[str, Any], max_labels: int | None = None) -> None:
    """Raise `SchemaError` naming the key when `sample` breaks the contract."""
    missing = [k for k in SAMPLE_KEYS if k not in sample]
    if missing:
        raise SchemaError(f"sample is missing keys {missing}; expected {list(SAMPLE_KEYS)}")
    labels, views = sample["labels"], sample["views"]
    ldt = np.dtype(str(labels.dtype).replace("torch.", ""))
    if ldt not in (np.dtype(np.uint8), np.dtype(np.uint16)):
        raise SchemaError(f"labels dtype {labels.dtype} is not uint8/uint16")
    if max_labels is not None and ldt != label_dtype(max_labels):
        raise SchemaError(f"labels dtype {ldt} but the store's max_labels={max_labels} needs {label_dtype(max_labels)}")
    if labels.ndim != 3:
        raise SchemaError(f"labels must be (D, H, W), got shape {tuple(labels.shape)}")
    if str(views.dtype).replace("torch.", "") != "uint8":
        raise SchemaError(f"views dtype {views.dtype} is not uint8")
    if views.ndim != 4 or views.shape[0] < 2 or tuple(views.shape[1:]) != tuple(labels.shape):
        raise SchemaError(
            f"views must be (V>=2, D, H, W) matching labels {tuple(labels.shape)}, got {tuple(views.shape)}"
        )
    if not isinstance(sample["meta"], dict):
        raise SchemaError("meta must be a dict")


def check_schema_version(found: Any, where: str) -> None:
    """Refuse data written under another schema version, naming where it came from."""
    if found != SCHEMA_VERSION:
        raise SchemaError(
            f"{where} has schema version {found!r}, this synthvox reads version {SCHEMA_VERSION}; "
            "re-render it with this version or install the synthvox that wrote it"
        )
