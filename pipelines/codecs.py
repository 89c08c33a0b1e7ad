"""Array codecs of the stores: zstd for label maps, plane-delta + zstd for views.

Views are noisy uint8 volumes: an LZ coder finds almost nothing to match and zstd's gain is
its entropy coder. Neighbouring planes are strongly alike, so storing each plane as its
difference to the previous one (uint8, wrapping) narrows the byte distribution: at 128^3 the
default views take ~6% less than gzip-6 at zstd level 1, where plain zstd needs level 6+ (and
6x the encoding time) to reach gzip-6. Undoing the filter is one vectorised add per plane,
so decoding stays a few times faster than gzip (`python -m benchmarks.bench_pipelines`).

    r = delta_planes(v)           # v: (..., D, H, W) uint8; r[..., 0, :, :] = v[..., 0, :, :]
    undelta_planes(r)             # in place: r == v again

`encode_array(a, kind)` / `decode_array(data, kind)` are the WebDataset member codec (`.npy`
bytes, then zstd with a checksum; views are delta-filtered before `.npy`). `PlaneDelta` is the
same filter as a Zarr v3 array-to-array codec (zarr_codec.py).
"""
from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import numpy as np
from numcodecs import Zstd

from synthvox.core.errors import SynthvoxError

__all__ = ["LEVELS", "DELTA_KINDS", "delta_planes", "undelta_planes", "encode_array", "decode_array",
           "describe_codecs", "META_SUM", "seal_meta", "open_meta", "meta_bytes", "MetaChecksumError"]

#: zstd level per array, chosen for encoding time (measured on 128^3 samples): delta-filtered
#: views gain 0.5% at level 3 for 2.5x the time of level 1; label maps are ~1.5% of a sample's
#: bytes and level 9 would shrink them by a fifth for 5x the time of level 3 (~20 ms a sample).
LEVELS = {"labels": 3, "views": 1}
#: arrays stored plane-delta filtered (along axis -3, the D axis of (..., D, H, W))
DELTA_KINDS = frozenset({"views"})
_ZSTD = {k: Zstd(level=v, checksum=True) for k, v in LEVELS.items()}
_DECODER = Zstd(checksum=True)
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def delta_planes(a: np.ndarray, axis: int = -3, out: np.ndarray | None = None) -> np.ndarray:
    """Plane 0 of `axis` as is, every later plane minus its predecessor (wrapping); into `out`
    (same shape, uint8, not overlapping `a`) or a new array."""
    a = np.ascontiguousarray(a)
    if a.dtype != np.uint8:
        raise TypeError(f"plane delta is defined for uint8 arrays, got {a.dtype}")
    r = np.empty_like(a) if out is None else out
    src, dst = np.moveaxis(a, axis, 0), np.moveaxis(r, axis, 0)
    dst[0] = src[0]
    np.subtract(src[1:], src[:-1], out=dst[1:])
    return r


def undelta_planes(r: np.ndarray, axis: int = -3) -> np.ndarray:
    """Invert delta_planes in place (one add per plane: numpy's cumsum along an outer axis is
    several times slower) and return `r`."""
    planes = np.moveaxis(r, axis, 0)
    for i in range(1, planes.shape[0]):
        np.add(planes[i], planes[i - 1], out=planes[i])
    return r


