"""Training-time augmentation as torch ops on the training device.

Spatial transforms (flips, a random affine) are shared by all views of a sample and its labels
(labels resampled nearest); intensity transforms (gamma, bias field, blur, noise) are drawn
independently per view. Small parameters come from a CPU `torch.Generator`, voxel noise from a
generator on the device. Views stay uint8 until they reach the device (`to_float_views`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch.nn import functional as F

from synthvox.core.configbase import require

__all__ = ["AugmentConfig", "validate_crop", "random_crop", "centre_crop", "augment_batch", "to_float_views", "minmax"]


@dataclass(frozen=True)
class AugmentConfig:
    enabled: bool = True
    flip_p: float = 0.5            # per axis, shared by views and labels
    affine_p: float = 0.5
    scale: float = 0.4             # zoom factor 1 + U(-scale, scale) per axis (reference 0.4)
    rotate_deg: float = 45.0       # rotation U(-r, r) per axis (reference 45)
    gamma_p: float = 0.5
    log_gamma: float = 0.4         # gamma = exp(U(-g, g)) (reference +-0.4)
    bias_p: float = 0.5
    bias_strength: float = 0.3     # multiplicative exp(field), field std on a 4^3 grid
    blur_p: float = 0.25
    blur_sigma: float = 1.0        # max Gaussian sigma, voxels
    noise_p: float = 0.5
    noise_std: float = 0.05        # max additive Gaussian noise std (intensity in [0, 1])

    def __post_init__(self) -> None:
        for name in ("flip_p", "affine_p", "gamma_p", "bias_p", "blur_p", "noise_p"):
            v = getattr(self, name)
            require(0.0 <= v <= 1.0, f"train.augment.{name} = {v} must be a probability in [0, 1]")
        for name in ("scale", "rotate_deg", "log_gamma", "bias_strength", "blur_sigma", "noise_std"):
            v = getattr(self, name)
            require(v >= 0.0, f"train.augment.{name} = {v} must be >= 0")
        require(self.scale < 1.0, f"train.augment.scale = {self.scale} must be < 1")


def validate_crop(crop: int | None, shape: tuple[int, ...], divisor: int, where: str = "the store") -> tuple[int, int, int]:
    """The crop shape for volumes of `shape` (D, H, W); raise ValueError when it cannot work."""
    shape = tuple(int(s) for s in shape)
    if crop is None:
        bad = [s for s in shape if s % divisor]
        if bad:
            raise ValueError(f"volumes of {where} are {shape}, not divisible by {divisor}; pass --crop C with C a multiple of {divisor}")
        return shape  # type: ignore[return-value]
    if crop % divisor:
        raise ValueError(f"--crop {crop} must be divisible by {divisor} (2**depth of the model)")
    if any(crop > s for s in shape):
        raise ValueError(f"--crop {crop} does not fit the volumes of {where}, which are {shape}; pass --crop <= {min(shape)}")
    return (crop, crop, crop)


def to_float_views(views: torch.Tensor) -> torch.Tensor:
    """uint8 views -> float32 in [0, 1] (on whatever device they are)."""
    return views.to(torch.float32) / 255.0


def minmax(x: torch.Tensor, dims: tuple[int, ...] = (-3, -2, -1)) -> torch.Tensor:
    """Min-max normalise to [0, 1] over `dims` (constant volumes become 0)."""
    lo = x.amin(dim=dims, keepdim=True)
    hi = x.amax(dim=dims, keepdim=True)
    return (x - lo) / (hi - lo).clamp(min=1e-6)


def random_crop(views: torch.Tensor, labels: torch.Tensor, crop: tuple[int, int, int], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random crop of `(B, V, D, H, W)` views and `(B, D, H, W)` labels, per sample."""
    if tuple(crop) == tuple(views.shape[-3:]):
        return views, labels
    return _crop(views, labels, crop, lambda s, c: int(torch.randint(0, s - c + 1, (1,), generator=generator)))


