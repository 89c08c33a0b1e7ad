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

Writing is atomic: `BankWriter` (writer.py) builds into a private temporary directory beside
the target and renames it into place only when complete, so a bank is never seen half-written.
The built-in procedural bank and its cache live in builtin.py.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from synthvox.core.errors import SynthvoxError

__all__ = ["TemplateBank", "TemplateRecord", "BankError", "open_bank", "FORMAT", "FORMAT_VERSION", "HASH_PREFIX"]

FORMAT = "synthvox-template-bank"
FORMAT_VERSION = 1
#: the content hash starts from these bytes (see the module docstring)
HASH_PREFIX = b"synthvox-bank-v1"
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
        h = hashlib.sha256(HASH_PREFIX)
        for i in range(self._n):
            off, nb = int(self._offset[i]), int(self._nbytes[i])
            h.update(np.asarray(self._shape[i], dtype="<i4").tobytes())
            h.update(np.asarray(self._data[off:off + nb]).tobytes())
        if h.hexdigest() != self.content_hash:
            raise BankError(f"{self.path}: data does not match its content hash (corrupt); rebuild the bank")


def open_bank(path: str | Path) -> TemplateBank:
    """Open the bank at `path` (memory-mapped; reads only the index). BankError if missing or incomplete."""
    return TemplateBank(Path(path).expanduser())
