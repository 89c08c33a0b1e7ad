"""One view's appearance: sample all parameters, then apply them in a fixed order.

Order: GMM intensities -> texture x bias field (one smooth multiplicative field, built on the
texture's finest grid and up-sampled once) -> gamma -> k-space group (spikes, blur,
Gibbs, sharpening in one FFT) -> low resolution -> noise -> clip at 0 -> rescale to [0, 1].
Only the GMM step reads the labels; every later step maps intensities to intensities and the
labels are never written.

Randomness: every step draws its small parameters from its own child of the view's numpy
Generator (`rng.spawn`, in the fixed order of STEPS), so a new step or a new parameter in
one step never shifts the others; voxel noise (GMM, texture, noise) comes from the view's
torch.Generator, drawn in the order above.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ._ops import minmax_rescale
from .bias_field import bias_field, sample_bias_field
from .blur import sample_blur
from .config import AppearanceConfig
from .gamma import apply_gamma, sample_gamma
from .gibbs import sample_gibbs
from .gmm import apply_gmm, sample_gmm
from .kspace import apply_kspace
from .lowres import apply_lowres, sample_lowres
from .noise import apply_noise, sample_noise
from .params import (BiasParams, BlurParams, GammaParams, GibbsParams, GMMParams, LowresParams, NoiseParams,
                     SharpenParams, SpikesParams, StepParams, TextureParams)
from .sharpen import sample_sharpen
from .spikes import sample_spikes
from .texture import sample_texture, texture_field

__all__ = ["AppearanceParams", "sample_appearance", "apply_appearance", "STEPS"]

#: the steps in the order of their numpy streams (append new steps at the end)
STEPS = ("gmm", "texture", "bias", "spikes", "gamma", "blur", "gibbs", "sharpen", "lowres", "noise")

#: each step's parameter record
STEP_PARAMS: dict[str, type[StepParams]] = {
    "gmm": GMMParams, "texture": TextureParams, "bias": BiasParams, "spikes": SpikesParams, "gamma": GammaParams,
    "blur": BlurParams, "gibbs": GibbsParams, "sharpen": SharpenParams, "lowres": LowresParams, "noise": NoiseParams,
}


@dataclass(frozen=True)
class AppearanceParams:
    """The drawn parameters of one view; None = the step's coin said skip."""

    gmm: GMMParams
    texture: TextureParams
    bias: BiasParams | None = None
    spikes: SpikesParams | None = None
    gamma: GammaParams | None = None
    blur: BlurParams | None = None
    gibbs: GibbsParams | None = None
    sharpen: SharpenParams | None = None
    lowres: LowresParams | None = None
    noise: NoiseParams | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (what travels in a sample's meta): each step's dict, or None."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = None if v is None else v.to_json()
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "AppearanceParams":
        """Inverse of to_json; unknown or missing keys raise ValueError naming them."""
        if not isinstance(data, dict):
            raise ValueError(f"appearance parameters must be a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"appearance parameters have unknown keys {unknown}; known: {sorted(names)}")
        missing = [k for k in ("gmm", "texture") if k not in data]
        if missing:
            raise ValueError(f"appearance parameters lack {missing}")
        return cls(**{k: None if v is None else STEP_PARAMS[k].from_json(v) for k, v in data.items()})

    @property
    def fired(self) -> list[str]:
        """Names of the optional steps that fired."""
        return [s for s in STEPS[2:] if getattr(self, s) is not None]


def sample_appearance(cfg: AppearanceConfig, n_labels: int, size: int | tuple[int, int, int],
                      rng: np.random.Generator) -> AppearanceParams:
    """Draw one view's parameters for label ids 0..n_labels of a `size`^3 (or (D, H, W)) volume."""
    shape = (size,) * 3 if isinstance(size, int) else tuple(size)
    s = dict(zip(STEPS, rng.spawn(len(STEPS))))
    return AppearanceParams(
        gmm=sample_gmm(cfg, s["gmm"], n_labels),
        texture=sample_texture(cfg, s["texture"]),
        bias=sample_bias_field(cfg, s["bias"]),
        spikes=sample_spikes(cfg, s["spikes"], shape),  # type: ignore[arg-type]
        gamma=sample_gamma(cfg, s["gamma"]),
        blur=sample_blur(cfg, s["blur"]),
        gibbs=sample_gibbs(cfg, s["gibbs"]),
        sharpen=sample_sharpen(cfg, s["sharpen"]),
        lowres=sample_lowres(cfg, s["lowres"]),
        noise=sample_noise(cfg, s["noise"]),
    )


def _multiplicative_field(shape: tuple[int, int, int], params: AppearanceParams, generator: torch.Generator,
                          device: torch.device, mul_into: torch.Tensor | None = None) -> torch.Tensor:
    """Texture x bias field, multiplied on the texture's finest grid and up-sampled once
    (or multiplied into `mul_into` in place, which is returned)."""
    bias = params.bias
    factor = None
    if bias is not None and any(bias.coeffs):
        def factor(grid: tuple[int, int, int]) -> torch.Tensor:
            return bias_field(shape, bias, device, grid)
    return texture_field(shape, params.texture, generator, device, coarse_factor=factor, mul_into=mul_into)


class _Clock:
    """Accumulates CPU seconds per stage into a dict (None: no timing)."""

    def __init__(self, out: dict[str, float] | None) -> None:
        self.out = out
        self.t = time.process_time() if out is not None else 0.0

    def lap(self, name: str) -> None:
        if self.out is not None:
            now = time.process_time()
            self.out[name] = self.out.get(name, 0.0) + now - self.t
            self.t = now


def apply_appearance(labels: torch.Tensor, params: AppearanceParams, generator: torch.Generator,
                     timings: dict[str, float] | None = None, out: torch.Tensor | None = None,
                     check_labels: bool = True) -> torch.Tensor:
    """(D, H, W) integer labels -> float32 (D, H, W) in [0, 1] on the labels' device.

    Deterministic given (labels, params, generator state). `timings`, when given, receives
    CPU seconds per step (benchmarks). `out` (float32, contiguous, labels' shape), when given,
    receives the view (the same bytes; every step then works in place and full-size
    temporaries go through per-thread reused buffers). `check_labels` False skips the check
    that the ids lie in 0..n_labels (for callers that know it).
    """
    if labels.ndim != 3:
        raise ValueError(f"labels must be (D, H, W), got shape {tuple(labels.shape)}")
    clock = _Clock(timings)
    shape: tuple[int, int, int] = tuple(labels.shape)  # type: ignore[assignment]
    with torch.no_grad():
        x = apply_gmm(labels, params.gmm, generator, out=out, check=check_labels)
        clock.lap("gmm")
        # x is this function's own tensor from here on, so in-place updates are safe
        _multiplicative_field(shape, params, generator, x.device, mul_into=x)
        clock.lap("texture_bias")
        x = apply_gamma(x, params.gamma, inplace=True)
        clock.lap("gamma")
        x = apply_kspace(x, spikes=params.spikes, blur=params.blur, gibbs=params.gibbs,
                         sharpen=params.sharpen, inplace=True)
        clock.lap("kspace")
        x = apply_lowres(x, params.lowres, inplace=True)
        clock.lap("lowres")
        x = apply_noise(x, params.noise, generator, inplace=True)
        clock.lap("noise")
        x = minmax_rescale(x.clamp_(min=0.0), inplace=True)
        clock.lap("rescale")
    return x
