"""The built-in procedural bank: built deterministically on first use, cached per user.

`resolve_bank(None)` returns it (building it under `cache_dir()` once, safely when many
processes race); `resolve_bank(path)` opens a bank directory. Open banks are cached per process.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Callable, Iterator

from .bank import BankError, TemplateBank, open_bank
from .procedural import GENERATOR_VERSION, make_procedural_bank

__all__ = ["DEFAULT_COUNT", "DEFAULT_SEED", "cache_dir", "default_bank_path", "resolve_bank"]

#: count and seed of the built-in bank; procedural.GENERATOR_VERSION names the generator
#: (bumped when the procedural code changes)
DEFAULT_COUNT = 384
DEFAULT_SEED = 0

_OPEN: dict[tuple[str, int, int], TemplateBank] = {}


def cache_dir() -> Path:
    """`$SYNTHVOX_CACHE`, or `~/.cache/synthvox`."""
    return Path(os.environ.get("SYNTHVOX_CACHE") or Path.home() / ".cache" / "synthvox").expanduser()


def default_bank_path() -> Path:
    """Where the built-in procedural bank lives (built on first use)."""
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
        fh = open(path.parent / f".{path.name}.lock", "w")
    except OSError:
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
