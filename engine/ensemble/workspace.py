"""Per-thread scratch buffers for the CPU path (fresh 8 MB allocations cost page faults).

At 128^3 a new int32 volume costs ~2 ms of page faults before any work, about as much as the
operation itself; the smoothing and mask steps reuse named buffers instead. Buffers are
thread-local (Dask may run several threads per worker), never returned to callers, and only
kept for volumes up to `MAX_CACHED` voxels; CUDA has its own caching allocator.
"""
from __future__ import annotations

import threading

import torch

__all__ = ["scratch", "MAX_CACHED"]

MAX_CACHED = 160 ** 3
_local = threading.local()


def scratch(tag: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised tensor for temporary use, reused per (thread, tag, dtype) on CPU."""
    numel = 1
    for s in shape:
        numel *= int(s)
    if device.type != "cpu" or numel > MAX_CACHED:
        return torch.empty(shape, dtype=dtype, device=device)
    cache = getattr(_local, "bufs", None)
    if cache is None:
        cache = _local.bufs = {}
    key = (tag, dtype)
    buf = cache.get(key)
    if buf is None or buf.numel() < numel:
        buf = cache[key] = torch.empty(max(numel, 1), dtype=dtype)
    return buf[:numel].view(shape)
