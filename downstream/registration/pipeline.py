"""World-correct registration of two volumes: header start -> affine -> convex -> Adam.

Everything happens in the fixed image's voxel grid. The moving image is first resampled into
it through both affines (the header alignment); the affine stage finds a voxel map `T` of the
fixed grid; the deformable stages find `u` (fixed-grid voxels). The final pull-back is

    moving voxel = H @ T @ (i + u(i)),      H = inv(A_moving) @ A_fixed,

applied once to the original moving image (no double interpolation); in world terms the
displacement is `A_moving @ (moving voxel) - A_fixed @ i` (RAS mm). Folding and SDlogJ are
those of `i -> i + u(i)` (the affine part has a constant Jacobian).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..features import extract_features, normalise_image
from ..grid import apply_matrix, resample_to_grid, sample_voxels, voxel_grid, voxel_map
from ..io import Volume
from ..mind import mind_ssc
from .config import RegistrationConfig
from .convex import convex_stage
from .fields import pool, resample_field
from .instance import adam_stage, affine_stage

__all__ = ["RegistrationResult", "register_volumes", "compute_features"]


@dataclass
class RegistrationResult:
    """What `register_volumes` returns (arrays on the fixed grid `(X, Y, Z)`)."""

    coords: np.ndarray          # (X, Y, Z, 3) float32: moving voxel coordinates pulled back
    disp_world: np.ndarray      # (X, Y, Z, 3) float32: RAS mm, moving point - fixed point
    disp_voxels: np.ndarray     # (3, X, Y, Z) float32: deformable part u, fixed-grid voxels
    affine_voxels: np.ndarray   # (4, 4): T, fixed voxel -> fixed voxel (identity without affine stage)
    affine_world: np.ndarray    # (4, 4): fixed world -> moving world of header + affine stages
    warped: np.ndarray          # (X, Y, Z) float32: moving image pulled back
    seconds: dict[str, float] = field(default_factory=dict)

    def warp(self, moving: np.ndarray, mode: str = "linear") -> np.ndarray:
        """Pull another array on the moving grid (labels: `mode="nearest"`) back to the fixed grid."""
        from ..grid import warp_volume

        return warp_volume(moving, torch.from_numpy(self.coords), mode)  # type: ignore[arg-type]


def compute_features(image: np.ndarray, cfg: RegistrationConfig, model: torch.nn.Module | None,
                     normalisation: dict[str, Any] | None, device: str | torch.device = "cpu") -> torch.Tensor:
    """The registration features `(1, C, D, H, W)` of one image for `cfg.features`."""
    parts = []
    if cfg.needs_network:
        if model is None:
            raise ValueError(f"features {cfg.features!r} need a network: pass a checkpoint (--ckpt), or use --features mind")
        parts.append(extract_features(model, image, normalisation, device, cfg.max_voxels)[None])
    if cfg.features in ("mind", "net+mind"):
        x = normalise_image(image, normalisation)[None, None].to(device)
        parts.append(mind_ssc(x, cfg.mind_radius, cfg.mind_dilation).cpu())
    if cfg.features == "intensity":
        parts.append(normalise_image(image, normalisation)[None, None])
    if cfg.features == "net+mind":
        parts[0] = parts[0] * cfg.net_weight
    return torch.cat(parts, 1).float()


def _pad(x: torch.Tensor, m: int) -> torch.Tensor:
    pads = [(-n) % m for n in x.shape[2:]]
    return F.pad(x, (0, pads[2], 0, pads[1], 0, pads[0]), mode="replicate")


def _mask_weight(mask: torch.Tensor | None, level: int) -> torch.Tensor | None:
    return None if mask is None else pool(mask, level)


def register_volumes(fixed: Volume, moving: Volume, cfg: RegistrationConfig | None = None,
                     model: torch.nn.Module | None = None, normalisation: dict[str, Any] | None = None,
                     fixed_mask: np.ndarray | None = None, moving_mask: Volume | None = None,
                     device: str | torch.device = "cpu") -> RegistrationResult:
    """Register `moving` to `fixed` (see the module docstring). Masks are optional ROIs
    (fixed mask on the fixed grid; moving mask as a Volume) that weight the similarity."""
    cfg = cfg or RegistrationConfig()
    secs: dict[str, float] = {}
    t0 = time.perf_counter()
    shape = fixed.data.shape
    H = voxel_map(fixed.affine, moving.affine)
    mov_hdr = resample_to_grid(np.nan_to_num(moving.data, nan=float(np.nanmin(moving.data))), moving.affine, shape, fixed.affine)
    secs["header"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ff = compute_features(fixed.data, cfg, model, normalisation, device)
    fm = compute_features(mov_hdr, cfg, model, normalisation, device)
    # One global scale so similarity and regulariser weights mean the same for every feature kind.
    scale = ff.var(dim=(2, 3, 4)).mean().sqrt().clamp(min=1e-6)
    ff, fm = ff / scale, fm / scale

    weight = None
    if fixed_mask is not None or moving_mask is not None:
        w = torch.ones((1, 1) + shape)
        if fixed_mask is not None:
            w = w * torch.as_tensor(np.asarray(fixed_mask) > 0, dtype=torch.float32)[None, None]
        if moving_mask is not None:
            mm = resample_to_grid(moving_mask.data.astype(np.float32), moving_mask.affine, shape, fixed.affine, "nearest")
            w = w * torch.as_tensor(mm > 0, dtype=torch.float32)[None, None]
        weight = w
    aff_lvl = cfg.affine_level_for(shape)
    adam_lvl = cfg.adam_level_for(shape)
    m = math.lcm(aff_lvl, cfg.grid_sp, adam_lvl)
    ffp, fmp = _pad(ff, m), _pad(fm, m)
    del ff, fm
    wp = None if weight is None else F.pad(weight, tuple(x for n in reversed(shape) for x in (0, (-n) % m)))
    pshape = ffp.shape[2:]
    # Pool once per level; later stages warp pooled features, never full-resolution ones.
    levels = sorted({aff_lvl, cfg.grid_sp, adam_lvl})
    pf = {lv: pool(ffp, lv) for lv in levels}
    pm = {lv: pool(fmp, lv) for lv in levels}
    pw = {lv: (None if wp is None else pool(wp, lv)) for lv in levels}
    del ffp, fmp
    secs["features"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    T = torch.eye(4, dtype=torch.float64)
    if cfg.affine and cfg.affine_iters > 0:
        T = affine_stage(pf[aff_lvl], pm[aff_lvl], aff_lvl, cfg.affine_iters, cfg.affine_lr, pw[aff_lvl])
        for lv in (cfg.grid_sp, adam_lvl):
            # T in the grid-point coordinates of level lv (point v sits at voxel v*lv + (lv-1)/2).
            s = torch.eye(4, dtype=torch.float64)
            s[:3, :3] *= lv
            s[:3, 3] = (lv - 1) / 2.0
            coords = apply_matrix(torch.linalg.inv(s) @ T @ s, voxel_grid(pm[lv].shape[2:], dtype=torch.float64)).float()
            # .contiguous(): grid_sample returns channels-last here; later stages expect the default layout.
            pm[lv] = sample_voxels(pm[lv], coords[None], "linear", padding="border").contiguous()
    secs["affine"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    fc, mc = pf[cfg.grid_sp], pm[cfg.grid_sp]
    if pw[cfg.grid_sp] is not None:
        # ConvexAdam-style ROI: features outside the masks are zeroed for the discrete stage.
        fc, mc = fc * pw[cfg.grid_sp], mc * pw[cfg.grid_sp]
    coarse = convex_stage(fc, mc, cfg.grid_sp, cfg.disp_hw, cfg.coupling, cfg.inverse_consistent, cfg.ic_iters)
    secs["convex"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    init = resample_field(coarse, cfg.grid_sp, pf[adam_lvl].shape[2:], adam_lvl)
    u_lvl = adam_stage(pf[adam_lvl], pm[adam_lvl], init, adam_lvl, cfg.adam_iters,
                       cfg.adam_lr, cfg.lambda_reg, cfg.smooth_passes, pw[adam_lvl])
    u = resample_field(u_lvl, adam_lvl, pshape, 1)[0, :, : shape[0], : shape[1], : shape[2]]
    secs["adam"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    g = voxel_grid(shape, dtype=torch.float64)
    inner = apply_matrix(T, g + u.permute(1, 2, 3, 0).double())
    coords = apply_matrix(H, inner)
    src = np.nan_to_num(moving.data, nan=float(np.nanmin(moving.data)))
    warped = sample_voxels(torch.from_numpy(np.ascontiguousarray(src)).float()[None, None], coords.float()[None])[0, 0]
    world_f = apply_matrix(fixed.affine, g)
    world_m = apply_matrix(moving.affine, coords)
    secs["warp"] = time.perf_counter() - t0
    Tw = np.asarray(fixed.affine) @ T.numpy() @ np.linalg.inv(fixed.affine)
    return RegistrationResult(
        coords=coords.float().numpy(),
        disp_world=(world_m - world_f).float().numpy(),
        disp_voxels=u.numpy().astype(np.float32),
        affine_voxels=T.numpy(),
        affine_world=Tw,
        warped=warped.numpy(),
        seconds=secs,
    )
