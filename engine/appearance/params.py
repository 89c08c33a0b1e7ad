"""Typed, frozen parameters of each appearance step (what `sample_*` draws and `apply_*` paints).

Each class reads and writes the JSON form that travels in a sample's meta: `to_json` gives the
same keys in the same order with lists for tuples (so a record's bytes do not depend on the
Python types), and `from_json` reads it back exactly, naming a missing or unknown key.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["StepParams", "GMMParams", "TextureParams", "BiasParams", "SpikesParams", "GammaParams",
           "BlurParams", "GibbsParams", "SharpenParams", "LowresParams", "NoiseParams"]

P = TypeVar("P", bound="StepParams")


def _listify(v: Any) -> Any:
    return [_listify(x) for x in v] if isinstance(v, (tuple, list)) else v


def _tuplify(v: Any) -> Any:
    return tuple(_tuplify(x) for x in v) if isinstance(v, (tuple, list)) else v


@dataclass(frozen=True)
class StepParams:
    """Base of the per-step parameter records."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (lists, floats, ints, bools) in field order."""
        return {f.name: _listify(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls: type[P], data: dict[str, Any]) -> P:
        """Inverse of `to_json`; a missing or unknown key raises ValueError naming it."""
        if not isinstance(data, dict):
            raise ValueError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [k for k in names if k not in data]
        unknown = sorted(set(data) - set(names))
        if missing or unknown:
            raise ValueError(f"{cls.__name__}: missing keys {missing}, unknown keys {unknown}; expected {names}")
        return cls(**{k: _tuplify(data[k]) for k in names})


@dataclass(frozen=True)
class GMMParams(StepParams):
    """One intensity mean and std per label id 0..n_labels (id 0 may be held at zero)."""
    means: tuple[float, ...]
    stds: tuple[float, ...]
    background_zero: bool


@dataclass(frozen=True)
class TextureParams(StepParams):
    """Multi-scale multiplicative noise: grid scales (coarse to fine in any order), their stds, amplitude."""
    scales: tuple[int, ...]
    stds: tuple[float, ...]
    amplitude: float


@dataclass(frozen=True)
class BiasParams(StepParams):
    """Coefficients of the smooth polynomial bias field (one per term)."""
    coeffs: tuple[float, ...]


@dataclass(frozen=True)
class SpikesParams(StepParams):
    """k-space spikes for a volume of `shape`: rfft indices, amplitudes and phases."""
    shape: tuple[int, int, int]
    locations: tuple[tuple[int, int, int], ...]
    amplitudes: tuple[float, ...]
    phases: tuple[float, ...]


@dataclass(frozen=True)
class GammaParams(StepParams):
    gamma: float


@dataclass(frozen=True)
class BlurParams(StepParams):
    """Gaussian sigma per axis (voxels)."""
    sigma: tuple[float, float, float]


@dataclass(frozen=True)
class GibbsParams(StepParams):
    """Truncation strength: the kept k-space radius is (1 - alpha) of the maximum."""
    alpha: float


@dataclass(frozen=True)
class SharpenParams(StepParams):
    """Unsharp masking: difference of Gaussians sigma1, sigma2 with weight alpha."""
    sigma1: float
    sigma2: float
    alpha: float


@dataclass(frozen=True)
class LowresParams(StepParams):
    """Down-sampling factor (>= 1) before up-sampling back."""
    factor: float


@dataclass(frozen=True)
class NoiseParams(StepParams):
    """Additive Gaussian noise std."""
    std: float
