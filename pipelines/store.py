"""`open_store(path) -> Store`: a finished (or growing) store as the trainer and verify see it."""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

from synthvox.engine.config import EngineConfig

from .layout import num_tasks, task_range, wds_path
from .manifest import iter_records, read_manifest

__all__ = ["open_store", "Store"]


class Store:
    """A store directory and its manifest (see docs/ARCHITECTURE.md, "Store")."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.manifest: dict[str, Any] = read_manifest(self.path)

    @property
    def num_samples(self) -> int:
        return int(self.manifest["samples"])

    @property
    def formats(self) -> tuple[str, ...]:
        return tuple(self.manifest["formats"])

    @property
    def content(self) -> str:
        return str(self.manifest["content"])

    @property
    def seed(self) -> int:
        return int(self.manifest["seed"])

    @property
    def task_size(self) -> int:
        return int(self.manifest["task_size"])

    @property
    def num_tasks(self) -> int:
        return num_tasks(self.num_samples, self.task_size)

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    @cached_property
    def engine_config(self) -> Any:
        return EngineConfig.from_dict(self.manifest["engine_config"])

    def task_range(self, task: int) -> tuple[int, int]:
        return task_range(task, self.num_samples, self.task_size)

    def _wds_tasks(self) -> list[int]:
        return [t for t in range(self.num_tasks) if wds_path(self.path, t).is_file()]

    def wds_shards(self) -> list[Path]:
        """Sorted complete tar shards (a file exists only once complete)."""
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
    """Open the store at `path`; a missing manifest or another schema version raises naming the path."""
    return Store(path)
