"""Procedural shape families that need no data, sized for a 128^3 volume.

Families (share of a bank): deformed ellipsoids (32 %), smooth blobs (28 %), hollow shells,
some cut open or perforated (10 %), single tubes (8 %), branching vessel trees (10 %) and
long curved structures (arcs and helices, 12 %). Solid shapes have a log-uniform base side
of 30-150 voxels (times a per-axis aspect 0.6-1.4, at most MAX_SIDE = 170): organ-sized, like
CT organ masks at ~1.5 mm (kidney ~60, liver ~130) and like the benchmark template set.

Calibration (generator version 2): the sizes and shares were chosen so that label ensembles
drawn from the built-in bank (384 templates, seed 0) are as dense as the reference's on the
benchmark template set (engine/ensemble/density.py holds the targets; benchmarks/RESULTS.md,
"Label density", the measurements): version 1 (sides 12-90, 52 % solid shapes, mean template
34k voxels) left 0.73 of an unconstrained map as background; version 2 (mean ~190k voxels,
60 % solid; the benchmark set's is 162k) leaves ~0.19, the reference's 0.18. The thin
families (tubes, trees, arcs, shells) add variety more than volume.

Every function takes a `numpy.random.Generator`; template `i` of `make_procedural_bank(out,
count, seed)` is drawn from `SeedSequence(seed, spawn_key=(i,))`, so the bank is the same
for any number of workers. Bump GENERATOR_VERSION whenever an output could change.
"""
from __future__ import annotations

import math
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from .writer import BankWriter, crop_to_bbox, pack_mask

__all__ = [
    "GENERATOR_VERSION",
    "FAMILIES",
    "make_shape",
    "make_procedural_bank",
    "ellipsoid",
    "blob",
    "shell",
    "tube",
    "vessel_tree",
    "curved",
]

GENERATOR_VERSION = 2   # 2: organ-sized (see the module docstring)
MAX_SIDE = 170


# --- helpers -------------------------------------------------------------------------------

def _rng_for(seed: int, i: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed), spawn_key=(int(i),))))


def _dims(rng: np.random.Generator, lo: float = 30.0, hi: float = 150.0) -> np.ndarray:
    """Three box sides (voxels): a log-uniform base times a per-axis aspect."""
    base = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    return np.clip(base * rng.uniform(0.6, 1.4, 3), 6, MAX_SIDE)


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation matrix (from a random unit quaternion)."""
    q = rng.standard_normal(4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], cells: int = 4) -> np.ndarray:
    """Smooth float32 noise of ~unit scale: a coarse Gaussian grid blended with separable
    Gaussian weights (three small matrix products; far cheaper than zoom or filtering)."""
    coarse = rng.standard_normal((cells,) * 3).astype(np.float32)
    out = coarse
    for ax, n in enumerate(shape):
        t = np.linspace(0, cells - 1, n, dtype=np.float32)[:, None]
        w = np.exp(-0.5 * ((t - np.arange(cells, dtype=np.float32)[None]) / 0.6) ** 2)
        w /= w.sum(1, keepdims=True)
        out = np.moveaxis(np.tensordot(w, np.moveaxis(out, ax, 0), axes=(1, 0)), 0, ax)
    return out / (np.abs(out).max() + 1e-6)


def _ellipsoid_coords(R: np.ndarray, semi: np.ndarray, margin: float) -> tuple[list[np.ndarray], tuple[int, int, int]]:
    """Normalised coordinates u_j (broadcastable) of a rotated ellipsoid over its bounding box."""
    half = np.sqrt(((R * semi[None, :]) ** 2).sum(1)) * margin + 1.0   # half-extent per grid axis
    shape = tuple(int(min(MAX_SIDE, 2 * math.ceil(h) + 1)) for h in half)
    axes = [np.arange(n, dtype=np.float32) - (n - 1) / 2 for n in shape]
    x = [axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]]
    u = [(R[0, j] * x[0] + R[1, j] * x[1] + R[2, j] * x[2]) / semi[j] for j in range(3)]
    return u, shape  # type: ignore[return-value]


def _radius(u: list[np.ndarray]) -> np.ndarray:
    return np.sqrt(u[0] ** 2 + u[1] ** 2 + u[2] ** 2)


def _stamp(points: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Rasterise a union of balls (centres (n, 3) in voxels, radii (n,)) into a tight uint8 grid."""
    radii = np.maximum(radii, 0.9)
    lo = np.floor((points - radii[:, None]).min(0)) - 1
    hi = np.ceil((points + radii[:, None]).max(0)) + 2
    ext = hi - lo
    if ext.max() > MAX_SIDE:  # shrink the skeleton (not the radii) to fit the largest side
        c = (points.min(0) + points.max(0)) / 2
        points = c + (points - c) * ((MAX_SIDE - 2 * radii.max() - 4) / max(1.0, (points.max(0) - points.min(0)).max()))
        lo = np.floor((points - radii[:, None]).min(0)) - 1
        hi = np.ceil((points + radii[:, None]).max(0)) + 2
    p = points - lo
    shape = tuple(int(v) for v in (hi - lo))
    grid = np.zeros(shape, np.uint8)
    for (cz, cy, cx), r in zip(p, radii):
        z0, z1 = int(cz - r), int(cz + r) + 2
        y0, y1 = int(cy - r), int(cy + r) + 2
        x0, x1 = int(cx - r), int(cx + r) + 2
        dz = (np.arange(z0, z1) - cz)[:, None, None] ** 2
        dy = (np.arange(y0, y1) - cy)[None, :, None] ** 2
        dx = (np.arange(x0, x1) - cx)[None, None, :] ** 2
        grid[z0:z1, y0:y1, x0:x1] |= (dz + dy + dx <= r * r)
    return grid


