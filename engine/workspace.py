"""Per-thread scratch buffers for the CPU path (fresh 8 MB allocations cost page faults).

At 128^3 a new int32 volume costs ~2 ms of page faults before any work, about as much as the
operation itself; the ensemble (smoothing, mask) and appearance steps reuse named buffers instead. Buffers are
thread-local (Dask may run several threads per worker), never returned to callers, and only
kept for volumes up to `MAX_CACHED` voxels; CUDA has its own caching allocator.
"""
from __future__ import annotations

import threading

import numpy as np
import torch

__all__ = ["scratch", "np_scratch", "MAX_CACHED", "TEMP_A", "TEMP_B", "TEMP_C"]

#: tags of short-lived temporaries shared by the steps (the appearance steps, the mask field):
#: a function holding one must not call another function that takes the same tag meanwhile.
#: Sharing them keeps the per-thread scratch at ~110 MB at 128^3 instead of ~190 MB.
TEMP_A, TEMP_B, TEMP_C = "temp.a", "temp.b", "temp.c"

MAX_CACHED = 160 ** 3
_local = threading.local()


def scratch(tag: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised tensor for temporary use, reused per (thread, tag, dtype) on CPU."""
    numel = 1
    for s in shape:
        numel *= int(s)
    if device.type != "cpu" or numel > 2 * MAX_CACHED:   # up to two values per voxel (GMM pairs)
        return torch.empty(shape, dtype=dtype, device=device)
    cache = getattr(_local, "bufs", None)
    if cache is None:
        cache = _local.bufs = {}
    key = (tag, dtype)
    buf = cache.get(key)
    if buf is None or buf.numel() < numel:
        buf = cache[key] = torch.empty(max(numel, 1), dtype=dtype)
    return buf[:numel].view(shape)


def np_scratch(tag: str, n: int, dtype: np.dtype | type) -> np.ndarray:
    """An uninitialised flat numpy array of `n` elements for temporary use, reused per
    (thread, tag, dtype) (template unpacking: fresh ~300 KB arrays are mmap-ed and fault)."""
    dt = np.dtype(dtype)
    if n > MAX_CACHED:
        return np.empty(n, dtype=dt)
    cache = getattr(_local, "np_bufs", None)
    if cache is None:
        cache = _local.np_bufs = {}
    key = (tag, dt.str)
    buf = cache.get(key)
    if buf is None or buf.size < n:
        buf = cache[key] = np.empty(max(n, 1), dtype=dt)
    return buf[:n]