def centre_crop(views: torch.Tensor, labels: torch.Tensor, crop: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The centre crop of `(B, V, D, H, W)` views and `(B, D, H, W)` labels (validation)."""
    return _crop(views, labels, crop, lambda s, c: (s - c) // 2)


def _crop(views: torch.Tensor, labels: torch.Tensor, crop: tuple[int, int, int], offset: Callable[[int, int], int]
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop each sample at `offset(side, crop)` per axis (called in sample, then axis order)."""
    shape = views.shape[-3:]
    vs, ls = [], []
    for i in range(views.shape[0]):
        o = [offset(s, c) for s, c in zip(shape, crop)]
        sl = (slice(o[0], o[0] + crop[0]), slice(o[1], o[1] + crop[1]), slice(o[2], o[2] + crop[2]))
        vs.append(views[i][(slice(None),) + sl])
        ls.append(labels[i][sl])
    return torch.stack(vs), torch.stack(ls)


def _rand(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _rotation(ax: float, ay: float, az: float) -> torch.Tensor:
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    rx = torch.tensor([[1, 0, 0], [0, cx, -sx], [0, sx, cx]], dtype=torch.float32)
    ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=torch.float32)
    rz = torch.tensor([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]], dtype=torch.float32)
    return rz @ ry @ rx


def _spatial(views: torch.Tensor, labels: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One sample: views (V, D, H, W) float, labels (D, H, W) int -> same shapes."""
    flips = [d for d in range(3) if _rand(g, 0, 1) < cfg.flip_p]
    if flips:
        views = torch.flip(views, [d + 1 for d in flips])
        labels = torch.flip(labels, flips)
    if _rand(g, 0, 1) < cfg.affine_p and (cfg.scale > 0 or cfg.rotate_deg > 0):
        r = math.radians(cfg.rotate_deg)
        rot = _rotation(_rand(g, -r, r), _rand(g, -r, r), _rand(g, -r, r))
        zoom = torch.tensor([_rand(g, 1 - cfg.scale, 1 + cfg.scale) for _ in range(3)])
        # affine_grid maps output to input coordinates (x, y, z) = (W, H, D) axes, align_corners=False
        theta = torch.zeros(1, 3, 4)
        theta[0, :, :3] = rot @ torch.diag(1.0 / zoom)
        theta = theta.to(views.device)
        size = (1, 1) + tuple(views.shape[-3:])
        grid = F.affine_grid(theta, list(size), align_corners=False)
        views = F.grid_sample(views[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
        lab = F.grid_sample(labels[None, None].to(torch.float32), grid, mode="nearest", padding_mode="zeros", align_corners=False)
        labels = lab[0, 0].round().to(labels.dtype)
    return views, labels


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of one (D, H, W) volume."""
    radius = max(1, int(math.ceil(2.5 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    y = x[None, None]
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = k.numel()
        pad = [0] * 6
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        y = F.conv3d(F.pad(y, pad, mode="replicate"), k.view(shape))
    return y[0, 0]


def _intensity(v: torch.Tensor, cfg: AugmentConfig, g: torch.Generator, gd: torch.Generator) -> torch.Tensor:
    """One view (D, H, W) in [0, 1] -> augmented, min-max normalised."""
    if _rand(g, 0, 1) < cfg.bias_p and cfg.bias_strength > 0:
        coarse = torch.randn((1, 1, 4, 4, 4), generator=gd, device=gd.device) * cfg.bias_strength
        field = F.interpolate(coarse.to(v.device), size=tuple(v.shape), mode="trilinear", align_corners=False)[0, 0]
        v = v * torch.exp(field)
    if _rand(g, 0, 1) < cfg.blur_p and cfg.blur_sigma > 0:
        v = _blur(v, max(0.1, _rand(g, 0, cfg.blur_sigma)))
    if _rand(g, 0, 1) < cfg.gamma_p and cfg.log_gamma > 0:
        v = minmax(v).pow(math.exp(_rand(g, -cfg.log_gamma, cfg.log_gamma)))
    if _rand(g, 0, 1) < cfg.noise_p and cfg.noise_std > 0:
        std = _rand(g, 0, cfg.noise_std)
        v = v + std * torch.randn(v.shape, generator=gd, device=gd.device).to(v.device)
    return minmax(v)


def augment_batch(
    views: torch.Tensor, labels: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator, device_generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment `(B, V, D, H, W)` float views in [0, 1] and `(B, D, H, W)` labels.

    Returns min-max normalised views and the labels moved with them. With cfg.enabled false,
    views are only min-max normalised (the model's input normalisation).
    """
    if not cfg.enabled:
        return minmax(views), labels
    out_v, out_l = [], []
    for b in range(views.shape[0]):
        v, lab = _spatial(views[b], labels[b], cfg, generator)
        v = torch.stack([_intensity(v[i], cfg, generator, device_generator) for i in range(v.shape[0])])
        out_v.append(v)
        out_l.append(lab)
    return torch.stack(out_v), torch.stack(out_l)
