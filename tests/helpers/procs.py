"""Forked children for the trainer's multi-process tests (no hang outlives its timeout)."""
from __future__ import annotations

import multiprocessing as mp
import os
import socket
import traceback
from typing import Any, Callable

__all__ = ["FORK", "child", "reap", "free_port", "run_ranks"]

FORK = mp.get_context("fork")


def child(q: Any, tag: Any, fn: Callable[..., Any], *args: Any) -> None:
    """Body of a forked child: put (tag, "ok"|"err", value) on q, then leave at once (os._exit), so no
    atexit handler inherited from the pytest process can keep the child alive."""
    code = 0
    try:
        q.put((tag, "ok", fn(*args)))
    except BaseException as e:  # noqa: BLE001 - report everything to the parent
        q.put((tag, "err", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
        code = 1
    finally:
        q.close()
        q.join_thread()
        os._exit(code)


def reap(procs: list[Any]) -> None:
    for p in procs:
        p.join(10)
        if p.is_alive():
            p.kill()
            p.join()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(fn: Callable[..., Any], world: int, args: tuple, timeout: float) -> list[Any]:
    """fn(rank, world, port, *args) in `world` forked processes; their results in rank order (an error fails)."""
    port = free_port()
    q = FORK.Queue()
    procs = [FORK.Process(target=child, args=(q, r, fn, r, world, port) + tuple(args)) for r in range(world)]
    for p in procs:
        p.start()
    results = {}
    try:
        for _ in range(world):
            rank, kind, value = q.get(timeout=timeout)
            assert kind == "ok", value
            results[rank] = value
    finally:
        reap(procs)
    return [results[r] for r in range(world)]
