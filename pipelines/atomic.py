"""Atomic file writes: a private temporary in the same directory, fsync, then `os.replace`.

Nothing half-written ever appears under a final name; an error (a full disk) removes the
temporary and names the file in the message.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

from .layout import tmp_name

__all__ = ["explain_oserror", "atomic_open", "write_bytes_atomic", "write_json_atomic", "sha256_file", "StoreIOError", "FATAL_ERRNOS"]

#: errors no retry can cure: the whole run stops with a clear message
FATAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


class StoreIOError(OSError):
    """Writing a store file failed; the message names the file and what to do."""


def explain_oserror(e: OSError, final: Path) -> StoreIOError:
    """A StoreIOError naming `final` and saying what to do about `e`."""
    hint = {
        errno.ENOSPC: "the disk is full: free space (see `synthvox synth-shards --dry-run` for the size needed), then rerun to resume",
        errno.EDQUOT: "the disk quota is exceeded: free space, then rerun to resume",
        errno.EROFS: "the file system is read-only: choose a writable --out",
        errno.EACCES: "permission denied: choose a writable --out or fix its permissions",
        errno.EPERM: "permission denied: choose a writable --out or fix its permissions",
    }.get(e.errno or 0, "see the error above; rerun to resume")
    err = StoreIOError(e.errno or 0, f"cannot write {final}: {e.strerror or e}; {hint}")
    err.filename = str(final)
    return err


@contextmanager
def atomic_open(final: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a private temporary for writing; on success it becomes `final`, on error it vanishes."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(final)
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except OSError as e:
        _unlink_quiet(tmp)
        if isinstance(e, StoreIOError):
            raise
        raise explain_oserror(e, final) from e
    except BaseException:
        _unlink_quiet(tmp)
        raise


def _unlink_quiet(p: Path) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


def write_bytes_atomic(final: Path, data: bytes) -> None:
    with atomic_open(final, "wb") as f:
        f.write(data)


def write_json_atomic(final: Path, obj: Any) -> None:
    """Canonical JSON (sorted keys, fixed indentation) so equal content gives equal bytes."""
    write_bytes_atomic(final, (json.dumps(obj, sort_keys=True, indent=1) + "\n").encode())


def sha256_file(path: Path, bufsize: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()
