"""Features and registration as plain functions (thin wrappers over downstream/).

    model, record = load_model("bundled")                      # or a run dir, a checkpoint dir, "random"
    feats = extract_features(model, image, record["normalisation"])   # (C, D, H, W) float32 tensor
    result = register("fixed.nii.gz", "moving.nii.gz", model=model, normalisation=record["normalisation"])
    save_displacement(result.disp_world, fixed_affine, "disp.nii.gz")  # ITK 5D, LPS, pull-back, mm
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthvox.downstream.features import extract_features
from synthvox.downstream.io import Volume, load_nifti
from synthvox.downstream.registration import RegistrationConfig, register_volumes
from synthvox.train.checkpoint import load_model

__all__ = ["load_model", "extract_features", "register", "as_volume"]


def as_volume(image: Any, affine: np.ndarray | None = None) -> Volume:
    """A Volume from a NIfTI path, a nibabel image, a Volume, or an array (with `affine`; default identity)."""
    if isinstance(image, Volume):
        return image
    if isinstance(image, (str, Path)):
        return load_nifti(image)
    if hasattr(image, "affine") and hasattr(image, "get_fdata"):  # a nibabel image
        return Volume(np.asarray(image.get_fdata(dtype=np.float32)), np.asarray(image.affine, np.float64))
    data = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if data.ndim != 3:
        raise ValueError(f"want a (D, H, W) volume, got shape {data.shape}")
    return Volume(data.astype(np.float32), np.eye(4) if affine is None else np.asarray(affine, np.float64))


def register(fixed: Any, moving: Any, *, model: torch.nn.Module | str | None = None,
             normalisation: dict[str, Any] | None = None, features: str = "net+mind", config: Any = None,
             fixed_mask: np.ndarray | None = None, moving_mask: Any = None, device: str = "cpu") -> Any:
    """Register `moving` onto `fixed` (moving -> fixed); returns a `RegistrationResult`.

    fixed, moving: NIfTI paths, nibabel images, Volumes or (D, H, W) arrays (identity affine).
    model: a network, or a checkpoint spec ("bundled", a run dir, ...) loaded here with its
    normalisation; not needed for features "mind" or "intensity". config: a
    `RegistrationConfig` (overrides `features`). The result holds `disp_world` (X, Y, Z, 3)
    RAS mm pull-back on the fixed grid, `warped`, `warp(array, mode)` for labels, the affine
    stages and timings (see downstream/registration).
    """
    cfg = config if config is not None else RegistrationConfig(features=features)
    if isinstance(model, (str, Path)):
        model, record = load_model(model, map_location=device)
        normalisation = normalisation or record["normalisation"]
    mm = None if moving_mask is None else as_volume(moving_mask)
    fm = None if fixed_mask is None else as_volume(fixed_mask).data
    return register_volumes(as_volume(fixed), as_volume(moving), cfg, model=model, normalisation=normalisation,
                            fixed_mask=fm, moving_mask=mm, device=device)
