"""The template bank: many binary shape masks of different sizes in one memory-mapped store.

On-disk layout (format version 1), one directory `BANK/`:

    masks.bin    every template cropped to its bounding box, flattened in C order (D, H, W),
                 bit-packed with `np.packbits(..., bitorder="little")` (zero-padded to a whole
                 byte), concatenated in template order; read through `np.memmap`, so opening
                 reads nothing and a draw touches only that template's bytes.
    index.npz    one row per template: `offset`, `nbytes` (int64, into masks.bin), `shape`
                 (int32, (N, 3)), `voxels` (int64), `label` (int32: the label value in the source
                 file, 1 for binary masks), `name_id`, `source_id` (int32) into the string
                 tables `names` and `sources` (unicode arrays; no pickle).
    bank.json    format name and version, count, data bytes, content hash, provenance
                 (`sources`, `created_by`). Written last: a directory without it is incomplete.

The content hash is sha256 over "synthvox-bank-v1" then, per template in order, its shape as
three little-endian int32 and its packed bytes. It covers what rendering sees (geometry and
order), not names, sources or the path, so a moved or renamed bank keeps its hash.

Writing is atomic: `BankWriter` builds into a private temporary directory beside the target
and renames it into place only when complete, so a bank is never seen half-written.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from synthvox.core.atomic import commit_dir, new_tmp_dir, write_json
from synthvox.core.errors import SynthvoxError

__all__ = [
    "TemplateBank",
    "TemplateRecord",
    "BankWriter",
    "BankError",
    "open_bank",
    "resolve_bank",
    "default_bank_path",
    "cache_dir",
    "pack_mask",
    "crop_to_bbox",
    "FORMAT",
    "FORMAT_VERSION",
]

FORMAT = "synthvox-template-bank"
FORMAT_VERSION = 1
_HASH_PREFIX = b"synthvox-bank-v1"
_HOW_TO_MAKE = ("make one with `synthvox templates procedural --count N --out BANK` or "
                "`synthvox templates ingest SRC... --out BANK`")


class BankError(SynthvoxError, RuntimeError):
    """A template bank that is missing, incomplete, corrupt or of another format version."""


@dataclass(frozen=True)
class TemplateRecord:
    """One index row of a bank."""

    shape: tuple[int, int, int]   # (d, h, w) of the cropped mask, voxels
    source: str                   # where it came from (relative file, or "procedural:<family>")
    name: str                     # structure name
    label: int                    # label value in the source file (1 for binary masks)
    voxels: int                   # foreground voxel count


class _Records(Sequence[TemplateRecord]):
    """A read-only sequence view of the index (rows are built on access)."""

    def __init__(self, bank: "TemplateBank") -> None:
        self._b = bank

    def __len__(self) -> int:
        return len(self._b)

    def __getitem__(self, i: int) -> TemplateRecord:  # type: ignore[override]
        b = self._b
        i = b._check_index(i)
        return TemplateRecord(shape=b.shape(i), source=str(b._sources[b._source_id[i]]),
                              name=str(b._names[b._name_id[i]]), label=int(b._label[i]),
                              voxels=int(b._voxels[i]))

    def __iter__(self) -> Iterator[TemplateRecord]:
        for i in range(len(self)):
            yield self[i]


class TemplateBank:
    """A read-only, memory-mapped template bank. Use `open_bank(path)` to get one.

    Pickles as its path (reopened on unpickle), so it can be sent to worker processes.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta_path = self.path / "bank.json"
        if not self.path.exists():
            raise BankError(f"template bank {self.path} does not exist; {_HOW_TO_MAKE}")
        if not self.path.is_dir():
            raise BankError(f"template bank {self.path} is not a directory; {_HOW_TO_MAKE}")
        if not meta_path.is_file():
            raise BankError(f"{self.path} is not a complete template bank (no bank.json: it was never "
                            f"finished, or is not a bank); delete it and rebuild it ({_HOW_TO_MAKE})")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as e:
            raise BankError(f"{meta_path} is unreadable ({e}); delete the bank and rebuild it") from e
        if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
            raise BankError(f"{meta_path}: format {meta.get('format')!r} version {meta.get('version')!r}, "
                            f"expected {FORMAT!r} version {FORMAT_VERSION}; rebuild the bank")
        self.meta: dict[str, Any] = meta
        try:
            with np.load(self.path / "index.npz", allow_pickle=False) as z:
                self._offset = z["offset"]
                self._nbytes = z["nbytes"]
                self._shape = z["shape"]
                self._voxels = z["voxels"]
                self._label = z["label"]
                self._name_id = z["name_id"]
                self._source_id = z["source_id"]
                self._names = z["names"]
                self._sources = z["sources"]
        except (OSError, KeyError, ValueError) as e:
            raise BankError(f"{self.path / 'index.npz'} is missing or corrupt ({e}); delete the bank and rebuild it") from e
        n = int(meta["count"])
        data_path = self.path / "masks.bin"
        size = data_path.stat().st_size if data_path.is_file() else -1
        if len(self._offset) != n or size != int(meta["data_bytes"]) or n == 0:
            raise BankError(f"{self.path} is inconsistent (count {n}, index rows {len(self._offset)}, "
                            f"masks.bin {size} bytes, expected {meta['data_bytes']}); delete it and rebuild it")
        self._n = n
        self._data = np.memmap(data_path, dtype=np.uint8, mode="r")
        self._shape_tuples: list[tuple[int, int, int]] | None = None

    # pickling: by path, never the memmap
    def __getstate__(self) -> dict[str, Any]:
        return {"path": str(self.path)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"TemplateBank({str(self.path)!r}, count={self._n}, hash={self.content_hash[:12]})"

    @property
    def content_hash(self) -> str:
        """sha256 (hex) over the templates' shapes and bits, in order (not names, not the path)."""
        return str(self.meta["content_hash"])

    @property
    def records(self) -> Sequence[TemplateRecord]:
        """The index rows (shape, source, name, label, voxels), built on access."""
        return _Records(self)

    @property
    def shapes(self) -> np.ndarray:
        """(N, 3) int32 array of every template's (d, h, w); no data read."""
        return self._shape

    @property
    def voxels(self) -> np.ndarray:
        """(N,) int64 foreground voxel count per template."""
        return self._voxels

    def _check_index(self, i: int) -> int:
        i = int(i)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"template {i} out of range for bank {self.path} with {self._n} templates")
        return i

    def shape(self, i: int) -> tuple[int, int, int]:
        """(d, h, w) of template `i`, from the index (no data read)."""
        i = self._check_index(i)
        if self._shape_tuples is None:
            self._shape_tuples = [tuple(int(v) for v in s) for s in self._shape.tolist()]  # type: ignore[misc]
        return self._shape_tuples[i]

    def get(self, i: int) -> np.ndarray:
        """Template `i` as a fresh uint8 (d, h, w) array of 0/1, cropped to its bounding box."""
        i = self._check_index(i)
        d, h, w = self.shape(i)
        off, nb = int(self._offset[i]), int(self._nbytes[i])
        packed = np.asarray(self._data[off:off + nb])
        return np.unpackbits(packed, count=d * h * w, bitorder="little").reshape(d, h, w)

    def packed(self, i: int) -> np.ndarray:
        """Template `i`'s packed bits as stored (read-only uint8 view of the memory map: C order,
        little bit order, zero-padded to a whole byte); `shape(i)` gives its shape."""
        i = self._check_index(i)
        off, nb = int(self._offset[i]), int(self._nbytes[i])
        return np.asarray(self._data[off:off + nb])

    def verify(self) -> None:
        """Recompute the content hash from the data; raise BankError on mismatch."""
        h = hashlib.sha256(_HASH_PREFIX)
        for i in range(self._n):
            off, nb = int(self._offset[i]), int(self._nbytes[i])
            h.update(np.asarray(self._shape[i], dtype="<i4").tobytes())
            h.update(np.asarray(self._data[off:off + nb]).tobytes())
        if h.hexdigest() != self.content_hash:
            raise BankError(f"{self.path}: data does not match its content hash (corrupt); rebuild the bank")


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
        self._hash = hashlib.sha256(_HASH_PREFIX)
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