def _content_size(data: bytes | memoryview) -> int | None:
    """The decompressed size recorded in a zstd frame header (None when absent or not zstd)."""
    if len(data) < 6 or bytes(data[:4]) != _ZSTD_MAGIC:
        return None
    fhd = data[4]
    fcs_flag, single, dict_flag = fhd >> 6, (fhd >> 5) & 1, fhd & 3
    pos = 5 + (0 if single else 1) + (0, 1, 2, 4)[dict_flag]
    nbytes = (1 if single else 0, 2, 4, 8)[fcs_flag]
    if nbytes == 0 or len(data) < pos + nbytes:
        return None
    size = int.from_bytes(bytes(data[pos:pos + nbytes]), "little")
    return size + 256 if nbytes == 2 else size


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """The `.npy` 1.0 header np.save writes for a C-ordered array (deterministic bytes)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(dtype),
                                               "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def encode_array(a: np.ndarray, kind: str = "views") -> bytes:
    """`.npy` bytes (format 1.0, deterministic header) of `a` (plane-delta filtered for views),
    compressed with zstd (with a checksum) at LEVELS[kind].

    The `.npy` image is built in one buffer (the delta written straight into it): no copies of
    the payload besides the compressor's output."""
    a = np.ascontiguousarray(a)
    head = _npy_header(a.shape, a.dtype)
    raw = np.empty(len(head) + a.nbytes, np.uint8)
    raw[:len(head)] = np.frombuffer(head, np.uint8)
    body = raw[len(head):].view(a.dtype).reshape(a.shape)
    if kind in DELTA_KINDS:
        delta_planes(a, out=body)
    else:
        body[...] = a
    return _ZSTD[kind].encode(raw)


def decode_array(data: bytes, kind: str = "views") -> np.ndarray:
    """Inverse of encode_array: a writable array that owns its memory, decoded in one pass
    into one buffer (no copies of the payload)."""
    size = _content_size(data)
    raw = np.empty(size, np.uint8) if size is not None else None
    raw = np.frombuffer(_DECODER.decode(data), np.uint8) if raw is None else _DECODER.decode(data, out=raw)
    head = io.BytesIO(raw[:min(len(raw), 4096)].tobytes())
    major, _ = np.lib.format.read_magic(head)
    if major != 1:
        raise ValueError(f"stored array has .npy format {major}.x; this synthvox writes and reads 1.0")
    shape, fortran, dtype = np.lib.format.read_array_header_1_0(head)
    if fortran or dtype.hasobject:
        raise ValueError("stored array is Fortran-ordered or holds objects; not written by synthvox")
    a = raw[head.tell():].view(dtype).reshape(shape)
    if not a.flags.writeable:  # no size in the frame header: decoded into zstd's own bytes
        a = a.copy()
    return undelta_planes(a) if kind in DELTA_KINDS else a


def describe_codecs(arrays: tuple[str, ...], fmt: str) -> dict[str, str]:
    """The codec chain per array, as the manifest records it."""
    out = {}
    for k in arrays:
        chain = ["plane-delta(axis -3)"] if k in DELTA_KINDS else []
        if fmt == "wds":
            out[k] = ", ".join(chain + ["npy 1.0", f"zstd-{LEVELS[k]} (numcodecs, checksum)"])
        else:
            out[k] = "sharding(1 sample per chunk: " + ", ".join(chain + [f"zstd-{LEVELS[k]}, checksum"]) + ")"
    return out


#: the key under which a stored meta carries the sha256 of its own canonical JSON (store layout 3)
META_SUM = "meta_sha256"


class MetaChecksumError(SynthvoxError, ValueError):
    """A stored meta does not match its checksum (or has none)."""


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def seal_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """`meta` plus META_SUM, the sha256 of its canonical JSON: what a store writes.

    The label maps and views are protected by zstd's own checksum; the meta (which a labels
    store paints the views from) by this one, so readers and `verify --quick` see a flipped bit.
    """
    body = {k: v for k, v in meta.items() if k != META_SUM}
    return {**body, META_SUM: hashlib.sha256(_canonical(body)).hexdigest()}


def open_meta(stored: Any) -> dict[str, Any]:
    """The meta of a stored, sealed one (META_SUM removed); MetaChecksumError when it does not match."""
    if not isinstance(stored, dict) or not isinstance(stored.get(META_SUM), str):
        raise MetaChecksumError(f"meta has no {META_SUM} checksum (not written by this store layout, or damaged)")
    body = {k: v for k, v in stored.items() if k != META_SUM}
    if hashlib.sha256(_canonical(body)).hexdigest() != stored[META_SUM]:
        raise MetaChecksumError(f"meta does not match its {META_SUM} checksum (a damaged parameter or seed)")
    return body


def meta_bytes(meta: dict[str, Any]) -> bytes:
    """The tar member bytes of a sample's meta: its sealed canonical JSON."""
    return _canonical(seal_meta(meta))
