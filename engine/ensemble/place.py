"""Paint the placed templates into a label map: nearest neighbour, later shapes on top.

Occlusion: shape k carries id k + 1, so "later shapes overwrite earlier ones" is the same as
"each voxel takes the largest id covering it": painting is an elementwise max, whatever
the order.

Cost model (why it is written this way): resampling the whole volume per shape costs ~25 ms
at 128^3 (nearest grid_sample), times 20-39 shapes. Instead the output is a block-major
buffer of 8^3-voxel blocks and shapes are visited front to back (last shape first): each
shape only samples the blocks that its transformed template box meets, that are not yet
fully painted by shapes above it (their voxels are final), and that cover a non-empty 4^3
cell of the template (summed-area table); its template is only read when some block is
left. The per-voxel work is integer fixed-point arithmetic (see affine.py), identical on
every device and thread count. Blocks whose samples all fall on all-ones 4^3 cells of the
template ("solid") skip the per-voxel sampling: they are painted whole and are final. The two
occupancy tables of a template are cached per process (bounded in bytes, keyed by the bank's
content hash), and a template is unpacked into a reused buffer only when some block is left.
"""
from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from .affine import BlockGrid, candidate_blocks, classify, fixed_point, occupancy_table, solid_table
from .params import EnsembleParams, shape_matrix
from ..workspace import np_scratch, scratch

__all__ = ["place_shapes", "label_work_dtype"]

_CHUNK = 256   # blocks per vectorised step (~130k voxels at B = 8: buffers stay in cache)
_CELL = 4      # template cells of the empty-block culling


def label_work_dtype(max_labels: int) -> torch.dtype:
    """The narrowest torch integer dtype holding ids 0..max_labels (signed beyond uint8)."""
    if max_labels <= 255:
        return torch.uint8
    if max_labels <= 32767:
        return torch.int16
    return torch.int32


