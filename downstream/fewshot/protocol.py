"""Few-shot protocols: the reference's (GPU work) and a CPU-sized one, recorded in every result."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

__all__ = ["FewshotProtocol", "PROTOCOLS", "get_protocol"]


@dataclass(frozen=True)
class FewshotProtocol:
    """How one few-shot run trains and predicts.

    name          "cpu" | "reference" (recorded as the record's `protocol`)
    spacing_mm    resample every volume to this isotropic spacing first (None: keep the grid)
    crop          training crop side (voxels); shrunk per axis to the (padded) volume
    batch         crops per step
    steps         optimiser steps (cosine schedule from lr to 0)
    lr            Adam learning rate
    val_every     steps between validation predictions (model selection)
    fg_fraction   fraction of crops centred on a foreground voxel
    overlap       sliding-window overlap at prediction (Gaussian blending)
    """

    name: str = "cpu"
    spacing_mm: float | None = 2.0
    crop: int = 64
    batch: int = 2
    steps: int = 300
    lr: float = 2e-4
    val_every: int = 50
    fg_fraction: float = 0.5
    overlap: float = 0.25

    def __post_init__(self) -> None:
        for field in ("crop", "batch", "steps", "val_every"):
            if int(getattr(self, field)) < 1:
                raise ValueError(f"protocol {self.name!r}: {field} = {getattr(self, field)} must be >= 1")
        if self.spacing_mm is not None and self.spacing_mm <= 0:
            raise ValueError(f"protocol {self.name!r}: spacing_mm = {self.spacing_mm} must be > 0 or None")
        if not 0.0 <= self.fg_fraction <= 1.0:
            raise ValueError(f"protocol {self.name!r}: fg_fraction = {self.fg_fraction} must be in [0, 1]")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"protocol {self.name!r}: overlap = {self.overlap} must be in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: cpu: fits a 2-core machine (~8 minutes a run at 2 mm with the reference UNet);
#: reference: the paper's protocol (128^3 crops, batch 4, 500 x 75 iterations) for a GPU.
PROTOCOLS: dict[str, FewshotProtocol] = {
    "cpu": FewshotProtocol("cpu", spacing_mm=2.0, crop=64, batch=2, steps=300, lr=2e-4, val_every=50),
    "reference": FewshotProtocol("reference", spacing_mm=None, crop=128, batch=4, steps=500 * 75, lr=2e-4, val_every=500),
}


def get_protocol(name: str, steps: int | None = None, **overrides: Any) -> FewshotProtocol:
    """The named protocol, with `steps` (and other fields) overridden when given."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown few-shot protocol {name!r}; choose one of {sorted(PROTOCOLS)}")
    p = PROTOCOLS[name]
    if steps is not None:
        overrides["steps"] = int(steps)
        overrides.setdefault("val_every", max(1, min(p.val_every, int(steps))))
    return replace(p, **overrides) if overrides else p
