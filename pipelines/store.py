"""`open_store(path) -> Store`: a store as its readers see it, and what its records vouch for.

A reader uses only what the store's records vouch for: a task whose record exists, and whose
files exist with their recorded sizes. `Store.usable_tasks` applies that rule (refusing an
incomplete store unless asked to use the finished tasks only, refusing or skipping damaged
tasks) and `Store.check_task` checks one task's files of a format before they are opened.
"""
from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

from synthvox.engine.config import EngineConfig

from .errors import DamagedShard, IncompleteStore, repair_hint
from .layout import RECORD_BLOCK, num_tasks, task_range, wds_path
from .manifest import Manifest, read_manifest
from .records import file_problem, find_record, iter_records, read_block, records_by_task
from .wds_io import iter_wds_shard

__all__ = ["open_store", "Store", "format_files"]

log = logging.getLogger("synthvox.pipelines")

#: the store-relative prefixes of each format's files
_PREFIXES = {"wds": ("wds/",), "zarr": ("zarr/", "zarr-meta/")}


def format_files(record: dict[str, Any], fmt: str) -> dict[str, dict[str, Any]]:
    """The files of one format listed in a task record (relative path -> {bytes, sha256})."""
    return {rel: info for rel, info in record.get("files", {}).items() if rel.startswith(_PREFIXES[fmt])}


