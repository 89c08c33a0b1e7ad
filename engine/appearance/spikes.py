"""k-space spikes (herringbone artefact): a few bright k-space points = plane-wave stripes.

Each spike adds, at a random non-zero frequency (kd, kh, kw) of the rfft spectrum (kw in
1..W/2-1 so that its Hermitian twin is implied), the value amplitude * DC / 2 * exp(i phase):
a cosine stripe pattern of peak height amplitude * mean intensity. MONAI's
KSpaceSpikeNoise instead sets the log-magnitude to 2.5 x its mean, which makes the stripes
several times brighter than the image; the amplitude range here is a config value.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .config import AppearanceConfig
from .params import SpikesParams

__all__ = ["sample_spikes", "add_spikes", "is_neutral_spikes"]


def sample_spikes(cfg: AppearanceConfig, rng: np.random.Generator, shape: tuple[int, int, int]) -> SpikesParams | None:
    """Spike frequencies (integer rfft indices for `shape`), amplitudes and phases, or None (p = 1 - spikes_p)."""
    if not rng.random() < cfg.spikes_p:
        return None
    d, h, w = shape
    n = int(rng.integers(cfg.spikes_count[0], cfg.spikes_count[1] + 1))
    kw_hi = max(1, w // 2 - 1) if w >= 3 else 0
    locations = []
    for _ in range(n):
        loc = [int(rng.integers(0, d)), int(rng.integers(0, h)), int(rng.integers(min(1, kw_hi), kw_hi + 1))]
        if loc == [0, 0, 0]:
            loc[0] = 1 % d
        locations.append(loc)
    return SpikesParams(
        shape=(int(d), int(h), int(w)),
        locations=tuple((loc[0], loc[1], loc[2]) for loc in locations),
        amplitudes=tuple(float(a) for a in rng.uniform(cfg.spikes_amplitude[0], cfg.spikes_amplitude[1], n)),
        phases=tuple(float(p) for p in rng.uniform(0.0, 2.0 * math.pi, n)),
    )


def is_neutral_spikes(params: SpikesParams | None) -> bool:
    return params is None or not any(params.amplitudes)


def add_spikes(spectrum: torch.Tensor, params: SpikesParams, shape: tuple[int, int, int]) -> torch.Tensor:
    """Add the spikes to an rfft spectrum of a `shape` volume, in place; returns it."""
    if tuple(shape) != tuple(params.shape):
        raise ValueError(f"spike parameters were drawn for shape {list(params.shape)}, the volume is {list(shape)}")
    dc = spectrum[0, 0, 0].real
    for (kd, kh, kw), amp, phase in zip(params.locations, params.amplitudes, params.phases):
        spectrum[kd, kh, kw] += (0.5 * amp * dc) * complex(math.cos(phase), math.sin(phase))
    return spectrum
