"""Registration settings: a frozen dataclass (the `eval:` config section's `registration` part)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from synthvox.core.configbase import require

__all__ = ["RegistrationConfig", "FEATURE_KINDS"]

FEATURE_KINDS = ("net", "mind", "net+mind", "intensity")


@dataclass(frozen=True)
class RegistrationConfig:
    """How `register_volumes` aligns a moving image to a fixed one (all in fixed-grid voxels).

    Pyramid and range: features are average-pooled to the finest level a stage uses right
    after extraction (MIND-SSC is computed on the image pooled by `mind_level`, half that
    level, when it is 4 or more: 160x192x160 at 1 mm); the affine stage runs on features
    average-pooled by `affine_level` (a power of two);
    the convex stage on a coarse grid of `grid_sp`-voxel cells searching +-`disp_hw` cells,
    so it recovers local displacements up to `grid_sp * disp_hw` voxels (16 by default, i.e.
    32 mm at 2 mm) beyond the affine; the Adam stage refines on features pooled by
    `adam_level` (2 up to ~1.4M voxels, 4 for 160x192x160) and can add a few voxels more. Larger offsets must come from the header or the
    affine stage. Defaults were tuned WITHOUT masks on synthetic pairs and Colin27 at 2 mm.

    Tuned for issue #17 on the peer benchmark's pairs 1-2 only (benchmarks/peer_pairs.py:
    Colin27 inverted contrast and MNI152 T1-like/T2-like, known warps of 4 and 10 voxels, 2 mm),
    pair 3 (MNI152 -> Colin27) and pair 4 (a 15 cm / 20 degree header) being checks:
    `mind_radius` 2 -> 1 (+0.03 Dice on every pair), `mind_dilation` 2 -> 1 (+0.02 on Colin27,
    -0.002 on MNI152), `smooth_passes` 2 -> 3 (+0.001); `affine_min_gain` 0.5: the affine fit
    removed 12-42% of the feature MSE on all six pairs and the synthetic test pair, none of which
    has an affine difference, and keeping it cost 0.001-0.02 Dice on each, so it is kept only
    when it removes over half (a gross misalignment). `init="auto"` leaves the header start when
    the foregrounds overlap with Dice < `init_overlap` (pair 4: 0.0 -> moments, 21 degrees, 149 mm).
    """

    features: Literal["net", "mind", "net+mind", "intensity"] = "net+mind"
    net_weight: float = 0.1          # scale of network features beside MIND in "net+mind"
    mind_radius: int = 1
    mind_dilation: int | tuple[int, ...] = 1   # a tuple: one MIND-SSC per dilation, concatenated
    mind_level: int | None = None     # MIND on the image pooled by this; None: half the finest stage level if >= 4, else 1
    init: str = "auto"                # start: auto | header | com | moments (see init.py)
    init_overlap: float = 0.5         # auto leaves the header start below this foreground Dice
    affine: bool = True
    affine_min_gain: float = 0.5      # keep the affine only if it removes this fraction of the feature MSE
    affine_level: int | None = None  # None: smallest power of two with <= 32^3 grid points
    affine_iters: int = 80
    affine_lr: float = 0.01
    grid_sp: int = 4                  # convex stage: cell size in voxels
    disp_hw: int = 4                  # convex stage: search radius in cells
    coupling: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
    inverse_consistent: bool = True
    ic_iters: int = 10
    adam_level: int | None = None     # Adam stage pooling; None: smallest >= 2 with <= 56^3 grid points
    adam_iters: int = 50
    adam_lr: float = 0.5
    adam_energy: float = 0.999        # Adam on the principal feature channels keeping this variance (1: all)
    lambda_reg: float = 1.0           # diffusion regulariser weight (grid-point units)
    diffeomorphic: bool = False       # Adam optimises a stationary velocity field, integrated by scaling and squaring
    squarings: int = 7                # scaling-and-squaring steps (the velocity is divided by 2**squarings)
    smooth_passes: int = 3            # 3x3x3 box smoothing passes on the displacement grid
    max_voxels: int | None = None     # whole-volume feature inference budget (None: default)
    # torch threads for the affine, convex and Adam stages (None: the caller's): their many
    # small kernels gained nothing from a 2nd thread on the 2-core CPU and cost 3-4x the
    # CPU-seconds when another job shares it. Feature extraction uses the caller's threads.
    opt_threads: int | None = 1

    def __post_init__(self) -> None:
        require(self.features in FEATURE_KINDS, f"registration.features = {self.features!r} is not one of {list(FEATURE_KINDS)}")
        for name in ("affine_level", "grid_sp", "adam_level", "mind_level"):
            v = getattr(self, name)
            if v is None and name in ("affine_level", "adam_level", "mind_level"):
                continue
            require(isinstance(v, int) and 1 <= v <= 16, f"registration.{name} = {v!r} must be an integer in 1..16")
        require(self.init in ("auto", "header", "com", "moments"),
                f"registration.init = {self.init!r} is not one of ['auto', 'header', 'com', 'moments']")
        require(0.0 <= self.init_overlap <= 1.0, f"registration.init_overlap = {self.init_overlap!r} must be in [0, 1]")
        require(0 <= self.squarings <= 16, f"registration.squarings = {self.squarings!r} must be in 0..16")
        require(1 <= self.disp_hw <= 12, f"registration.disp_hw = {self.disp_hw!r} must be in 1..12")
        require(self.opt_threads is None or (isinstance(self.opt_threads, int) and self.opt_threads >= 1),
                f"registration.opt_threads = {self.opt_threads!r} must be None or an integer >= 1")
        for name in ("affine_iters", "adam_iters", "ic_iters", "smooth_passes"):
            require(getattr(self, name) >= 0, f"registration.{name} = {getattr(self, name)!r} must be >= 0")
        require(0.0 < self.adam_energy <= 1.0, f"registration.adam_energy = {self.adam_energy!r} must be in (0, 1]")
        for name in ("net_weight", "affine_lr", "adam_lr", "lambda_reg"):
            require(getattr(self, name) >= 0, f"registration.{name} = {getattr(self, name)!r} must be >= 0")

    def affine_level_for(self, shape: tuple[int, ...]) -> int:
        """The affine stage's pooling for a volume of `shape`."""
        if self.affine_level is not None:
            return self.affine_level
        n = 1
        # Powers of two keep the levels' common multiple (the padding) and divisor (the
        # resolution features are pooled to) friendly to the other stages' levels.
        while float(np.prod(shape)) / n**3 > 32**3:
            n *= 2
        return n

    def adam_level_for(self, shape: tuple[int, ...]) -> int:
        """The Adam stage's pooling for a volume of `shape`."""
        if self.adam_level is not None:
            return self.adam_level
        n = 2
        while float(np.prod(shape)) / n**3 > 56**3:
            n += 1
        return n

    def mind_level_for(self, level: int) -> int:
        """The pooling MIND-SSC is computed at when features are wanted at `level` (divides it)."""
        if self.mind_level is not None:
            return math.gcd(self.mind_level, level)
        return level // 2 if level >= 4 else 1

    @property
    def mind_dilations(self) -> tuple[int, ...]:
        """The MIND-SSC dilations (one descriptor of 12 channels each)."""
        d = self.mind_dilation
        return tuple(d) if isinstance(d, (tuple, list)) else (d,)

    @property
    def needs_network(self) -> bool:
        """True when the features come from a network checkpoint."""
        return self.features in ("net", "net+mind")

    @property
    def max_convex_displacement(self) -> int:
        """The largest local displacement (voxels) the convex stage can find."""
        return self.grid_sp * self.disp_hw
