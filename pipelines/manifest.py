"""The store manifest, the per-task records, their consolidation and compatibility checks.

`manifest.json` describes the store (schema version, content `full` or `labels`, engine config and hash, seed,
sample count, task size, formats, versions) plus a few totals the client refreshes now and
then. A task writes its own small record `records/task-NNNNNN.json` after its files are in
place; the client folds records into `records/block-NNNNN.jsonl` files of RECORD_BLOCK tasks
once a block is complete, so no file is ever rewritten in full at every completion and
opening a million-sample store reads a few dozen files. Nothing time- or host-dependent is
stored here (that goes to `logs/`), so a finished store is byte-reproducible.
"""
from __future__ import annotations

import json
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterator

import numcodecs
import numpy as np
import torch
import zarr

from synthvox.core.atomic import sha256_file, write_bytes, write_json
from synthvox.core.errors import SynthvoxError
from synthvox.engine.schema import SCHEMA_VERSION, SchemaError, check_schema_version

from .codecs import describe_codecs
from .layout import MANIFEST, RECORD_BLOCK, block_path, num_tasks, record_path, stored_arrays, task_range

__all__ = [
    "STORE_VERSION", "BYTE_DECIDING", "StoreMismatch", "software_versions", "make_manifest", "read_manifest",
    "check_compatible", "iter_records", "find_record", "RecordBook", "record_is_intact",
]

STORE_VERSION = 2  # layout version of pipelines stores (bump on any layout change; 2: plane-delta views)


class StoreMismatch(SynthvoxError, ValueError):
    """An existing store was written with another task size, config, seed, format or version."""


#: packages whose version decides a store's bytes (the engine: synthvox, torch; the encoder:
#: numcodecs' zstd): a resume and every worker must match the store
BYTE_DECIDING = ("synthvox", "torch", "numcodecs")


def software_versions() -> dict[str, str]:
    """Versions that decide the bytes of a store (compared at resume and across workers)."""
    try:
        sv = version("synthvox")
    except PackageNotFoundError:
        sv = "unknown"
    return {
        "synthvox": sv, "torch": torch.__version__.split("+")[0], "numpy": np.__version__,
        "zarr": zarr.__version__, "numcodecs": numcodecs.__version__,
    }


def make_manifest(*, cfg_dict: dict[str, Any], cfg_hash: str, bank_hash: str, seed: int, samples: int,
                  task_size: int, zarr_shard: int, formats: tuple[str, ...], label_dtype: str,
                  views: int, size: int, content: str = "full") -> dict[str, Any]:
    arrays = stored_arrays(content)  # `shapes` keep the views' shape: readers of a labels store render them
    return {
        "schema_version": SCHEMA_VERSION,
        "store_version": STORE_VERSION,
        "content": content,
        "engine_config": cfg_dict,
        "engine_config_hash": cfg_hash,
        "bank_hash": bank_hash,
        "seed": int(seed),
        "samples": int(samples),
        "task_size": int(task_size),
        "tasks": num_tasks(samples, task_size),
        "zarr_shard": int(zarr_shard),
        "formats": list(formats),
        "label_dtype": label_dtype,
        "shapes": {"labels": [size] * 3, "views": [views] + [size] * 3},
        "codecs": {f: describe_codecs(arrays, f) for f in ("wds", "zarr")},
        "record_block": RECORD_BLOCK,
        "versions": software_versions(),
        "complete": False,
        "tasks_done": 0,
        "bytes": {f: 0 for f in formats},
    }


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest of `root`; a missing one or another schema version raises, naming the path."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {root} is not a synthvox store (create one with synthvox synth-shards)")
    try:
        m = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SchemaError(f"{path} is not valid JSON ({e})") from None
    check_schema_version(m.get("schema_version"), str(path))
    if m.get("store_version") != STORE_VERSION:
        raise SchemaError(f"{path} has store layout version {m.get('store_version')!r}, this synthvox reads {STORE_VERSION}")
    return m


#: manifest keys that must match for a run to continue or grow a store, with what to do
_MUST_MATCH = {
    "content": "pass the store's --content, or another --out; `synthvox convert` copies a store with the other content",
    "engine_config_hash": "use the same --config/--size/--bank as before, or another --out",
    "seed": "use the same --seed, or another --out",
    "task_size": "use the same --task-size (the store's layout depends on it), or another --out",
    "formats": "use the same --formats, or another --out",
    "label_dtype": "use the same config, or another --out",
}


def check_compatible(old: dict[str, Any], new: dict[str, Any], root: Path) -> None:
    """Refuse to resume or grow `old` with the settings of `new`, naming each difference."""
    problems = []
    for key, todo in _MUST_MATCH.items():
        if old.get(key) != new.get(key):
            problems.append(f"{key}: store has {old.get(key)!r}, this run has {new.get(key)!r} ({todo})")
    for pkg in BYTE_DECIDING:
        a, b = old.get("versions", {}).get(pkg), new["versions"].get(pkg)
        if a != b:
            problems.append(f"{pkg} version: store was written by {a}, this is {b} (install {pkg} {a}, or use another --out)")
    if new["samples"] < old["samples"]:
        problems.append(f"samples: store has {old['samples']}, this run asks for {new['samples']} (a store only grows; pass --samples >= {old['samples']})")
    if problems:
        raise StoreMismatch(f"{Path(root) / MANIFEST} does not match this run:\n  " + "\n  ".join(problems))


