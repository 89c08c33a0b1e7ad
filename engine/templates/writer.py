"""Writing a template bank (the format of bank.py): crop, bit-pack, append, commit atomically."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from synthvox.core.atomic import commit_dir, new_tmp_dir, write_json

from .bank import FORMAT, FORMAT_VERSION, HASH_PREFIX, BankError

__all__ = ["BankWriter", "crop_to_bbox", "pack_mask"]


def crop_to_bbox(mask: np.ndarray) -> np.ndarray:
    """The (d, h, w) mask cropped to the bounding box of its nonzero voxels, as uint8 0/1.

    Raises ValueError when the mask is empty.
    """
    m = np.asarray(mask)
    if m.ndim != 3:
        raise ValueError(f"a template must be 3D, got shape {m.shape}")
    sl = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        nz = np.flatnonzero(m.any(axis=other))
        if nz.size == 0:
            raise ValueError("empty mask (no foreground voxel)")
        sl.append(slice(int(nz[0]), int(nz[-1]) + 1))
    return (m[tuple(sl)] != 0).astype(np.uint8)


def pack_mask(mask: np.ndarray) -> bytes:
    """The bank's packed bytes of a (d, h, w) 0/1 mask (C order, little bit order)."""
    return np.packbits(np.ascontiguousarray(mask, dtype=np.uint8).reshape(-1) != 0, bitorder="little").tobytes()


class BankWriter:
    """Writes a bank atomically: `add(...)` templates in order, then `commit()`.

    Used as a context manager, a failure (or leaving without commit) removes the temporary
    directory, so nothing appears under `out`. `overwrite=True` replaces an existing bank.
    """

    def __init__(self, out: str | Path, *, sources: Sequence[str] = (), created_by: str = "",
                 overwrite: bool = False) -> None:
        self.out = Path(out)
        self.overwrite = overwrite
        if self.out.exists() and not overwrite:
            raise BankError(f"{self.out} already exists; choose another --out, remove it, or overwrite it (--force)")
        self.tmp = new_tmp_dir(self.out)
        self._f = open(self.tmp / "masks.bin", "wb")
        self._hash = hashlib.sha256(HASH_PREFIX)
        self._rows: dict[str, list[Any]] = {k: [] for k in ("offset", "nbytes", "shape", "voxels", "label", "name_id", "source_id")}
        self._names: dict[str, int] = {}
        self._sources: dict[str, int] = {}
        self._offset = 0
        self.meta_sources = list(sources)
        self.created_by = created_by
        self.committed: Path | None = None

    def __len__(self) -> int:
        return len(self._rows["offset"])

    def add(self, mask: np.ndarray, *, name: str, source: str, label: int = 1, cropped: bool = False) -> None:
        """Append one template (cropped to its bounding box unless `cropped`); empty masks raise ValueError."""
        m = np.asarray(mask)
        if not cropped:
            m = crop_to_bbox(m)
        if m.ndim != 3 or min(m.shape) < 1:
            raise ValueError(f"template {name!r} from {source}: bad shape {m.shape}")
        self.add_packed(pack_mask(m), m.shape, voxels=int(np.count_nonzero(m)), name=name, source=source, label=label)

    def add_packed(self, packed: bytes, shape: Sequence[int], *, voxels: int, name: str, source: str, label: int = 1) -> None:
        """Append one template already packed with `pack_mask` (and cropped)."""
        shape = tuple(int(s) for s in shape)
        if len(packed) != (shape[0] * shape[1] * shape[2] + 7) // 8:
            raise ValueError(f"template {name!r} from {source}: {len(packed)} packed bytes do not match shape {shape}")
        if voxels < 1:
            raise ValueError(f"template {name!r} from {source} is empty")
        self._f.write(packed)
        self._hash.update(np.asarray(shape, dtype="<i4").tobytes())
        self._hash.update(packed)
        r = self._rows
        r["offset"].append(self._offset)
        r["nbytes"].append(len(packed))
        r["shape"].append(shape)
        r["voxels"].append(int(voxels))
        r["label"].append(int(label))
        r["name_id"].append(self._names.setdefault(name, len(self._names)))
        r["source_id"].append(self._sources.setdefault(source, len(self._sources)))
        self._offset += len(packed)

    def commit(self) -> Path:
        """Finish the files and rename the bank into place; returns the final path.

        If another process committed the same `out` meanwhile (and not `overwrite`), raises
        FileExistsError and leaves the other bank untouched.
        """
        if not len(self):
            self.abort()
            raise BankError(f"no templates to write to {self.out}")
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        r = self._rows
        np.savez(self.tmp / "index.npz",
                 offset=np.asarray(r["offset"], np.int64), nbytes=np.asarray(r["nbytes"], np.int64),
                 shape=np.asarray(r["shape"], np.int32).reshape(-1, 3), voxels=np.asarray(r["voxels"], np.int64),
                 label=np.asarray(r["label"], np.int32), name_id=np.asarray(r["name_id"], np.int32),
                 source_id=np.asarray(r["source_id"], np.int32),
                 names=np.asarray(list(self._names), dtype=np.str_), sources=np.asarray(list(self._sources), dtype=np.str_))
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "count": len(self), "data_bytes": self._offset,
                "content_hash": self._hash.hexdigest(), "sources": self.meta_sources, "created_by": self.created_by}
        write_json(self.tmp / "bank.json", meta, sort_keys=False)
        commit_dir(self.tmp, self.out, overwrite=self.overwrite)
        self.committed = self.out
        return self.out

    def abort(self) -> None:
        """Drop everything written so far."""
        if not self._f.closed:
            self._f.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "BankWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.committed is None:
            self.abort()
