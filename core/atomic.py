"""Atomic writes for every part: a private temporary in the same directory, fsync, `os.replace`.

Nothing half-written ever appears under a final name, and a writer that fails (a full disk)
removes its temporary and raises `WriteError` naming the file and the fix. Temporaries are
created like plain files, so finished files and directories get the usual modes (0666 and
0777 minus the umask), whatever wrote them: bytes, text, JSON, a matplotlib figure, a NIfTI
image (any object with nibabel's `to_filename`) or a whole directory.

    write_json(path, record)                 # canonical JSON: equal content, equal bytes
    with atomic_open(path) as f: f.write(b"...")
    with atomic_dir(bank_dir) as tmp: ...    # fill tmp; it is renamed to bank_dir when done
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

from .errors import SynthvoxError

__all__ = [
    "WriteError", "FATAL_ERRNOS", "explain_oserror", "tmp_name", "atomic_open", "atomic_path", "write_bytes",
    "write_text", "write_json", "write_figure", "write_nifti", "atomic_dir", "new_tmp_dir", "commit_dir",
    "sha256_file",
]

#: errors no retry can cure: a run stops with a clear message
FATAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


class WriteError(SynthvoxError, OSError):
    """Writing a file failed; the message names the file and what to do."""


def explain_oserror(e: OSError, final: Path) -> WriteError:
    """A WriteError naming `final` and saying what to do about `e`."""
    hint = {
        errno.ENOSPC: "the disk is full: free space (see `synthvox synth-shards --dry-run` for the size a store needs), then rerun to resume",
        errno.EDQUOT: "the disk quota is exceeded: free space, then rerun to resume",
        errno.EROFS: "the file system is read-only: choose a writable --out",
        errno.EACCES: "permission denied: choose a writable --out or fix its permissions",
        errno.EPERM: "permission denied: choose a writable --out or fix its permissions",
    }.get(e.errno or 0, "see the error above; rerun to resume")
    err = WriteError(e.errno or 0, f"cannot write {final}: {e.strerror or e}; {hint}")
    err.filename = str(final)
    return err


def tmp_name(final: Path, suffix: str = "") -> Path:
    """A private temporary beside `final` (hidden, unique per attempt, same file system).

    `suffix` is appended, for writers that pick the format from the name (".nii.gz").
    """
    final = Path(final)
    return final.with_name(f".{final.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp{suffix}")


def _unlink_quiet(p: Path) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(final: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `final` for a writer that takes a file name; when the
    block ends it is synced and renamed to `final`; on an error it is removed."""
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise explain_oserror(e, final) from e
    tmp = tmp_name(final, suffix)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, final)
    except OSError as e:
        _unlink_quiet(tmp)
        if isinstance(e, WriteError):
            raise
        raise explain_oserror(e, final) from e
    except BaseException:
        _unlink_quiet(tmp)
        raise


@contextmanager
def atomic_open(final: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a private temporary for writing; on success it becomes `final`, on error it vanishes."""
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise explain_oserror(e, final) from e
    tmp = tmp_name(final)
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except OSError as e:
        _unlink_quiet(tmp)
        if isinstance(e, WriteError):
            raise
        raise explain_oserror(e, final) from e
    except BaseException:
        _unlink_quiet(tmp)
        raise


def write_bytes(final: str | Path, data: bytes) -> Path:
    """Write `data` to `final` atomically; returns the path."""
    with atomic_open(final, "wb") as f:
        f.write(data)
    return Path(final)


def write_text(final: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `final` atomically; returns the path."""
    return write_bytes(final, text.encode())


def write_json(final: str | Path, obj: Any, *, indent: int | None = 1, sort_keys: bool = True,
               newline: bool = True) -> Path:
    """Write `obj` as JSON atomically; sorted keys and a fixed indentation (the defaults) make
    equal content give equal bytes. `newline` ends the file with one."""
    text = json.dumps(obj, sort_keys=sort_keys, indent=indent)
    return write_text(final, text + "\n" if newline else text)


def write_figure(final: str | Path, fig: Any, *, close: bool = True, **savefig_kwargs: Any) -> Path:
    """Save a matplotlib figure atomically (the format from `final`'s suffix unless given) and,
    with `close`, close it (also on an error)."""
    final = Path(final)
    savefig_kwargs.setdefault("format", final.suffix.lstrip(".").lower() or "png")
    try:
        with atomic_open(final, "wb") as f:
            fig.savefig(f, **savefig_kwargs)
    finally:
        if close:
            import matplotlib.pyplot as plt  # lazily: only figure writers pay for pyplot

            plt.close(fig)
    return final


def write_nifti(final: str | Path, image: Any) -> Path:
    """Save a nibabel image atomically (the temporary keeps `.nii` / `.nii.gz`, which nibabel
    reads the format from)."""
    final = Path(final)
    suffix = ".nii.gz" if final.name.endswith(".gz") else ".nii"
    with atomic_path(final, suffix) as tmp:
        image.to_filename(str(tmp))
    return final


def new_tmp_dir(final: str | Path) -> Path:
    """Create a private temporary directory beside `final` (for `commit_dir`)."""
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = tmp_name(final)
        tmp.mkdir()
    except OSError as e:
        raise explain_oserror(e, final) from e
    return tmp


def commit_dir(tmp: Path, final: str | Path, *, overwrite: bool = False) -> Path:
    """Sync the files of the finished directory `tmp` and rename it to `final`.

    An existing `final` is replaced with `overwrite` (moved aside, then removed once the new
    one is in place); without it, or when another process put a directory there meanwhile,
    raises FileExistsError and leaves that one untouched. On any failure `tmp` is removed.
    """
    final = Path(final)
    old = None
    try:
        for p in tmp.iterdir():
            if p.is_file():
                _fsync_file(p)
        if overwrite and final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            os.rename(final, old)
        os.rename(tmp, final)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            os.rename(old, final)
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(e.errno, f"{final} appeared while writing it ({e})") from e
        raise explain_oserror(e, final) from e
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


@contextmanager
def atomic_dir(final: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a private temporary directory; when the block ends it becomes `final` (see
    `commit_dir`); on an error it is removed."""
    tmp = new_tmp_dir(final)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    commit_dir(tmp, final, overwrite=overwrite)


def sha256_file(path: str | Path, bufsize: int = 1 << 20) -> str:
    """sha256 (hex) of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()
