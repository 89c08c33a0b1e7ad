"""Block geometry of one placed template: which output blocks it can touch, in fixed point.

The output volume is split into cubic blocks of `B` voxels. For a template of shape `d`
placed with the linear map `A` (template voxel -> output voxel) and centre `c`, an output
voxel `x` samples the template at `u = uc + A^-1 (x - c)` with `uc = (d - 1) / 2`, nearest
neighbour: index `floor(u + 0.5)`, valid when in `[0, d)`.

All per-voxel arithmetic downstream is integer: `u + 1.5` (the +1 addresses a template padded
by one zero voxel on every side, so out-of-range indices clamp onto zeros) is split into a
per-block term and a per-offset term, each rounded to fixed point with `shift` fraction bits.
Integer adds and shifts give the same bytes on every device and thread count.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = ["BlockGrid", "Candidates", "ShapeBlocks", "candidate_blocks", "occupancy_table", "solid_table",
           "cull_empty", "split_solid", "classify", "fixed_point"]


@lru_cache(maxsize=8)
def _offsets(B: int) -> np.ndarray:
    r = np.arange(B)
    off = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3).astype(np.float64)
    off.flags.writeable = False
    return off


@dataclass(frozen=True)
class BlockGrid:
    """The output volume as `n`^3 blocks of `B`^3 voxels (the side padded up to n * B)."""
    size: int
    B: int

    @property
    def n(self) -> int:
        return -(-self.size // self.B)

    @property
    def offsets(self) -> np.ndarray:
        """(B^3, 3) voxel offsets inside a block, in block-major storage order (read-only)."""
        return _offsets(self.B)

    @staticmethod
    def for_size(size: int) -> "BlockGrid":
        """8^3 blocks from 64^3 up, smaller for small volumes (culling stays useful)."""
        b = 8 if size >= 64 else 4 if size >= 16 else 2
        return BlockGrid(size, b)


@dataclass(frozen=True)
class Candidates:
    """Blocks a shape may touch, before fixed-point conversion."""
    ids: np.ndarray        # (nb,) flat block ids
    u0: np.ndarray         # (3, nb) template coords of each block's origin voxel
    lo: np.ndarray         # (3, nb) lowest template coord sampled in the block
    hi: np.ndarray         # (3, nb) highest
    Ainv: np.ndarray       # (3, 3) output voxel -> template voxel
    dims: np.ndarray       # (3,) template shape

    def select(self, keep: np.ndarray) -> "Candidates | None":
        if not keep.any():
            return None
        return Candidates(self.ids[keep], self.u0[:, keep], self.lo[:, keep], self.hi[:, keep], self.Ainv, self.dims)


@dataclass(frozen=True)
class ShapeBlocks:
    """The candidate blocks of one shape and its fixed-point sampling terms."""
    blocks: np.ndarray     # (nb,) int64 flat block ids (z * n * n + y * n + x)
    base: np.ndarray       # (3, nb) int64 fixed-point (u + 1.5) at each block's origin voxel
    local: np.ndarray      # (3, B^3) int64 fixed-point A^-1 @ offset
    shift: int             # fraction bits
    n_inner: int           # the first n_inner blocks sample only inside the template box


def candidate_blocks(grid: BlockGrid, A: np.ndarray, centre: np.ndarray, dims: tuple[int, int, int],
                     full: np.ndarray | None = None) -> Candidates | None:
    """The blocks whose samples may fall in the template box, skipping `full` ones; None if none.

    A block is a candidate when the template-space bounding box of its voxel centres meets
    `[-0.5, d - 0.5)` on every axis (conservative: it may still paint nothing).
    """
    d = np.asarray(dims, dtype=np.float64)
    uc = (d - 1.0) / 2.0
    Ainv = np.linalg.inv(A)
    # output bounding box of the template box [-0.5, d - 0.5] -> block range per axis
    ext = np.abs(A) @ (d / 2.0)
    lo = np.floor(centre - ext).astype(np.int64)
    hi = np.ceil(centre + ext).astype(np.int64)
    if np.any(hi < 0) or np.any(lo > grid.size - 1):
        return None
    B, n = grid.B, grid.n
    blo = np.minimum(np.maximum(lo // B, 0), n - 1)   # np.clip's wrapper costs more than the work
    bhi = np.minimum(np.maximum(hi // B, 0), n - 1)
    # template coords at block origins, separably: u0[:, z, y, x] = sum_j Ainv[:, j] * (o_j - c_j) + uc
    t = [np.outer(Ainv[:, j], np.arange(blo[j], bhi[j] + 1) * B - centre[j]) for j in range(3)]
    u0 = (t[0][:, :, None, None] + t[1][:, None, :, None]) + (t[2][:, None, None, :] + uc[:, None, None, None])
    span = Ainv * (B - 1)
    smin = np.minimum(span, 0).sum(1)
    smax = np.maximum(span, 0).sum(1)
    keep = u0 >= (-0.5 - smax)[:, None, None, None]
    keep &= u0 < (d - 0.5 - smin)[:, None, None, None]
    keep = keep.all(0)
    ids = ((np.arange(blo[0], bhi[0] + 1) * (n * n))[:, None, None]
           + (np.arange(blo[1], bhi[1] + 1) * n)[None, :, None]
           + np.arange(blo[2], bhi[2] + 1)[None, None, :])
    if full is not None:
        keep &= ~full[ids]
    if not keep.any():
        return None
    u0 = u0[:, keep]
    return Candidates(ids[keep].astype(np.int64), u0, u0 + smin[:, None], u0 + smax[:, None], Ainv, d)


def _cell_reduce(padded: np.ndarray, cell: int, op: np.ufunc) -> np.ndarray:
    """`op` (np.maximum / np.minimum) over each `cell`^3 cell of `padded`."""
    occ = padded
    for ax in range(3):   # strided pairwise reductions: numpy's multi-axis reduce is ~50x slower
        sl = [slice(None)] * 3
        parts = []
        for j in range(cell):
            sl[ax] = slice(j, None, cell)
            parts.append(occ[tuple(sl)])
        acc = op(parts[0], parts[1]) if cell > 1 else parts[0].copy()
        for q in parts[2:]:
            op(acc, q, out=acc)
        occ = acc
    return occ


def _sat(cells: np.ndarray) -> np.ndarray:
    a, b, c = cells.shape
    sat = np.zeros((a + 1, b + 1, c + 1), dtype=np.int32)
    sat[1:, 1:, 1:] = cells.cumsum(0, dtype=np.int32).cumsum(1).cumsum(2)
    return sat


def occupancy_table(padded: np.ndarray, cell: int) -> tuple[np.ndarray, int]:
    """Summed-area table (one leading zero per axis) of the occupied `cell`^3 cells of a
    padded template, and the template's maximum value (1 for a proper 0/1 mask).

    `padded` (sides multiples of `cell`) holds the template shifted by one voxel.
    """
    occ = _cell_reduce(padded, cell, np.maximum)
    vmax = int(occ.max()) if occ.size else 0
    return _sat(np.minimum(occ, 1)), vmax


def solid_table(padded: np.ndarray, cell: int) -> np.ndarray:
    """Summed-area table of the `cell`^3 cells of a padded 0/1 template that hold only ones."""
    return _sat(np.minimum(_cell_reduce(padded, cell, np.minimum), 1))


def _cell_ranges(cand: Candidates, cell: int) -> tuple[np.ndarray, np.ndarray]:
    """Per block, the cell range [i0, i1) (3, nb) that holds every padded voxel it samples
    (conservative: the fixed-point rounding is far below eps)."""
    eps = 1e-3
    d = cand.dims[:, None] + 1
    # padded index = floor(u + 1.5), clipped like the sampler clamps it
    i0 = np.minimum(np.maximum(np.floor(cand.lo + 1.5 - eps), 0), d).astype(np.int64) // cell
    i1 = np.minimum(np.maximum(np.floor(cand.hi + 1.5 + eps), 0), d).astype(np.int64) // cell + 1
    return i0, i1


def _box_sum(sat: np.ndarray, i0: np.ndarray, i1: np.ndarray) -> np.ndarray:
    z0, y0, x0 = i0
    z1, y1, x1 = i1
    return (sat[z1, y1, x1] - sat[z0, y1, x1] - sat[z1, y0, x1] - sat[z1, y1, x0]
            + sat[z0, y0, x1] + sat[z0, y1, x0] + sat[z1, y0, x0] - sat[z0, y0, x0])


def classify(cand: Candidates, sat: np.ndarray, solid_sat: np.ndarray, cell: int) -> tuple[np.ndarray, Candidates | None]:
    """cull_empty then split_solid, sharing the cell ranges: (ids of the solid blocks, the
    other non-empty candidates or None)."""
    i0, i1 = _cell_ranges(cand, cell)
    nonempty = _box_sum(sat, i0, i1) > 0
    solid = _box_sum(solid_sat, i0, i1) == (i1 - i0).prod(0)   # implies non-empty
    rest = nonempty & ~solid
    return cand.ids[solid], cand.select(rest)


def split_solid(cand: Candidates, solid_sat: np.ndarray, cell: int) -> tuple[np.ndarray, Candidates | None]:
    """(ids of the blocks whose every sample falls on an all-ones cell, i.e. reads 1, and the
    other candidates or None). A solid block needs no per-voxel sampling: it is painted whole."""
    i0, i1 = _cell_ranges(cand, cell)
    n_cells = (i1 - i0).prod(0)
    solid = _box_sum(solid_sat, i0, i1) == n_cells
    if not solid.any():
        return cand.ids[:0], cand
    return cand.ids[solid], cand.select(~solid)


def cull_empty(cand: Candidates, sat: np.ndarray, cell: int) -> Candidates | None:
    """Drop blocks whose samples all fall on empty cells of the template."""
    i0, i1 = _cell_ranges(cand, cell)
    return cand.select(_box_sum(sat, i0, i1) > 0)


def fixed_point(grid: BlockGrid, cand: Candidates) -> ShapeBlocks:
    """Fixed-point sampling terms of the candidate blocks, inner (unclamped) blocks first."""
    d = cand.dims
    # blocks whose every sample rounds inside [0, d) need no clamping: put them first
    inner = ((cand.lo >= -0.5) & (cand.hi < (d - 0.5 - 1e-6)[:, None])).all(0)
    order = np.argsort(~inner, kind="stable")
    ids = cand.ids[order]
    u0 = cand.u0[:, order]
    local = cand.Ainv @ grid.offsets.T             # (3, B^3)
    # fraction bits: keep |base| + |local| well inside int32
    mag = float(np.abs(u0).max() + np.abs(local).max() + 4.0)
    shift = int(min(16, max(0, np.floor(np.log2((2 ** 30) / mag)))))
    one = float(1 << shift)
    base = np.rint((u0 + 1.5) * one).astype(np.int64)
    loc = np.rint(local * one).astype(np.int64)
    return ShapeBlocks(blocks=ids, base=base, local=loc, shift=shift, n_inner=int(inner.sum()))
