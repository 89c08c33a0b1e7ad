"""Dense network features of a volume: normalisation, whole-volume or sliding-window inference.

`extract_features(model, image, normalisation)` -> `(C, D, H, W)` float32 on the input grid.
Below `max_voxels` (after padding to the network's divisor) the whole volume goes through the
network at once; above it MONAI's `sliding_window_inference` runs 128^3 windows (smaller
when the volume is smaller) with overlap 0.25 and Gaussian blending.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from synthvox.train.model import size_divisor

from .inference import fused_forward
from .io import save_figure, save_nifti

__all__ = ["normalise_image", "extract_features", "DEFAULT_MAX_VOXELS", "voxels_for_memory", "pca_rgb", "write_pca_png",
           "LAYOUTS", "save_features", "nnunet_paths"]

#: Whole-volume inference up to this many (padded) voxels: 160x192x160 fits (about 4.1 GB peak
#: on CPU with the reference UNet, ~850 bytes per voxel).
DEFAULT_MAX_VOXELS = 6_000_000
_BYTES_PER_VOXEL = 900.0


def voxels_for_memory(gib: float) -> int:
    """The whole-volume voxel budget for a memory budget in GiB (reference UNet, float32)."""
    return max(int(gib * 2**30 / _BYTES_PER_VOXEL), 32**3)


def normalise_image(image: np.ndarray | torch.Tensor, normalisation: dict[str, Any] | None = None) -> torch.Tensor:
    """Min-max normalise to [0, 1] after the optional clip window: float32 tensor, same shape.

    `normalisation`: `{"kind": "minmax", "clip": None | [lo, hi]}` (a checkpoint's record).
    NaN and +-inf become the minimum finite value (so background stays background); negative
    values are fine (min-max); a constant image becomes all zeros.
    """
    norm = dict(normalisation or {"kind": "minmax", "clip": None})
    kind = norm.get("kind", "minmax")
    if kind != "minmax":
        raise ValueError(f"normalisation kind {kind!r} is not supported (known: 'minmax')")
    x = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image).float()
    finite = torch.isfinite(x)
    if not finite.any():
        return torch.zeros_like(x)
    lo_f = x[finite].min()
    x = torch.where(finite, x, lo_f)
    clip = norm.get("clip")
    if clip is not None:
        lo, hi = float(clip[0]), float(clip[1])
        if not lo < hi:
            raise ValueError(f"normalisation clip {list(clip)}: low must be below high")
        x = x.clamp(lo, hi)
    lo, hi = x.min(), x.max()
    if hi - lo <= 0:
        return torch.zeros_like(x)
    return (x - lo) / (hi - lo)


def _pad_to(x: torch.Tensor, m: int) -> tuple[torch.Tensor, tuple[int, int, int]]:
    shape = x.shape[-3:]
    pads = [(-n) % m for n in shape]
    # F.pad takes (W_lo, W_hi, H_lo, H_hi, D_lo, D_hi); pad at the high end only, with edge values.
    return F.pad(x, (0, pads[2], 0, pads[1], 0, pads[0]), mode="replicate"), tuple(shape)


def extract_features(model: torch.nn.Module, image: np.ndarray | torch.Tensor, normalisation: dict[str, Any] | None = None,
                     device: str | torch.device = "cpu", max_voxels: int | None = None, roi: int = 128,
                     overlap: float = 0.25) -> torch.Tensor:
    """Features `(C, D, H, W)` float32 (on CPU) of a `(D, H, W)` image.

    The image is normalised with `normalise_image(image, normalisation)`, padded (edge values)
    to a multiple of the network's divisor, run whole when the padded volume has at most
    `max_voxels` voxels (default `DEFAULT_MAX_VOXELS`), else by sliding windows; the padding
    is cropped away.
    """
    x = normalise_image(image, normalisation)
    if x.dim() != 3:
        raise ValueError(f"extract_features: want a (D, H, W) image, got shape {tuple(x.shape)}")
    with torch.no_grad():  # not inference mode: the parameters must stay trainable elsewhere
        model = model.to(device).eval()
        # The reference UNet runs folded and fused (downstream/inference.py: the same features to
        # float rounding, ~0.75x the CPU time); any other network channels-last (the same numbers
        # and ~1.5x faster 3D convolutions on CPU; `.to(memory_format=...)` re-lays the weights
        # in place, values unchanged).
        forward = fused_forward(model)
        if forward is None:
            forward = model.to(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        return _infer(forward, size_divisor(model), x, device, max_voxels, roi, overlap)


def _infer(model: Callable[[torch.Tensor], torch.Tensor], div: int, x: torch.Tensor, device: str | torch.device,
           max_voxels: int | None, roi: int, overlap: float) -> torch.Tensor:
    xp, shape = _pad_to(x[None, None].to(device), div)
    xp = xp.contiguous(memory_format=torch.channels_last_3d)
    budget = DEFAULT_MAX_VOXELS if max_voxels is None else int(max_voxels)
    if xp[0, 0].numel() <= budget:
        out = model(xp)
    else:
        from monai.inferers import sliding_window_inference  # lazily: ~5 s and ~180 MB of startup

        side = max(div, (int(roi) // div) * div)
        # Shrink the window until it fits the budget; never larger than the padded volume.
        while side > div and side**3 > budget:
            side -= div
        win = tuple(min(side, n) for n in xp.shape[2:])
        out = sliding_window_inference(xp, win, sw_batch_size=1, predictor=model, overlap=overlap,
                                       mode="gaussian", padding_mode="replicate")
    return out[0, :, : shape[0], : shape[1], : shape[2]].float().cpu().contiguous()


def pca_rgb(feats: torch.Tensor | np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """The first three principal components of `(C, ...)` features as RGB `(..., 3)` in [0, 1]."""
    f = np.asarray(feats, np.float32)
    c = f.shape[0]
    flat = f.reshape(c, -1).T
    fit = flat if mask is None else flat[np.asarray(mask, bool).ravel()]
    mean = fit.mean(0)
    _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
    k = min(3, vt.shape[0])
    pcs = (flat - mean) @ vt[:k].T
    if k < 3:
        pcs = np.concatenate([pcs, np.zeros((pcs.shape[0], 3 - k), np.float32)], 1)
    lo, hi = np.percentile(pcs, 1, axis=0), np.percentile(pcs, 99, axis=0)
    rgb = np.clip((pcs - lo) / np.maximum(hi - lo, 1e-8), 0, 1)
    return rgb.reshape(f.shape[1:] + (3,))


def write_pca_png(image: np.ndarray, feats: torch.Tensor | np.ndarray, path: str | Path, axis: int = 2,
                  index: int | None = None) -> Path:
    """A PNG: the grey middle slice (along `axis`) beside the first three PCs as RGB."""
    import matplotlib  # lazily: ~1 s of startup, for figures only

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = np.asarray(image, np.float32)
    index = img.shape[axis] // 2 if index is None else index
    f = np.asarray(feats, np.float32)
    grey = np.take(np.nan_to_num(img), index, axis=axis)
    fs = np.take(f, index, axis=axis + 1)
    rgb = pca_rgb(fs)
    fig, ax = plt.subplots(1, 2, figsize=(8, 4))
    ax[0].imshow(np.rot90(grey), cmap="gray")
    ax[0].set_title("image")
    ax[1].imshow(np.rot90(rgb))
    ax[1].set_title("features: PCs 1-3 as RGB")
    for a in ax:
        a.axis("off")

    return save_figure(fig, path, dpi=100, bbox_inches="tight")


#: How `save_features` lays the C feature channels out on disk (see its docstring).
LAYOUTS = ("channels", "vector", "nnunet")
_NIFTI_SUFFIXES = (".nii.gz", ".nii")


def nnunet_paths(out: str | Path, channels: int) -> list[Path]:
    """`DIR/CASE_0000.nii.gz .. DIR/CASE_{C-1:04d}.nii.gz` for OUT = `DIR/CASE` (a .nii/.nii.gz suffix is dropped)."""
    out = Path(out)
    name = out.name
    for suf in _NIFTI_SUFFIXES:
        if name.endswith(suf):
            name = name[: -len(suf)]
            break
    if not name:
        raise ValueError(f"{out}: the nnunet layout needs a case name, e.g. imagesTr/case001")
    return [out.with_name(f"{name}_{c:04d}.nii.gz") for c in range(channels)]


def save_features(feats: torch.Tensor | np.ndarray, affine: np.ndarray, out: str | Path, layout: str = "channels",
                  description: str = "synthvox features", on_disk: str | None = None) -> list[Path]:
    """Write `(C, X, Y, Z)` features with the image's affine; returns the files written.

    layout:
      "channels": one 4D file `(X, Y, Z, C)`; the 4th axis is marked as no time axis (time
        unit unknown, step 0, intent name "channels"): nibabel, FSL and numpy users.
      "vector": one 5D file `(X, Y, Z, 1, C)` with the NIfTI vector intent, which ITK
        (SimpleITK, ANTs, ITK-SNAP) reads as one image with C components per voxel.
      "nnunet": one 3D file per channel, `CASE_0000.nii.gz .. CASE_{C-1:04d}.nii.gz` beside
        OUT = `DIR/CASE`: nnU-Net's multi-channel input naming (channel_names 0..C-1).
    on_disk: "int16" stores scaled 2-byte integers (NIfTI-1 has no half floats).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} is not one of {list(LAYOUTS)}")
    f = np.asarray(feats, np.float32)
    if f.ndim != 4:
        raise ValueError(f"features must be (C, X, Y, Z), got shape {f.shape}")
    if layout == "nnunet":
        paths = nnunet_paths(out, f.shape[0])
        return [save_nifti(np.ascontiguousarray(f[c]), affine, p, f"{description} ch {c}"[:79], on_disk=on_disk)
                for c, p in enumerate(paths)]
    arr = np.ascontiguousarray(f.transpose(1, 2, 3, 0))
    if layout == "vector":
        return [save_nifti(arr[:, :, :, None, :], affine, out, description, intent="vector", on_disk=on_disk)]

    def not_time(header: Any) -> None:
        header.set_xyzt_units("mm", "unknown")
        header.set_zooms(tuple(header.get_zooms()[:3]) + (0.0,))  # no time step: the axis is channels
        header.set_intent("none", name="channels")

    return [save_nifti(arr, affine, out, description, on_disk=on_disk, edit_header=not_time)]
