"""Config of the label-ensemble stage (the reference implementation's defaults, anatomix, for a 128^3 volume).

Lengths given in voxels are for a 128-voxel side and scale linearly with the volume side
(clamped to at least one voxel).
"""
from __future__ import annotations

from dataclasses import dataclass

from synthvox.core.configbase import require, require_range

__all__ = ["EnsembleConfig"]


@dataclass(frozen=True)
class EnsembleConfig:
    shapes: tuple[int, int] = (20, 39)              # templates per volume, inclusive
    scale: tuple[float, float] = (0.5, 1.5)         # per-axis output->template scale; shapes grow by 1/scale
    rotation_deg: float = 180.0                     # U(-r, r) per axis
    shear: float = 0.5                              # U(-s, s) per off-diagonal term
    translation: float = 5.0                        # +- voxels at 128 (scaled), jitter on the centre
    centre_range: tuple[float, float] = (0.1, 0.9)  # shape centres U(lo, hi) * side per axis
    flip_p: float = 0.5                             # per axis
    median_smoothing: bool = True                   # 3x3x3 majority/median of the label map
    foreground_p: float = 2.0 / 3.0                 # warped-sphere foreground mask
    foreground_radius: tuple[float, float] = (48.0, 71.0)   # voxels at 128
    foreground_offset: float = 32.0                 # +- voxels at 128
    foreground_warp_std: tuple[float, float] = (1.0, 5.0)   # voxels at 128
    envelope_p: float = 0.5                         # of masked volumes
    envelope_thickness: tuple[float, float] = (2.0, 4.0)    # voxels at 128, per side of the mask edge
    envelope_inside: bool = True                    # the band spans both sides of the edge (reference)
    interior_label: bool = True                     # uncovered mask interior gets its own label (reference)
    compact_labels: bool = True                     # renumber present ids to 1..K (order kept)

    def __post_init__(self) -> None:
        require_range("ensemble.shapes", self.shapes, lo=1)
        require_range("ensemble.scale", self.scale, lo=1e-3)
        require_range("ensemble.centre_range", self.centre_range, lo=0, hi=1)
        require_range("ensemble.foreground_radius", self.foreground_radius, lo=0)
        require_range("ensemble.foreground_warp_std", self.foreground_warp_std, lo=0)
        require_range("ensemble.envelope_thickness", self.envelope_thickness, lo=0)
        for name in ("flip_p", "foreground_p", "envelope_p"):
            v = getattr(self, name)
            require(0.0 <= v <= 1.0, f"ensemble.{name} = {v} must be a probability in [0, 1]")
        require(self.rotation_deg >= 0, f"ensemble.rotation_deg = {self.rotation_deg} must be >= 0")
        require(self.shear >= 0, f"ensemble.shear = {self.shear} must be >= 0")
        require(self.translation >= 0, f"ensemble.translation = {self.translation} must be >= 0")
        require(self.foreground_offset >= 0,
                f"ensemble.foreground_offset = {self.foreground_offset} must be >= 0")

    @property
    def max_labels(self) -> int:
        """The largest label id this config can produce (shapes + interior + envelope)."""
        return self.shapes[1] + 1 + int(self.interior_label)