def _path(rng: np.random.Generator, start: np.ndarray, direction: np.ndarray, length: float,
          curvature: float, step: float = 1.0) -> np.ndarray:
    """A smooth random 3D curve: the direction turns with a slowly varying angular velocity."""
    n = max(2, int(length / step))
    d = direction / np.linalg.norm(direction)
    omega = rng.normal(0, curvature, 3)
    noise = rng.normal(0, curvature, (n, 3))
    pts = np.empty((n, 3))
    p = start.astype(float)
    for k in range(n):
        pts[k] = p
        omega = 0.9 * omega + 0.3 * noise[k]
        d = d + np.cross(omega, d) * step
        d /= np.linalg.norm(d)
        p = p + d * step
    return pts


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


# --- families ------------------------------------------------------------------------------

def ellipsoid(rng: np.random.Generator) -> np.ndarray:
    """A deformed ellipsoid (kidney, liver, spleen-like): radial low-frequency noise."""
    semi = _dims(rng) / 2
    amp = rng.uniform(0.05, 0.3)
    u, shape = _ellipsoid_coords(_rotation(rng), semi, 1 + amp)
    r = _radius(u)
    r += amp * _smooth_noise(rng, shape, int(rng.integers(3, 6)))
    return (r < 1).astype(np.uint8)


def blob(rng: np.random.Generator) -> np.ndarray:
    """A smooth irregular blob: thresholded smooth noise inside an ellipsoidal envelope,
    largest connected component (lobulated organs, tumours, glands)."""
    semi = _dims(rng) / 2
    u, shape = _ellipsoid_coords(_rotation(rng), semi, 1.05)
    field = (1 - _radius(u) ** 2) + rng.uniform(0.4, 0.9) * _smooth_noise(rng, shape, int(rng.integers(4, 8)))
    m = field > rng.uniform(0.2, 0.5)
    from scipy import ndimage as ndi  # lazily: scipy costs every worker ~18 MB and the bank rarely needs building

    lab, n = ndi.label(m)
    if n > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        m = lab == int(sizes.argmax())
    return m.astype(np.uint8)


def shell(rng: np.random.Generator) -> np.ndarray:
    """A hollow deformed ellipsoidal shell 1.5-5 voxels thick; half of them cut open by a
    plane, a third perforated (skull-, bladder-, diaphragm-, bone-cortex-like)."""
    semi = _dims(rng, 30, 170) / 2
    amp = rng.uniform(0.03, 0.2)
    u, shape = _ellipsoid_coords(_rotation(rng), semi, 1 + amp)
    r = _radius(u) + amp * _smooth_noise(rng, shape, int(rng.integers(3, 6)))
    t = rng.uniform(1.5, 5.0) / float(np.exp(np.log(semi).mean()))
    m = (r < 1) & (r >= 1 - t)
    if rng.random() < 0.5:
        m &= u[0] > rng.uniform(-0.6, 0.4)
    if rng.random() < 1 / 3:
        m &= _smooth_noise(rng, shape, int(rng.integers(6, 10))) < rng.uniform(0.2, 0.5)
    return m.astype(np.uint8)


def tube(rng: np.random.Generator) -> np.ndarray:
    """One smooth curved tube with a slowly varying radius (ureter, bowel loop, vessel)."""
    length = math.exp(rng.uniform(math.log(30), math.log(170)))
    pts = _path(rng, np.zeros(3), _unit(rng), length, rng.uniform(0.01, 0.08))
    r0 = rng.uniform(2.0, 9.0)
    radii = r0 * (1 + 0.25 * np.sin(np.linspace(0, rng.uniform(1, 6), len(pts)) + rng.uniform(0, 6.3)))
    return _stamp(pts[:: max(1, int(r0 / 2))], radii[:: max(1, int(r0 / 2))])