class Store:
    """A store directory and its manifest (see docs/ARCHITECTURE.md, "Store")."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.manifest: Manifest = read_manifest(self.path)
        self._blocks: dict[int, dict[int, dict[str, Any]]] = {}

    @property
    def num_samples(self) -> int:
        return self.manifest.samples

    @property
    def formats(self) -> tuple[str, ...]:
        return self.manifest.formats

    @property
    def content(self) -> str:
        return self.manifest.content

    @property
    def seed(self) -> int:
        return self.manifest.seed

    @property
    def task_size(self) -> int:
        return self.manifest.task_size

    @property
    def num_tasks(self) -> int:
        return num_tasks(self.num_samples, self.task_size)

    @property
    def complete(self) -> bool:
        """The manifest says complete and every task has a record."""
        return self.manifest.complete and not self.missing_tasks()

    @cached_property
    def engine_config(self) -> EngineConfig:
        return self.manifest.engine()

    @cached_property
    def record_map(self) -> dict[int, dict[str, Any]]:
        """task -> its record (read once; tasks without a record are absent)."""
        return records_by_task(self.path, self.num_tasks)

    def record(self, task: int) -> dict[str, Any] | None:
        """The record of one task, or None (reads its block file once, not every record)."""
        if "record_map" in self.__dict__:
            return self.record_map.get(task)
        block = task // RECORD_BLOCK
        if block not in self._blocks:
            self._blocks[block] = {r["task"]: r for r in read_block(self.path, block)}
        rec = self._blocks[block].get(task)
        return rec if rec is not None else find_record(self.path, task)

    def missing_tasks(self) -> list[int]:
        """Tasks without a record (not finished, or their record was lost)."""
        return [t for t in range(self.num_tasks) if t not in self.record_map]

    def task_range(self, task: int) -> tuple[int, int]:
        return task_range(task, self.num_samples, self.task_size)

    def check_task(self, task: int, fmt: str) -> None:
        """Raise DamagedShard unless task `task` has a record whose `fmt` files exist with their sizes."""
        rec = self.record(task)
        if rec is None:
            a, b = self.task_range(task)
            where = wds_path(self.path, task) if fmt == "wds" else self.path / "records"
            raise DamagedShard(f"{where}: task {task} (samples [{a}, {b})) has no record: it never finished or its record "
                               f"was lost; rerun the same `synthvox synth-shards` command to render it", where, task)
        for rel, info in format_files(rec, fmt).items():
            problem = file_problem(self.path, rel, info)
            if problem is not None:
                raise DamagedShard(f"{self.path / rel}: {problem}; {repair_hint(self.path)}", self.path / rel, task)

    def usable_tasks(self, fmt: str, *, allow_incomplete: bool = False, skip_bad_shards: bool = False,
                     tasks: list[int] | None = None) -> tuple[list[int], list[DamagedShard]]:
        """(tasks a reader may use, damaged tasks skipped): the tasks whose record exists and
        whose `fmt` files have their recorded sizes.

        An incomplete store is refused (IncompleteStore) unless `allow_incomplete`, which uses
        the finished tasks only (logged). A damaged task raises DamagedShard, or with
        `skip_bad_shards` is left out and returned in the second list (logged). `tasks`
        restricts the candidates (a resumed run keeps the tasks it started with).
        """
        missing = self.missing_tasks()
        if missing and not allow_incomplete:
            shown = ", ".join(map(str, missing[:8])) + (", ..." if len(missing) > 8 else "")
            raise IncompleteStore(
                f"{self.path} is incomplete: {len(missing)} of {self.num_tasks} tasks have no record (tasks {shown}); "
                "finish it by rerunning the same `synthvox synth-shards` command, or pass --allow-incomplete "
                "to train on the finished tasks only")
        if missing:
            log.warning("%s is incomplete: using the %d finished of %d tasks (--allow-incomplete)",
                        self.path, self.num_tasks - len(missing), self.num_tasks)
        candidates = range(self.num_tasks) if tasks is None else sorted(set(tasks))
        ok, bad = [], []
        for t in candidates:
            if t not in self.record_map:
                if tasks is not None and not allow_incomplete:
                    self.check_task(t, fmt)  # raises: a task the run used is gone
                continue
            try:
                self.check_task(t, fmt)
            except DamagedShard as e:
                if not skip_bad_shards:
                    raise
                log.warning("skipping damaged task %d (--skip-bad-shards): %s", t, e)
                bad.append(e)
                continue
            ok.append(t)
        return ok, bad

    def iter_wds_task(self, task: int) -> Iterator[dict[str, Any]]:
        """The samples of task `task`'s tar shard (labels, index, meta; views in a full store), in
        index order, after checking its record and size; a shard holding other indices or fewer
        samples than its range (truncated between two samples) raises DamagedShard."""
        self.check_task(task, "wds")
        path = wds_path(self.path, task)
        a, b = self.task_range(task)
        expected = a
        for s in iter_wds_shard(path, render_views=False):
            if int(s["index"]) != expected:
                raise DamagedShard(f"{path}: sample {s['index']} where {expected} was expected (damaged); "
                                   f"{repair_hint(self.path)}", path, task, "holds other samples")
            expected += 1
            yield s
        if expected != b:
            raise DamagedShard(f"{path}: holds samples [{a}, {expected}), expected [{a}, {b}) (truncated); "
                               f"{repair_hint(self.path)}", path, task, "truncated")

    def _wds_tasks(self) -> list[int]:
        return [t for t in range(self.num_tasks) if wds_path(self.path, t).is_file()]

    def wds_shards(self) -> list[Path]:
        """Sorted tar shards present on disk (a file exists only once complete; see usable_tasks
        for what the records vouch for)."""
        return [wds_path(self.path, t) for t in self._wds_tasks()]

    def task_ranges(self) -> list[tuple[int, int]]:
        """[start, stop) of each shard of `wds_shards()` (all tasks for a Zarr-only store), same order."""
        tasks = self._wds_tasks() if "wds" in self.formats else range(self.num_tasks)
        return [self.task_range(t) for t in tasks]

    def records(self) -> Iterator[dict[str, Any]]:
        """The task records (consolidated and loose)."""
        return iter_records(self.path)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, samples={self.num_samples}, formats={self.formats}, complete={self.complete})"


def open_store(path: str | Path) -> Store:
    """Open the store at `path`; a missing or invalid manifest raises naming the path."""
    return Store(path)
