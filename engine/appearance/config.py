"""Config of the appearance stage: one random look per view (reference defaults, 128^3).

Probabilities are per view. Lengths (texture scales) are given for a 128-voxel side and
scale with the volume, clamped to >= 1 voxel; sigmas of blur and sharpening are in voxels.
"""
from __future__ import annotations

from dataclasses import dataclass

from synthvox.core.configbase import require, require_range

__all__ = ["AppearanceConfig"]


@dataclass(frozen=True)
class AppearanceConfig:
    mean: tuple[float, float] = (25.0, 255.0)       # per-label GMM mean (0..255 scale)
    std: tuple[float, float] = (5.0, 20.0)          # per-label GMM std
    background_zero_p: float = 0.25                 # background stays 0
    texture_std: tuple[float, float] = (0.0, 5.0)   # per-scale std of the coarse grids
    texture_amplitude: float = 0.02                 # image * (1 + a * noise)
    texture_scales: tuple[int, ...] = (4, 8, 16, 32)  # grid spacings, voxels at 128
    bias_p: float = 0.98
    bias_max: float = 0.075                         # Legendre coefficients U(-max, max)
    spikes_p: float = 0.2
    spikes_count: tuple[int, int] = (1, 3)          # spikes per view, inclusive
    spikes_amplitude: tuple[float, float] = (0.02, 0.15)  # stripe height / mean intensity (0.5 hides the anatomy)
    gamma_p: float = 0.5
    gamma: tuple[float, float] = (0.5, 2.0)
    blur_p: float = 0.5
    blur_sigma_max: float = 0.33                    # voxels, per axis U(0, max)
    gibbs_p: float = 0.5
    gibbs_alpha_max: float = 0.33
    sharpen_p: float = 0.25
    sharpen_sigma1: tuple[float, float] = (0.5, 1.0)  # voxels; sigma2 U(0.5, sigma1)
    sharpen_alpha: tuple[float, float] = (10.0, 30.0)
    lowres_p: float = 0.33
    lowres_factor: tuple[float, float] = (1.0, 4.0)
    noise_p: float = 0.5
    noise_std: tuple[float, float] = (0.0, 0.05)    # on the [0, 1] scale

    def __post_init__(self) -> None:
        require_range("appearance.mean", self.mean, lo=0)
        require_range("appearance.std", self.std, lo=0)
        require_range("appearance.texture_std", self.texture_std, lo=0)
        require_range("appearance.spikes_count", self.spikes_count, lo=1)
        require_range("appearance.spikes_amplitude", self.spikes_amplitude, lo=0)
        require_range("appearance.gamma", self.gamma, lo=1e-3)
        require_range("appearance.sharpen_sigma1", self.sharpen_sigma1, lo=0, hi=8)
        require_range("appearance.sharpen_alpha", self.sharpen_alpha, lo=0)
        require_range("appearance.lowres_factor", self.lowres_factor, lo=1.0)
        require_range("appearance.noise_std", self.noise_std, lo=0)
        for name in ("background_zero_p", "bias_p", "spikes_p", "gamma_p", "blur_p", "gibbs_p",
                     "sharpen_p", "lowres_p", "noise_p"):
            v = getattr(self, name)
            require(0.0 <= v <= 1.0, f"appearance.{name} = {v} must be a probability in [0, 1]")
        for name, hi in (("texture_amplitude", None), ("bias_max", None), ("blur_sigma_max", 8.0), ("gibbs_alpha_max", 1.0)):
            v = getattr(self, name)
            require(v >= 0 and (hi is None or v <= hi),
                    f"appearance.{name} = {v} must be >= 0" + (f" and <= {hi}" if hi is not None else ""))
        require(len(self.texture_scales) >= 1 and all(s >= 1 for s in self.texture_scales),
                f"appearance.texture_scales = {list(self.texture_scales)} must be positive integers")