def vessel_tree(rng: np.random.Generator) -> np.ndarray:
    """A branching vessel tree: bifurcations with Murray's-law radii and 20-70 degree splits."""
    pts: list[np.ndarray] = []
    rad: list[np.ndarray] = []
    stack = [(np.zeros(3), _unit(rng), rng.uniform(2.0, 7.0), rng.uniform(30, 70), 0)]
    max_depth = int(rng.integers(2, 5))
    while stack:
        start, d, r, length, depth = stack.pop()
        seg = _path(rng, start, d, length, rng.uniform(0.01, 0.05))
        pts.append(seg)
        rad.append(np.linspace(r, r * 0.9, len(seg)))
        if depth < max_depth and r > 1.0:
            end_dir = seg[-1] - seg[-2]
            end_dir /= np.linalg.norm(end_dir)
            split = rng.uniform(0.3, 0.7)             # flow split, radii by Murray's law r^3 = r1^3 + r2^3
            for frac in (split, 1 - split):
                rc = r * 0.9 * frac ** (1 / 3)
                perp = np.cross(end_dir, _unit(rng))
                perp /= np.linalg.norm(perp) + 1e-9
                ang = math.radians(rng.uniform(20, 70))
                nd = math.cos(ang) * end_dir + math.sin(ang) * perp
                stack.append((seg[-1], nd, rc, length * rng.uniform(0.55, 0.85), depth + 1))
    p = np.concatenate(pts)
    r = np.concatenate(rad)
    keep = np.arange(len(p)) % 2 == 0
    return _stamp(p[keep], r[keep])


def curved(rng: np.random.Generator) -> np.ndarray:
    """A long curved structure: an arc or helix segment 60-170 voxels long with a thick,
    tapering cross-section (rib, colon, aortic arch, spinal column-like)."""
    length = rng.uniform(60, 170)
    bend = math.radians(rng.uniform(60, 240))
    R = length / bend
    pitch = rng.uniform(-0.3, 0.3) * R
    n = int(length)
    t = np.linspace(0, bend, n)
    pts = np.stack([R * np.cos(t), R * np.sin(t), pitch * t], 1) @ _rotation(rng).T
    r0 = rng.uniform(3.0, 12.0)
    radii = r0 * np.linspace(1.0, rng.uniform(0.5, 1.2), n)
    return _stamp(pts[:: max(1, int(r0 / 2))], radii[:: max(1, int(r0 / 2))])


#: family name -> (generator, share of the bank)
FAMILIES: dict[str, tuple[Callable[[np.random.Generator], np.ndarray], float]] = {
    "ellipsoid": (ellipsoid, 0.32),
    "blob": (blob, 0.28),
    "shell": (shell, 0.10),
    "tube": (tube, 0.08),
    "vessel_tree": (vessel_tree, 0.10),
    "curved": (curved, 0.12),
}


def make_shape(rng: np.random.Generator) -> tuple[str, np.ndarray]:
    """A random family and its mask, cropped to its bounding box (uint8 0/1, never empty)."""
    names = list(FAMILIES)
    p = np.array([FAMILIES[k][1] for k in names])
    name = names[int(rng.choice(len(names), p=p / p.sum()))]
    for _ in range(20):
        m = FAMILIES[name][0](rng)
        if m.any():
            return name, crop_to_bbox(m)
    raise RuntimeError(f"procedural family {name} produced only empty masks")  # never seen


def _make_packed(seed: int, start: int, stop: int) -> list[tuple[str, bytes, tuple[int, int, int], int]]:
    out = []
    for i in range(start, stop):
        name, m = make_shape(_rng_for(seed, i))
        out.append((name, pack_mask(m), m.shape, int(np.count_nonzero(m))))
    return out


def make_procedural_bank(out: str | Path, count: int, seed: int = 0, workers: int = 1,
                         progress: Callable[[str], None] | None = None, overwrite: bool = False) -> Path:
    """Write a bank of `count` procedural templates to `out` (atomically); returns its path.

    Deterministic: the same (count, seed) gives the same content hash for any `workers`.
    """
    if count < 1:
        raise ValueError(f"count = {count} must be >= 1")
    if workers < 1:
        raise ValueError(f"workers = {workers} must be >= 1")
    chunk = max(1, min(256, count // (4 * workers) or 1))
    ranges = [(s, min(count, s + chunk)) for s in range(0, count, chunk)]
    t0 = time.perf_counter()
    with BankWriter(out, sources=[f"procedural(seed={seed}, generator={GENERATOR_VERSION})"],
                    created_by=f"make_procedural_bank(count={count}, seed={seed})", overwrite=overwrite) as w:
        if workers == 1:
            results = (_make_packed(seed, a, b) for a, b in ranges)
            _consume(w, results, count, seed, progress, t0)
        else:
            with ProcessPoolExecutor(workers) as ex:
                results = ex.map(_make_packed, [seed] * len(ranges), [a for a, _ in ranges], [b for _, b in ranges])
                _consume(w, results, count, seed, progress, t0)
        return w.commit()


def _consume(w: BankWriter, results, count: int, seed: int, progress, t0: float) -> None:
    done, next_report = 0, count / 10
    for rows in results:
        for name, packed, shape, vox in rows:
            w.add_packed(packed, shape, voxels=vox, name=name, source=f"procedural:{name}")
        done += len(rows)
        if progress and (done >= next_report or done == count):
            progress(f"procedural templates {done}/{count} ({time.perf_counter() - t0:.1f} s)")
            next_report = done + count / 10
