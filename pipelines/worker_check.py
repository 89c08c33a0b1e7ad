"""At the start of a cluster run: every worker can write the store and runs the client's versions.

A worker on another synthvox, torch or numcodecs would write other bytes (BYTE_DECIDING); a
worker that does not see the store's file system would fail every task. Both are refused
before any task runs, naming the worker.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import PipelineError
from .manifest import BYTE_DECIDING, software_versions

__all__ = ["check_workers"]


def _worker_probe(root: str) -> dict[str, Any]:
    out: dict[str, Any] = {"versions": software_versions()}
    try:
        p = Path(root) / f".probe-{os.getpid()}-{os.uname().nodename}"
        p.write_bytes(b"ok")
        p.unlink()
        out["writable"] = True
    except OSError as e:
        out["writable"] = f"{type(e).__name__}: {e}"
    return out


def check_workers(client: Any, root: Path) -> None:
    """Every worker can write the store and runs the client's versions of BYTE_DECIDING."""
    mine = software_versions()
    replies: dict[str, dict[str, Any]] = client.run(_worker_probe, str(root))
    if not replies:
        raise PipelineError(f"the Dask cluster at {client.scheduler.address} has no workers; start some, then rerun")
    problems = []
    for addr, r in replies.items():
        if r["writable"] is not True:
            problems.append(f"{addr} cannot write {root}: {r['writable']} (the store must be on a shared file system)")
        for pkg in BYTE_DECIDING:
            if r["versions"].get(pkg) != mine.get(pkg):
                problems.append(f"{addr} runs {pkg} {r['versions'].get(pkg)}, the client {mine.get(pkg)}")
    if problems:
        raise PipelineError("worker check failed:\n  " + "\n  ".join(problems))
