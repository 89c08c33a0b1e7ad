"""Drawn parameters of one label ensemble (small, JSON-able) and the sampler that draws them.

Everything here comes from the numpy `rng` of the stage "ensemble"; voxel noise (the mask
warp) comes later from the torch generator of "ensemble.noise". Lengths are stored in voxels
of the volume they were drawn for (`size`), already scaled by size/128 and clamped.

Placement: the benchmark and procedural templates are tight crops without an anatomical
position, so each shape's centre is drawn uniformly in `centre_range` of the side per axis,
plus the reference's +-`translation` jitter. The reference pads each template to the volume
and applies its affine about the array corner with wrap-around, so a shape tiles the volume
as large lobes (copies cut by the border); its maps are dense because of that (background
0.18 of an unconstrained map). Here a shape is placed once, whole, where its centre falls,
and magnified by 1/scale per axis like the reference's output->template scale (mean 1.1x
per axis); with organ-sized templates (the built-in bank, generator version 2, or the
benchmark set) the 20-39 shapes leave as little background as the reference's (0.19; see
density.py), without copies of one shape under one label.

Foreground mask (the reference's; drawn with p 2/3): the uncovered interior gets a label of its
own and the envelope band (p 1/2 of masked maps) spans both sides of the mask edge, both as
in the reference: a body's tissue between organs is not the air around it, and a skin covers
the outermost organs as well as wrapping them (a band ~9% of the volume, the reference's
share; one-sided it is half that). With the built-in bank at 32^3 the masked / enveloped
maps keep 0.64 / 0.60 of the volume as background (the reference: 0.64 / 0.58); without
the interior label and with a one-sided band 0.68 / 0.63 (`interior_label` and
`envelope_inside` in the config switch them off).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Sequence

import numpy as np

from .config import EnsembleConfig

__all__ = ["ShapeParams", "ForegroundParams", "EnsembleParams", "sample_ensemble", "REF_SIDE"]

REF_SIDE = 128          # the side the config's voxel lengths refer to
_MIN_SHEAR_DET = 0.25   # shears closer to singular are redrawn (a flat, unbounded shape)
WARP_SCALES = (8.0, 16.0, 32.0)   # displacement scales of the mask warp, voxels at 128


@dataclass(frozen=True)
class ShapeParams:
    """One template placed in the volume; it gets label id (its position in the list) + 1."""
    template: int                          # bank index
    scale: tuple[float, float, float]      # per-axis magnification (before the size/128 factor)
    angles_deg: tuple[float, float, float] # rotations about axes 0, 1, 2 (R = R2 @ R1 @ R0)
    shear: tuple[float, ...]               # 6 off-diagonal terms (row-major, MONAI order)
    flip: tuple[bool, bool, bool]          # template axis flips
    centre: tuple[float, float, float]     # output voxel coordinates of the template centre


@dataclass(frozen=True)
class ForegroundParams:
    """The warped-sphere foreground mask (and optional envelope shell), voxels at `size`."""
    centre: tuple[float, float, float]
    radius: float
    warp_scales: tuple[float, ...]         # grid spacings of the displacement noise
    warp_std: tuple[float, ...]            # std of each scale's noise
    envelope: bool
    envelope_thickness: float              # band width outside the mask edge
    interior: bool = False                 # mask interior that no shape covers gets its own label
    envelope_inner: float = 0.0            # band width inside the mask edge (0: outside only)


@dataclass(frozen=True)
class EnsembleParams:
    """Everything `apply_ensemble` needs besides the bank and the noise generator."""
    size: int
    shapes: tuple[ShapeParams, ...]
    foreground: ForegroundParams | None
    smoothing: bool
    compact: bool
    max_labels: int
    template_shapes: tuple[tuple[int, int, int], ...] | None = field(default=None)

    @property
    def n_shapes(self) -> int:
        return len(self.shapes)

    @property
    def interior_label(self) -> int | None:
        """The id of the uncovered mask interior before compaction (one above the last shape),
        or None."""
        if self.foreground is not None and self.foreground.interior:
            return self.n_shapes + 1
        return None

    @property
    def envelope_label(self) -> int | None:
        """The envelope's id before compaction (above the last shape and the interior), or None."""
        fg = self.foreground
        if fg is not None and fg.envelope:
            return self.n_shapes + 1 + int(fg.interior)
        return None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (lists, floats, ints, bools) that `from_json` reads back exactly."""
        return _plain(self)   # = _listify(asdict(self)), without asdict's deep copies (~5x faster)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "EnsembleParams":
        """Inverse of `to_json`; raises ValueError naming a missing key."""
        try:
            shapes = tuple(
                ShapeParams(
                    template=int(s["template"]),
                    scale=_tup(s["scale"], float),
                    angles_deg=_tup(s["angles_deg"], float),
                    shear=_tup(s["shear"], float),
                    flip=_tup(s["flip"], bool),
                    centre=_tup(s["centre"], float),
                )
                for s in d["shapes"]
            )
            fg = d["foreground"]
            foreground = None if fg is None else ForegroundParams(
                centre=_tup(fg["centre"], float),
                radius=float(fg["radius"]),
                warp_scales=_tup(fg["warp_scales"], float),
                warp_std=_tup(fg["warp_std"], float),
                envelope=bool(fg["envelope"]),
                envelope_thickness=float(fg["envelope_thickness"]),
                # records written before these keys existed meant neither (same map re-rendered)
                interior=bool(fg.get("interior", False)),
                envelope_inner=float(fg.get("envelope_inner", 0.0)),
            )
            ts = d.get("template_shapes")
            return cls(
                size=int(d["size"]),
                shapes=shapes,
                foreground=foreground,
                smoothing=bool(d["smoothing"]),
                compact=bool(d["compact"]),
                max_labels=int(d["max_labels"]),
                template_shapes=None if ts is None else tuple(_tup(t, int) for t in ts),
            )
        except KeyError as e:
            raise ValueError(f"ensemble params JSON is missing key {e}; was it written by EnsembleParams.to_json?") from None


def _tup(v: Sequence[Any], kind: type) -> tuple:
    return tuple(kind(x) for x in v)


def _plain(v: Any) -> Any:
    """Dataclasses -> dicts (field order), tuples/lists -> lists, numpy scalars -> Python."""
    if is_dataclass(v) and not isinstance(v, type):
        return {f.name: _plain(getattr(v, f.name)) for f in fields(v)}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return _listify(v)


def _listify(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _listify(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_listify(x) for x in v]
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def _length(v: float, size: int) -> float:
    """A length given in voxels at 128, scaled to `size`, at least one voxel."""
    return max(1.0, float(v) * size / REF_SIDE)


def _shear_matrix(s: Sequence[float]) -> np.ndarray:
    return np.array([[1.0, s[0], s[1]], [s[2], 1.0, s[3]], [s[4], s[5], 1.0]])


def _draw_shape(cfg: EnsembleConfig, size: int, template: int, rng: np.random.Generator) -> ShapeParams:
    # the reference's affine maps output to template coordinates with this per-axis scale, so
    # a shape is magnified by its inverse (0.67-2x, mean 1.1x per axis, 1.33x in volume)
    scale = 1.0 / rng.uniform(cfg.scale[0], cfg.scale[1], 3)
    angles = rng.uniform(-cfg.rotation_deg, cfg.rotation_deg, 3)
    shear = rng.uniform(-cfg.shear, cfg.shear, 6)
    for _ in range(8):
        if abs(np.linalg.det(_shear_matrix(shear))) >= _MIN_SHEAR_DET:
            break
        shear = rng.uniform(-cfg.shear, cfg.shear, 6)
    else:
        shear = np.zeros(6)
    flip = rng.random(3) < cfg.flip_p
    lo, hi = cfg.centre_range
    jitter = cfg.translation * size / REF_SIDE
    centre = rng.uniform(lo, hi, 3) * size - 0.5 + rng.uniform(-jitter, jitter, 3)
    return ShapeParams(
        template=int(template),
        scale=_tup(scale, float),
        angles_deg=_tup(angles, float),
        shear=_tup(shear, float),
        flip=_tup(flip, bool),
        centre=_tup(centre, float),
    )


def sample_ensemble(cfg: EnsembleConfig, size: int, bank_shapes: Sequence[tuple[int, int, int]] | int,
                    rng: np.random.Generator) -> EnsembleParams:
    """Draw the parameters of one label ensemble for a `size`^3 volume.

    `bank_shapes` is the bank's template count or the list of its template shapes (then the
    drawn templates' shapes are recorded and `apply_ensemble` checks them against the bank).
    """
    if isinstance(bank_shapes, (int, np.integer)):
        n_bank, shapes_list = int(bank_shapes), None
    else:
        shapes_list = [tuple(int(x) for x in s) for s in bank_shapes]
        n_bank = len(shapes_list)
    if n_bank < 1:
        raise ValueError("the template bank is empty; build one with `synthvox templates procedural` or pass another bank")
    if size < 1:
        raise ValueError(f"size = {size} must be >= 1")
    n = int(rng.integers(cfg.shapes[0], cfg.shapes[1] + 1))
    ids = rng.integers(0, n_bank, n)
    shapes = tuple(_draw_shape(cfg, size, int(t), rng) for t in ids)

    foreground = None
    if rng.random() < cfg.foreground_p:
        off = cfg.foreground_offset * size / REF_SIDE
        centre = (size - 1) / 2.0 + rng.uniform(-off, off, 3)
        radius = _length(rng.uniform(*cfg.foreground_radius), size)
        std = rng.uniform(cfg.foreground_warp_std[0], cfg.foreground_warp_std[1], len(WARP_SCALES)) * size / REF_SIDE
        envelope = bool(rng.random() < cfg.envelope_p)
        thick = float(rng.uniform(*cfg.envelope_thickness)) * size / REF_SIDE
        # at least one voxel across: one-sided bands >= 1, two-sided >= 0.5 per side (f is a
        # continuous distance, so a 1.5-voxel band at 32^3 keeps the 128^3 band's volume share)
        thick = max(0.5 if cfg.envelope_inside else 1.0, thick)
        foreground = ForegroundParams(
            centre=_tup(centre, float),
            radius=float(radius),
            warp_scales=tuple(_length(s, size) for s in WARP_SCALES),
            warp_std=_tup(std, float),
            envelope=envelope,
            envelope_thickness=thick,
            interior=bool(cfg.interior_label),
            envelope_inner=thick if cfg.envelope_inside else 0.0,
        )
    return EnsembleParams(
        size=int(size),
        shapes=shapes,
        foreground=foreground,
        smoothing=bool(cfg.median_smoothing),
        compact=bool(cfg.compact_labels),
        max_labels=int(cfg.max_labels),
        template_shapes=None if shapes_list is None else tuple(shapes_list[t] for t in ids),
    )


def shape_matrix(s: ShapeParams, size: int) -> np.ndarray:
    """The 3x3 linear map template voxel -> output voxel of shape `s` (float64).

    A = R2 R1 R0 Shear diag(scale * size/128) diag(flip signs): flip, scale and shear in the
    template frame, then rotate.
    """
    rad = np.deg2rad(np.asarray(s.angles_deg, dtype=np.float64))
    a0, a1, a2 = rad.tolist()
    c0, c1, c2 = math.cos(a0), math.cos(a1), math.cos(a2)
    s0, s1, s2 = math.sin(a0), math.sin(a1), math.sin(a2)
    # rotations about axes 0, 1, 2 (literal matrices: the same values as filling np.eye)
    r0 = np.array([[1.0, 0.0, 0.0], [0.0, c0, -s0], [0.0, s0, c0]])
    r1 = np.array([[c1, 0.0, -s1], [0.0, 1.0, 0.0], [s1, 0.0, c1]])
    r2 = np.array([[c2, -s2, 0.0], [s2, c2, 0.0], [0.0, 0.0, 1.0]])
    rot = r2 @ r1 @ r0
    scale = np.asarray(s.scale, dtype=np.float64) * (size / REF_SIDE)
    signs = np.where(np.asarray(s.flip), -1.0, 1.0)
    return rot @ _shear_matrix(s.shear) @ np.diag(scale * signs)