def open_bank(path: str | Path) -> TemplateBank:
    """Open the bank at `path` (memory-mapped; reads only the index). BankError if missing or incomplete."""
    return TemplateBank(Path(path).expanduser())


# --- the built-in procedural bank ----------------------------------------------------------

#: count and seed of the built-in bank; bump DEFAULT_GENERATOR when the procedural code changes
DEFAULT_COUNT = 384
DEFAULT_SEED = 0

_OPEN: dict[tuple[str, int, int], TemplateBank] = {}


def cache_dir() -> Path:
    """`$SYNTHVOX_CACHE`, or `~/.cache/synthvox`."""
    return Path(os.environ.get("SYNTHVOX_CACHE") or Path.home() / ".cache" / "synthvox").expanduser()


def default_bank_path() -> Path:
    """Where the built-in procedural bank lives (built on first use)."""
    from .procedural import GENERATOR_VERSION

    return cache_dir() / "banks" / f"procedural-g{GENERATOR_VERSION}-n{DEFAULT_COUNT}-s{DEFAULT_SEED}"


def _cached_open(path: Path) -> TemplateBank:
    # One open bank per (path, bank.json identity) and process: repeated calls in a worker are free.
    st = (path / "bank.json").stat()
    key = (str(path.resolve()), st.st_ino, st.st_mtime_ns)
    bank = _OPEN.get(key)
    if bank is None:
        bank = _OPEN[key] = open_bank(path)
    return bank


def resolve_bank(spec: str | Path | None, progress: Callable[[str], None] | None = None) -> TemplateBank:
    """`None` -> the built-in procedural bank (built deterministically on first use, cached
    under `cache_dir()`, safe when many processes race: the loser of the rename uses the
    winner's bank); a path -> `open_bank(path)`."""
    if spec is not None:
        path = Path(spec).expanduser()
        if not (path / "bank.json").is_file():
            return open_bank(path)  # raises the right BankError
        return _cached_open(path)
    path = default_bank_path()
    if not (path / "bank.json").is_file():
        from .procedural import make_procedural_bank

        if path.exists():  # a directory without bank.json under the final name: never ours (atomic)
            raise BankError(f"{path} is an incomplete template bank; delete it and it is rebuilt on next use")
        with _build_lock(path):
            if not (path / "bank.json").is_file():  # another process may have built it meanwhile
                try:
                    make_procedural_bank(path, DEFAULT_COUNT, DEFAULT_SEED, workers=1, progress=progress)
                except (FileExistsError, BankError):
                    if not (path / "bank.json").is_file():
                        raise
    return _cached_open(path)


@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """An advisory lock beside `path` so concurrent first uses build once and the others wait.
    Only saves work: correctness rests on the atomic rename (and filesystems without flock
    just build in parallel)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl

        fh = open(path.parent / f".{path.name}.lock", "w")
    except (ImportError, OSError):
        yield
        return
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        fh.close()  # releases the lock