def iter_records(root: Path) -> Iterator[dict[str, Any]]:
    """Every task record of the store: consolidated blocks first, then loose task files."""
    rdir = Path(root) / "records"
    if not rdir.is_dir():
        return
    names = sorted(os.listdir(rdir))
    for n in names:
        if n.startswith("block-") and n.endswith(".jsonl"):
            for line in (rdir / n).read_text().splitlines():
                if line:
                    yield json.loads(line)
    for n in names:
        if n.startswith("task-") and n.endswith(".json"):
            try:
                yield json.loads((rdir / n).read_text())
            except (OSError, json.JSONDecodeError):
                continue  # unreadable record: its task is simply rendered again


def find_record(root: Path, task: int) -> dict[str, Any] | None:
    """The record of one task (its consolidated block, else its loose file), or None."""
    b = block_path(Path(root), task // RECORD_BLOCK)
    if b.is_file():
        for line in b.read_text().splitlines():
            if line and json.loads(line).get("task") == task:
                return json.loads(line)
    try:
        return json.loads(record_path(Path(root), task).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def record_is_intact(root: Path, rec: dict[str, Any], manifest: dict[str, Any], check_hash: bool = False) -> bool:
    """The record matches the task's current range and formats and its files have their sizes (and hashes)."""

    task = rec["task"]
    if list(task_range(task, manifest["samples"], manifest["task_size"])) != list(rec["range"]):
        return False
    if sorted(rec.get("formats", [])) != sorted(manifest["formats"]):
        return False
    for rel, info in rec["files"].items():
        p = Path(root) / rel
        try:
            if p.stat().st_size != info["bytes"]:
                return False
        except OSError:
            return False
        if check_hash and sha256_file(p) != info["sha256"]:
            return False
    return True


class RecordBook:
    """The client's view of finished tasks: a flag per task, records of incomplete blocks in memory.

    Memory stays O(tasks / 8 + RECORD_BLOCK) however long the run; a block is written once,
    when all its tasks are done.
    """

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root = Path(root)
        self.manifest = manifest
        self.tasks = int(manifest["tasks"])
        self.done = np.zeros(self.tasks, dtype=bool)
        self.bytes = {f: 0 for f in manifest["formats"]}
        self._pending: dict[int, dict[int, dict[str, Any]]] = {}   # block -> task -> record
        self._blocks_written: set[int] = set()

    def load(self, check_hash: bool = False) -> int:
        """Read existing records, keep the intact ones; returns how many tasks are done."""
        on_disk_blocks = {int(n[6:11]) for n in os.listdir(self.root / "records") if n.startswith("block-")} \
            if (self.root / "records").is_dir() else set()
        for rec in iter_records(self.root):
            t = rec.get("task", -1)
            if 0 <= t < self.tasks and not self.done[t] and record_is_intact(self.root, rec, self.manifest, check_hash):
                self.add(rec, write_blocks=False)
        # a block already on disk whose records all survived stays as it is
        for b in on_disk_blocks:
            if b in self._pending and len(self._pending[b]) == self._block_len(b):
                self._pending.pop(b)
                self._blocks_written.add(b)
        return int(self.done.sum())

    def _block_len(self, b: int) -> int:
        return min(RECORD_BLOCK, self.tasks - b * RECORD_BLOCK)

    def add(self, rec: dict[str, Any], write_blocks: bool = True) -> None:
        t = int(rec["task"])
        if self.done[t]:
            return
        self.done[t] = True
        for rel, info in rec["files"].items():
            fmt = "wds" if rel.startswith("wds/") else "zarr"
            self.bytes[fmt] = self.bytes.get(fmt, 0) + int(info["bytes"])
        b = t // RECORD_BLOCK
        self._pending.setdefault(b, {})[t] = {k: rec[k] for k in ("task", "range", "files", "formats", "device_type")}
        if write_blocks and len(self._pending[b]) == self._block_len(b):
            self._write_block(b)

    def _write_block(self, b: int) -> None:
        recs = self._pending.pop(b)
        lines = [json.dumps(recs[t], sort_keys=True, separators=(",", ":")) for t in sorted(recs)]
        write_bytes(block_path(self.root, b), ("\n".join(lines) + "\n").encode())
        self._blocks_written.add(b)
        for t in recs:  # the block now holds them; loose files go (a missing one is fine)
            try:
                os.unlink(record_path(self.root, t))
            except FileNotFoundError:
                pass

    def flush_complete_blocks(self) -> None:
        for b in [b for b, recs in self._pending.items() if len(recs) == self._block_len(b)]:
            self._write_block(b)

    @property
    def tasks_done(self) -> int:
        return int(self.done.sum())

    def samples_done(self) -> int:
        full = int(self.done[:-1].sum()) * self.manifest["task_size"] if self.tasks > 1 else 0
        if self.tasks and self.done[-1]:
            a, b = task_range(self.tasks - 1, self.manifest["samples"], self.manifest["task_size"])
            full += b - a
        return full

    def write_manifest(self) -> None:
        """Refresh the totals in manifest.json (small, O(1) in the number of tasks)."""
        self.flush_complete_blocks()
        self.manifest["tasks_done"] = self.tasks_done
        self.manifest["complete"] = self.tasks_done == self.tasks
        self.manifest["bytes"] = dict(self.bytes)
        write_json(self.root / MANIFEST, self.manifest)