def _padded_template(mask: np.ndarray) -> np.ndarray:
    """The template as 0/1 uint8 shifted by one voxel: a zero voxel before it on every axis
    and zeros after it up to a multiple of `_CELL` (at least one), so out-of-range samples
    clamp onto zeros."""
    if mask.ndim != 3:
        raise ValueError(f"template must be 3D (d, h, w), got shape {mask.shape}")
    d = tuple(-(-(int(s) + 2) // _CELL) * _CELL for s in mask.shape)
    buf = np.zeros(d, dtype=np.uint8)
    a, b, c = mask.shape
    inner = buf[1:a + 1, 1:b + 1, 1:c + 1]
    if mask.dtype in (np.uint8, np.bool_):
        inner[...] = mask.view(np.uint8)     # plain copy (the bank stores 0/1; checked by the caller)
    else:
        np.not_equal(mask, 0, out=inner.view(bool))
    return buf


class _OccupancyCache:
    """Per-process cache of the templates' occupancy tables (summed-area tables of their
    non-empty and of their all-ones 4^3 cells, each ~1/16 of the unpacked template's bytes),
    bounded in bytes, least recently used out.

    Keyed by (bank content hash, template index), so it can never serve another bank's table;
    banks without a content hash are not cached. The table is a pure function of the template,
    so caching never changes results. Thread-safe (Dask threads share a worker process).
    The benchmark bank's 600 templates take ~45 MB.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._d: OrderedDict[tuple[str, int], tuple[np.ndarray, ...]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(bank: Any, template: int) -> tuple[str, int] | None:
        h = getattr(bank, "content_hash", None)
        return None if not isinstance(h, str) else (h, int(template))

    def get(self, bank: Any, template: int) -> tuple[np.ndarray, ...] | None:
        key = self._key(bank, template)
        if key is None:
            return None
        with self._lock:
            sat = self._d.get(key)
            if sat is not None:
                self._d.move_to_end(key)
            return sat

    def put(self, bank: Any, template: int, tables: tuple[np.ndarray, ...]) -> None:
        key = self._key(bank, template)
        nbytes = sum(t.nbytes for t in tables)
        if key is None or nbytes > self.max_bytes:
            return
        for t in tables:
            t.flags.writeable = False
        with self._lock:
            if key in self._d:
                return
            self._d[key] = tables
            self.nbytes += nbytes
            while self.nbytes > self.max_bytes:
                _, old = self._d.popitem(last=False)
                self.nbytes -= sum(t.nbytes for t in old)


_OCCUPANCY = _OccupancyCache(max_bytes=64 << 20)
def _template(bank: Any, i: int, dims: tuple[int, int, int]) -> np.ndarray:
    """`_padded_template(bank.get(i))`, in a per-thread reused buffer when the bank exposes its
    packed bits (valid until the next call in this thread; bytes 0/1 by construction). Fresh
    arrays of this size are mmap-ed by malloc, and their page faults cost as much as the
    unpacking itself."""
    packed = getattr(bank, "packed", None)
    if packed is None:
        return _padded_template(bank.get(i))
    a, b, c = dims
    dp = tuple(-(-(int(v) + 2) // _CELL) * _CELL for v in dims)
    buf = np_scratch("place.template", dp[0] * dp[1] * dp[2], np.uint8).reshape(dp)
    buf[1:a + 1, 1:b + 1, 1:c + 1] = np.unpackbits(packed(i), count=a * b * c, bitorder="little").reshape(a, b, c)
    # zeros around it (the buffer is reused: only the border needs clearing)
    buf[0] = 0
    buf[a + 1:] = 0
    buf[1:a + 1, 0] = 0
    buf[1:a + 1, b + 1:] = 0
    buf[1:a + 1, 1:b + 1, 0] = 0
    buf[1:a + 1, 1:b + 1, c + 1:] = 0
    return buf


_beta_warning_seen = False


def _index_amax(out: torch.Tensor, blk: torch.Tensor, v: torch.Tensor) -> None:
    """out[blk[i]] = max(out[blk[i]], v[i]) in one op (blk unique; order-free, so deterministic).

    `index_reduce_` is ~3x cheaper on CPU than gather + maximum + index_copy_; torch flags it
    "beta" with a one-time UserWarning, silenced here without touching global filters.
    """
    global _beta_warning_seen
    if _beta_warning_seen:
        out.index_reduce_(0, blk, v, "amax")
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="index_reduce", category=UserWarning)
        out.index_reduce_(0, blk, v, "amax")
    _beta_warning_seen = True


def _to_dense(out: torch.Tensor, grid: BlockGrid) -> torch.Tensor:
    """Block-major (n^3, B^3) -> (D, H, W) cropped to the size, contiguous.

    Each block row of B voxels is moved as one wide integer (8 uint8 voxels = one int64),
    which makes the permutation several times cheaper than moving single bytes.
    """
    n, B, size = grid.n, grid.B, grid.size
    row_bytes = B * out.element_size()
    wide = {8: torch.int64, 4: torch.int32, 2: torch.int16}.get(row_bytes)
    v = out.view(n, n, n, B, B, B)
    if wide is not None:
        v = v.view(wide).view(n, n, n, B, B)
        dense = v.permute(0, 3, 1, 4, 2).contiguous().view(out.dtype).view(n * B, n * B, n * B)
    else:
        dense = v.permute(0, 3, 1, 4, 2, 5).reshape(n * B, n * B, n * B)
    if n * B != size:
        dense = dense[:size, :size, :size].contiguous()
    # `out` is a reused buffer: the dense map must never alias it (permuting n >= 2 blocks copies)
    return dense.clone() if dense.data_ptr() == out.data_ptr() else dense


def place_shapes(params: EnsembleParams, bank: Any, device: torch.device, grid: BlockGrid | None = None) -> torch.Tensor:
    """(D, H, W) label map of `params.shapes` (shape k -> id k + 1, 0 where none), `device`.

    dtype: `label_work_dtype(params.max_labels)`.
    """
    size = params.size
    grid = grid or BlockGrid.for_size(size)
    n, B3 = grid.n, grid.B ** 3
    dtype = label_work_dtype(params.max_labels)
    out = scratch("place.blocks", (n ** 3, B3), dtype, device).zero_()   # reused: no page faults
    on_cpu = device.type == "cpu"
    full = np.zeros(n ** 3, dtype=bool)
    idx = torch.empty(_CHUNK * B3, dtype=torch.int32, device=device)
    tmp = torch.empty(_CHUNK * B3, dtype=torch.int32, device=device)
    val = torch.empty(_CHUNK * B3, dtype=dtype, device=device)
    cur = torch.empty(_CHUNK, B3, dtype=dtype, device=device)
    for k in range(len(params.shapes) - 1, -1, -1):
        s = params.shapes[k]
        dims = tuple(int(x) for x in bank.shape(s.template))
        if params.template_shapes is not None and tuple(params.template_shapes[k]) != dims:
            raise ValueError(
                f"template {s.template} has shape {dims} in this bank but {tuple(params.template_shapes[k])} "
                "when the ensemble was drawn: render with the bank the parameters were drawn from"
            )
        cand = candidate_blocks(grid, shape_matrix(s, size), np.asarray(s.centre, dtype=np.float64), dims, full)
        if cand is None:
            continue
        padded = None
        tables = _OCCUPANCY.get(bank, s.template)
        if tables is None:
            padded = _template(bank, s.template, dims)
            sat, vmax = occupancy_table(padded, _CELL)
            if vmax > 1:
                raise ValueError(f"template {s.template} is not a 0/1 mask (max value {vmax}): the bank breaks its contract")
            tables = (sat, solid_table(padded, _CELL))
            _OCCUPANCY.put(bank, s.template, tables)
        # drop blocks that sample only empty cells; blocks that sample only the template's
        # all-ones cells are painted whole (max with the id), no per-voxel sampling, and are
        # final from here on (fully painted)
        solid, cand = classify(cand, tables[0], tables[1], _CELL)
        if solid.size:
            sblk = torch.from_numpy(solid).to(device)
            cu = torch.index_select(out, 0, sblk).clamp_(min=k + 1)
            out.index_copy_(0, sblk, cu)
            full[solid] = True
        if cand is None:
            continue
        if padded is None:   # only now: culled shapes never unpack their template
            padded = _template(bank, s.template, dims)
        sb = fixed_point(grid, cand)
        dp = padded.shape
        # the template holds k + 1 where it is set: the gathered values are the ids directly
        # (one multiply of the template instead of one per sampled voxel; k + 1 fits `dtype`)
        tmpl = torch.from_numpy(padded.reshape(-1)).to(device)
        tmpl = tmpl.mul_(k + 1) if dtype == torch.uint8 else tmpl.to(dtype).mul_(k + 1)   # padded is not read again
        if dp[0] * dp[1] * dp[2] >= 2 ** 31:
            raise ValueError(f"template {s.template} of shape {dims} is too large (>= 2^31 voxels)")
        base = torch.from_numpy(sb.base.astype(np.int32)).to(device)   # (3, nb)
        local = torch.from_numpy(sb.local.astype(np.int32)).to(device)
        blocks = torch.from_numpy(sb.blocks).to(device)
        strides = (dp[1] * dp[2], dp[2], 1)
        full_parts = []
        # chunks never straddle the inner/boundary split: inner chunks skip the clamps
        starts = list(range(0, sb.n_inner, _CHUNK)) + list(range(sb.n_inner, len(sb.blocks), _CHUNK))
        for c0 in starts:
            c1 = min(c0 + _CHUNK, sb.n_inner if c0 < sb.n_inner else len(sb.blocks))
            blk = blocks[c0:c1]
            m = c1 - c0
            clamp = c0 >= sb.n_inner
            ix = idx[: m * B3].view(m, B3)
            tp = tmp[: m * B3].view(m, B3)
            for ax in range(3):
                dst = ix if ax == 0 else tp
                torch.add(base[ax, c0:c1, None], local[ax, None, :], out=dst)
                dst.bitwise_right_shift_(sb.shift)
                if clamp:
                    dst.clamp_(0, dp[ax] - 1)
                if ax == 0:
                    dst.mul_(strides[0])
                else:
                    ix.add_(dst, alpha=strides[ax])
            v = torch.index_select(tmpl, 0, ix.view(-1), out=val[: m * B3]).view(m, B3)
            # the top shape covering a voxel has the largest id: max == "later overwrites"
            if on_cpu:
                _index_amax(out, blk, v)
                cu = torch.index_select(out, 0, blk, out=cur[:m])
            else:
                cu = torch.index_select(out, 0, blk, out=cur[:m])
                torch.maximum(cu, v, out=cu)
                out.index_copy_(0, blk, cu)
            full_parts.append(cu.amin(1))
        full[sb.blocks] = (torch.cat(full_parts) > 0).cpu().numpy()
    return _to_dense(out, grid)
