"""World-correct registration of two volumes: start (header/com/moments) -> affine -> convex -> Adam.

Everything happens in the fixed image's voxel grid. The moving image is first resampled into
it through both affines (the header alignment); the affine stage finds a voxel map `T` of the
fixed grid; the deformable stages find `u` (fixed-grid voxels). The final pull-back is

    moving voxel = H @ T @ (i + u(i)),      H = inv(A_moving) @ W0 @ A_fixed,

with W0 the start's world map (identity for the header start), applied once to the original moving image (no double interpolation); in world terms the
displacement is `A_moving @ (moving voxel) - A_fixed @ i` (RAS mm). Folding and SDlogJ are
those of `i -> i + u(i)` (the affine part has a constant Jacobian).
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..features import extract_features, normalise_image
from ..grid import apply_matrix, resample_to_grid, sample_voxels, voxel_grid, voxel_map, warp_volume
from ..io import Volume
from ..mind import mind_ssc
from .config import RegistrationConfig
from .convex import convex_stage
from .fields import pool, resample_field
from .init import initial_world
from .instance import adam_stage, affine_stage, integrate_velocity

__all__ = ["RegistrationResult", "register_volumes", "compute_features", "pooled_features"]


@dataclass
class RegistrationResult:
    """What `register_volumes` returns (arrays on the fixed grid `(X, Y, Z)`)."""

    coords: np.ndarray          # (X, Y, Z, 3) float32: moving voxel coordinates pulled back
    disp_world: np.ndarray      # (X, Y, Z, 3) float32: RAS mm, moving point - fixed point
    disp_voxels: np.ndarray     # (3, X, Y, Z) float32: deformable part u, fixed-grid voxels
    affine_voxels: np.ndarray   # (4, 4): T, fixed voxel -> fixed voxel (identity without affine stage)
    affine_world: np.ndarray    # (4, 4): fixed world -> moving world of header + affine stages
    warped: np.ndarray          # (X, Y, Z) float32: moving image pulled back
    info: dict[str, Any] = field(default_factory=dict)           # start, affine decision, diffeomorphic
    seconds: dict[str, float] = field(default_factory=dict)      # wall seconds per stage
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # process CPU seconds per stage (all threads)

    def warp(self, moving: np.ndarray, mode: str = "linear") -> np.ndarray:
        """Pull another array on the moving grid (labels: `mode="nearest"`) back to the fixed grid."""
        return warp_volume(moving, torch.from_numpy(self.coords), mode)  # type: ignore[arg-type]


def compute_features(image: np.ndarray, cfg: RegistrationConfig, model: torch.nn.Module | None,
                     normalisation: dict[str, Any] | None, device: str | torch.device = "cpu") -> torch.Tensor:
    """The registration features `(1, C, D, H, W)` of one image for `cfg.features` (full resolution)."""
    parts = []
    if cfg.needs_network:
        parts.append(_network_features(image, cfg, model, normalisation, device))
    if cfg.features in ("mind", "net+mind"):
        x = normalise_image(image, normalisation)[None, None].to(device)
        parts.append(torch.cat([mind_ssc(x, cfg.mind_radius, d) for d in cfg.mind_dilations], 1).cpu())
    if cfg.features == "intensity":
        parts.append(normalise_image(image, normalisation)[None, None])
    if cfg.features == "net+mind":
        parts[0] = parts[0] * cfg.net_weight
    return torch.cat(parts, 1).float()


def _network_features(image: np.ndarray, cfg: RegistrationConfig, model: torch.nn.Module | None,
                      normalisation: dict[str, Any] | None, device: str | torch.device) -> torch.Tensor:
    if model is None:
        raise ValueError(f"features {cfg.features!r} need a network: pass a checkpoint (--ckpt), or use --features mind")
    return extract_features(model, image, normalisation, device, cfg.max_voxels)[None]


def pooled_features(image: np.ndarray, cfg: RegistrationConfig, model: torch.nn.Module | None,
                    normalisation: dict[str, Any] | None, multiple: int, level: int,
                    device: str | torch.device = "cpu") -> tuple[torch.Tensor, float]:
    """`compute_features` padded (edge values) to a multiple of `multiple` and average-pooled by
    `level`, without ever holding all channels at full resolution; and the mean over channels
    of the full-resolution variances (the pipeline's global feature scale, squared).

    MIND-SSC is computed on the image pooled by `cfg.mind_level_for(level)` (radius and
    dilation divided by it), which equals the full-resolution descriptor pooled when that is 1.
    """
    parts, variances = [], []

    def add(x: torch.Tensor, weight: float = 1.0, pooled: int = 1) -> None:
        # Variance of the unpadded tensor (as the full-resolution pipeline defines the scale).
        variances.append(x.var(dim=(2, 3, 4)) * weight**2)
        x = _pad(x, multiple // pooled)
        parts.append(pool(x, level // pooled) * weight if weight != 1.0 else pool(x, level // pooled))

    if cfg.needs_network:
        add(_network_features(image, cfg, model, normalisation, device), cfg.net_weight if cfg.features == "net+mind" else 1.0)
    if cfg.features in ("mind", "net+mind"):
        ml = cfg.mind_level_for(level)
        x = normalise_image(image, normalisation)[None, None].to(device)
        if ml == 1:
            add(torch.cat([mind_ssc(x, cfg.mind_radius, d) for d in cfg.mind_dilations], 1).cpu().float())
        else:
            x = pool(_pad(x, multiple), ml)
            add(torch.cat([mind_ssc(x, max(1, cfg.mind_radius // ml), max(1, d // ml)) for d in cfg.mind_dilations], 1).cpu().float(),
                pooled=ml)
    if cfg.features == "intensity":
        add(normalise_image(image, normalisation)[None, None])
    return torch.cat(parts, 1).float(), float(torch.cat(variances, 1).mean())


class _Clock:
    """Wall and process-CPU seconds per stage."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def start(self) -> None:
        self._w, self._c = time.perf_counter(), time.process_time()

    def stop(self, name: str) -> None:
        self.wall[name] = time.perf_counter() - self._w
        self.cpu[name] = time.process_time() - self._c


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `n` inside the block (None: unchanged), restored after."""
    old = torch.get_num_threads()
    if n is not None and n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def _pad(x: torch.Tensor, m: int) -> torch.Tensor:
    pads = [(-n) % m for n in x.shape[2:]]
    return F.pad(x, (0, pads[2], 0, pads[1], 0, pads[0]), mode="replicate")


def _level_mse(fix: torch.Tensor, mov: torch.Tensor, T: torch.Tensor, level: int, weight: torch.Tensor | None) -> float:
    """Feature MSE at pooling `level` after pulling `mov` through the voxel map `T` (full-resolution voxels)."""
    s = torch.eye(4, dtype=torch.float64)
    s[:3, :3] *= level
    s[:3, 3] = (level - 1) / 2.0
    coords = apply_matrix(torch.linalg.inv(s) @ T @ s, voxel_grid(mov.shape[2:], dtype=torch.float64)).float()
    warped = sample_voxels(mov, coords[None], "linear", padding="border")
    err = (warped - fix).pow(2).mean(1, keepdim=True)
    if weight is None:
        return float(err.mean())
    return float((err * weight).sum() / weight.sum().clamp(min=1.0))


def register_volumes(fixed: Volume, moving: Volume, cfg: RegistrationConfig | None = None,
                     model: torch.nn.Module | None = None, normalisation: dict[str, Any] | None = None,
                     fixed_mask: np.ndarray | None = None, moving_mask: Volume | None = None,
                     device: str | torch.device = "cpu") -> RegistrationResult:
    """Register `moving` to `fixed` (see the module docstring). Masks are optional ROIs
    (fixed mask on the fixed grid; moving mask as a Volume) that weight the similarity."""
    cfg = cfg or RegistrationConfig()
    clock = _Clock()
    clock.start()
    shape = fixed.data.shape
    start = initial_world(fixed, moving, cfg.init, fixed_mask, moving_mask, cfg.init_overlap)
    H = voxel_map(fixed.affine, moving.affine, start.world)
    mov_hdr = resample_to_grid(np.nan_to_num(moving.data, nan=float(np.nanmin(moving.data))), moving.affine, shape,
                               fixed.affine, world=start.world)
    info: dict[str, Any] = {"init": start.describe(), "diffeomorphic": cfg.diffeomorphic}
    clock.stop("header")

    clock.start()
    aff_lvl = cfg.affine_level_for(shape)
    adam_lvl = cfg.adam_level_for(shape)
    m = math.lcm(aff_lvl, cfg.grid_sp, adam_lvl)
    base = math.gcd(aff_lvl, cfg.grid_sp, adam_lvl)
    # Features are pooled to the finest level any stage uses as soon as they exist, never
    # concatenated or padded at full resolution (memory and time).
    ffp, var_f = pooled_features(fixed.data, cfg, model, normalisation, m, base, device)
    fmp, _ = pooled_features(mov_hdr, cfg, model, normalisation, m, base, device)
    # One global scale so similarity and regulariser weights mean the same for every feature kind.
    scale = max(math.sqrt(var_f), 1e-6)
    ffp, fmp = ffp / scale, fmp / scale

    weight = None
    if fixed_mask is not None or moving_mask is not None:
        w = torch.ones((1, 1) + shape)
        if fixed_mask is not None:
            w = w * torch.as_tensor(np.asarray(fixed_mask) > 0, dtype=torch.float32)[None, None]
        if moving_mask is not None:
            mm = resample_to_grid(moving_mask.data.astype(np.float32), moving_mask.affine, shape, fixed.affine, "nearest",
                                  world=start.world)
            w = w * torch.as_tensor(mm > 0, dtype=torch.float32)[None, None]
        weight = w
    wp = None if weight is None else F.pad(weight, tuple(x for n in reversed(shape) for x in (0, (-n) % m)))
    pshape = tuple(n * base for n in ffp.shape[2:])
    # Pool once per level; later stages warp pooled features, never full-resolution ones.
    levels = sorted({aff_lvl, cfg.grid_sp, adam_lvl})
    pf = {lv: pool(ffp, lv // base) for lv in levels}
    pm = {lv: pool(fmp, lv // base) for lv in levels}
    pw = {lv: (None if wp is None else pool(wp, lv)) for lv in levels}
    del ffp, fmp
    clock.stop("features")

    clock.start()
    T = torch.eye(4, dtype=torch.float64)
    info["affine"] = {"ran": False, "kept": False}
    if cfg.affine and cfg.affine_iters > 0:
        with _threads(cfg.opt_threads):
            T_fit = affine_stage(pf[aff_lvl], pm[aff_lvl], aff_lvl, cfg.affine_iters, cfg.affine_lr, pw[aff_lvl])
            # Kept only where it lowers the feature dissimilarity clearly: on pairs without an
            # affine difference it fits ~1% scalings that cost the deformable stages accuracy.
            before = _level_mse(pf[aff_lvl], pm[aff_lvl], torch.eye(4, dtype=torch.float64), aff_lvl, pw[aff_lvl])
            after = _level_mse(pf[aff_lvl], pm[aff_lvl], T_fit, aff_lvl, pw[aff_lvl])
        gain = (before - after) / max(before, 1e-12)
        keep = gain >= cfg.affine_min_gain
        info["affine"] = {"ran": True, "kept": bool(keep), "mse_before": before, "mse_after": after, "gain": gain,
                          "min_gain": cfg.affine_min_gain, "fitted_voxels": T_fit.tolist()}
        if keep:
            T = T_fit
    if not torch.equal(T, torch.eye(4, dtype=torch.float64)):
        for lv in (cfg.grid_sp, adam_lvl):
            # T in the grid-point coordinates of level lv (point v sits at voxel v*lv + (lv-1)/2).
            s = torch.eye(4, dtype=torch.float64)
            s[:3, :3] *= lv
            s[:3, 3] = (lv - 1) / 2.0
            coords = apply_matrix(torch.linalg.inv(s) @ T @ s, voxel_grid(pm[lv].shape[2:], dtype=torch.float64)).float()
            # .contiguous(): grid_sample returns channels-last here; later stages expect the default layout.
            pm[lv] = sample_voxels(pm[lv], coords[None], "linear", padding="border").contiguous()
    clock.stop("affine")

    clock.start()
    fc, mc = pf[cfg.grid_sp], pm[cfg.grid_sp]
    if pw[cfg.grid_sp] is not None:
        # ConvexAdam-style ROI: features outside the masks are zeroed for the discrete stage.
        fc, mc = fc * pw[cfg.grid_sp], mc * pw[cfg.grid_sp]
    with _threads(cfg.opt_threads):
        coarse = convex_stage(fc, mc, cfg.grid_sp, cfg.disp_hw, cfg.coupling, cfg.inverse_consistent, cfg.ic_iters)
    clock.stop("convex")

    clock.start()
    init = resample_field(coarse, cfg.grid_sp, pf[adam_lvl].shape[2:], adam_lvl)
    with _threads(cfg.opt_threads):
        u_lvl = adam_stage(pf[adam_lvl], pm[adam_lvl], init, adam_lvl, cfg.adam_iters,
                           cfg.adam_lr, cfg.lambda_reg, cfg.smooth_passes, pw[adam_lvl], cfg.adam_energy,
                           cfg.squarings if cfg.diffeomorphic else None)
    u = resample_field(u_lvl, adam_lvl, pshape, 1)
    if cfg.diffeomorphic:
        # Integrated at full resolution, with enough steps that each is under half a voxel:
        # every step is then invertible and so is their composition (no folding).
        k = max(cfg.squarings, math.ceil(math.log2(max(float(u.abs().max()), 1e-6) / 0.5)))
        u = integrate_velocity(u, k)
        info["squarings"] = k
    u = u[0, :, : shape[0], : shape[1], : shape[2]]
    clock.stop("adam")

    clock.start()
    g = voxel_grid(shape, dtype=torch.float64)
    inner = apply_matrix(T, g + u.permute(1, 2, 3, 0).double())
    coords = apply_matrix(H, inner)
    src = np.nan_to_num(moving.data, nan=float(np.nanmin(moving.data)))
    warped = sample_voxels(torch.from_numpy(np.ascontiguousarray(src)).float()[None, None], coords.float()[None])[0, 0]
    world_f = apply_matrix(fixed.affine, g)
    world_m = apply_matrix(moving.affine, coords)
    clock.stop("warp")
    Tw = np.asarray(fixed.affine) @ T.numpy() @ np.linalg.inv(fixed.affine)
    return RegistrationResult(
        coords=coords.float().numpy(),
        disp_world=(world_m - world_f).float().numpy(),
        disp_voxels=u.numpy().astype(np.float32),
        affine_voxels=T.numpy(),
        affine_world=Tw,
        warped=warped.numpy(),
        info=info,
        seconds=clock.wall,
        cpu_seconds=clock.cpu,
    )
