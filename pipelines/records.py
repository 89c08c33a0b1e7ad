"""Per-task records: what a finished task wrote, and the client's book of finished tasks.

A task writes its own small record `records/task-NNNNNN.json` after its files are in place:
`{"task", "range": [start, stop], "files": {relative path: {"bytes", "sha256"}}, "formats",
"device_type"}`. The client folds records into `records/block-NNNNN.jsonl` files of
RECORD_BLOCK tasks once a block is complete, so no file is ever rewritten in full at every
completion and opening a million-sample store reads a few dozen files. A record is what
vouches for a task: readers use only tasks whose record exists and whose files have the
recorded sizes.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from synthvox.core.atomic import sha256_file, write_bytes

from .layout import RECORD_BLOCK, block_path, record_path, task_range
from .manifest import Manifest, write_manifest

__all__ = ["iter_records", "read_block", "find_record", "records_by_task", "record_is_intact", "RecordBook", "file_problem"]


def _loads(text: str) -> dict[str, Any] | None:
    try:
        d = json.loads(text)
    except ValueError:
        return None
    return d if isinstance(d, dict) and isinstance(d.get("task"), int) else None


def iter_records(root: Path) -> Iterator[dict[str, Any]]:
    """Every readable task record of the store: consolidated blocks first, then loose task files.

    An unreadable record is skipped: its task counts as not finished (it is rendered again).
    """
    rdir = Path(root) / "records"
    if not rdir.is_dir():
        return
    names = sorted(os.listdir(rdir))
    for n in names:
        if n.startswith("block-") and n.endswith(".jsonl"):
            try:
                text = (rdir / n).read_text()
            except (OSError, UnicodeDecodeError):
                continue
            for line in text.splitlines():
                if line and (rec := _loads(line)) is not None:
                    yield rec
    for n in names:
        if n.startswith("task-") and n.endswith(".json"):
            try:
                rec = _loads((rdir / n).read_text())
            except (OSError, UnicodeDecodeError):
                rec = None
            if rec is not None:
                yield rec


def records_by_task(root: Path, tasks: int) -> dict[int, dict[str, Any]]:
    """task -> record, for the tasks 0..tasks-1 that have one (the first readable one wins)."""
    out: dict[int, dict[str, Any]] = {}
    for rec in iter_records(root):
        t = rec["task"]
        if 0 <= t < tasks and t not in out:
            out[t] = rec
    return out


def read_block(root: Path, block: int) -> list[dict[str, Any]]:
    """The readable records of one consolidated block file (none when it does not exist)."""
    try:
        text = block_path(Path(root), block).read_text()
    except (OSError, UnicodeDecodeError):
        return []
    return [rec for line in text.splitlines() if line and (rec := _loads(line)) is not None]


def find_record(root: Path, task: int) -> dict[str, Any] | None:
    """The record of one task (its consolidated block, else its loose file), or None."""
    for rec in read_block(root, task // RECORD_BLOCK):
        if rec["task"] == task:
            return rec
    try:
        return _loads(record_path(Path(root), task).read_text())
    except (OSError, UnicodeDecodeError):
        return None


def file_problem(root: Path, rel: str, info: dict[str, Any], check_hash: bool = False) -> str | None:
    """Why the store file `rel` does not match its record entry `info` (None when it does)."""
    p = Path(root) / rel
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if size != info.get("bytes"):
        return f"size {size} != recorded {info.get('bytes')} (truncated or damaged)"
    if check_hash and sha256_file(p) != info.get("sha256"):
        return "sha256 mismatch (content damaged)"
    return None


def record_is_intact(root: Path, rec: dict[str, Any], manifest: Manifest, check_hash: bool = False) -> bool:
    """The record matches the task's current range and formats and its files have their sizes (and hashes)."""
    try:
        if list(task_range(rec["task"], manifest.samples, manifest.task_size)) != list(rec["range"]):
            return False
        if sorted(rec.get("formats", [])) != sorted(manifest.formats):
            return False
        return all(file_problem(root, rel, info, check_hash) is None for rel, info in rec["files"].items())
    except (KeyError, TypeError, AttributeError):
        return False  # a record of another shape: its task is rendered again


class RecordBook:
    """The client's view of finished tasks: a flag per task, records of incomplete blocks in memory.

    Memory stays O(tasks / 8 + RECORD_BLOCK) however long the run; a block is written once,
    when all its tasks are done.
    """

    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.root = Path(root)
        self.manifest = manifest
        self.tasks = manifest.tasks
        self.done = np.zeros(self.tasks, dtype=bool)
        self.bytes = {f: 0 for f in manifest.formats}
        self._pending: dict[int, dict[int, dict[str, Any]]] = {}   # block -> task -> record
        self._blocks_written: set[int] = set()

    def load(self, check_hash: bool = False) -> int:
        """Read existing records, keep the intact ones; returns how many tasks are done."""
        on_disk_blocks = {int(n[6:11]) for n in os.listdir(self.root / "records") if n.startswith("block-")} \
            if (self.root / "records").is_dir() else set()
        for rec in iter_records(self.root):
            t = rec["task"]
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
        full = int(self.done[:-1].sum()) * self.manifest.task_size if self.tasks > 1 else 0
        if self.tasks and self.done[-1]:
            a, b = self.manifest.task_range(self.tasks - 1)
            full += b - a
        return full

    def write_manifest(self) -> None:
        """Refresh the totals in manifest.json (small, O(1) in the number of tasks)."""
        self.flush_complete_blocks()
        self.manifest = self.manifest.with_progress(self.tasks_done, self.bytes)
        write_manifest(self.root, self.manifest)
