"""The errors of a store, each with a message naming the file and the fix.

Every class derives from `SynthvoxError` (the CLI prints the message and exits 1, no
traceback) and keeps a built-in second base so `except ValueError` keeps working.
"""
from __future__ import annotations

from pathlib import Path

from synthvox.core.errors import SynthvoxError
from synthvox.engine.schema import SchemaError

__all__ = ["StoreError", "ManifestError", "StoreMismatch", "IncompleteStore", "DamagedShard", "PipelineError",
           "repair_hint"]


def repair_hint(store: str | Path) -> str:
    """What to do about a damaged or missing store file."""
    return (f"run `synthvox verify {store}` to list every damaged file, then rerun the same "
            "`synthvox synth-shards` command with --reverify to re-render them")


class StoreError(SynthvoxError, ValueError):
    """A store cannot be read as asked."""


class ManifestError(StoreError, SchemaError):
    """manifest.json is unreadable, of another schema or layout version, or does not follow the
    manifest schema."""


class StoreMismatch(StoreError):
    """An existing store was written with another task size, config, seed, format or version."""


class IncompleteStore(StoreError):
    """The store's records do not vouch for every task (synth-shards has not finished)."""


class DamagedShard(StoreError):
    """A store file is missing, has another size than its record, or does not decode.

    `.file` names the file (a path), `.task` the task it belongs to (None when unknown),
    `.problem` what is wrong with it, in a few words.
    """

    def __init__(self, message: str, file: str | Path | None = None, task: int | None = None,
                 problem: str | None = None) -> None:
        super().__init__(message)
        self.file = str(file) if file is not None else None
        self.task = task
        self.problem = problem or message


class PipelineError(SynthvoxError, RuntimeError):
    """The run stopped or finished with failed tasks; `.summary` holds the run summary."""

    def __init__(self, message: str, summary: dict | None = None) -> None:
        super().__init__(message)
        self.summary = summary or {}
