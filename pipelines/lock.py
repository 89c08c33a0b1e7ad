"""One client per store: an advisory lock held for the whole run.

A second `synth-shards` (or `convert`) on the same store would clean the first one's private
temporaries on start-up and race it on the records and the manifest. `store_lock(root)` takes
an exclusive `fcntl.flock` on `STORE/logs/client.lock` and writes who holds it (host, pid, start
time, command); a second client fails at once with a `StoreBusy` naming them. The kernel drops
the lock when the holder exits, however it exits (killed, crashed), so there is nothing stale to
clean up. The lock file lives under `logs/`, which is not part of the reproducible store.

flock is reliable on local disks and on most cluster file systems (Lustre and GPFS with flock
enabled; NFSv4); where it is not, run one client per store, as the message says.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from synthvox.core.errors import SynthvoxError

__all__ = ["StoreBusy", "store_lock", "LOCK_NAME"]

LOCK_NAME = "logs/client.lock"


class StoreBusy(SynthvoxError, RuntimeError):
    """Another client holds the store's lock."""


@contextmanager
def store_lock(root: str | Path) -> Iterator[Path]:
    """Hold the store's client lock for the duration of the block (creates `logs/`)."""
    path = Path(root) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            raise StoreBusy(f"{root} is in use by another synth-shards client ({holder}); wait for it to finish "
                            f"or stop it, then rerun this command (it resumes). The lock is {path}.") from None
        info = {"host": socket.gethostname(), "pid": os.getpid(),
                "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": " ".join(sys.argv)[:500]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the flock


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "holder unknown"
    return f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')}: {info.get('command', '')}"
