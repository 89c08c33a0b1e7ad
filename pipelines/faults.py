"""Deterministic fault injection for tests (never for timing).

`SYNTHVOX_FAULTS` holds `;`-separated rules `KIND:key=value:...`, read by the client and
passed to each task in its spec (so an already running cluster sees them too):

- `die:task=3[:attempt=0]`   the process running task 3 exits abruptly mid-task (a lost worker;
                             with `--workers 0` it is the client itself that dies)
- `fail:task=5[:attempt=0]`  task 5 raises an ordinary exception (a deterministic failure)
- `enospc:task=2`            writing task 2's files fails with "No space left on device"
- `kill-client:done=2`       the client exits abruptly after 2 tasks completed (client side)
- `stop:task=4[:attempt=0]`  the process running task 4 stops itself with SIGSTOP mid-task, as a
                             hung NFS mount or a swapped node would (a Dask worker: the client's
                             task timeout resubmits the task elsewhere; send SIGCONT to resume it)

A rule without `attempt` fires on every attempt.
"""
from __future__ import annotations

import errno
import os
import signal
from typing import Any

from synthvox.core.errors import SynthvoxError

__all__ = ["ENV", "parse_faults", "fault_fires", "inject", "InjectedFailure"]

ENV = "SYNTHVOX_FAULTS"
KINDS = ("die", "fail", "enospc", "kill-client", "stop")


class InjectedFailure(SynthvoxError, RuntimeError):
    """The deterministic failure asked for by SYNTHVOX_FAULTS."""


def parse_faults(spec: str | None) -> list[dict[str, Any]]:
    """`"die:task=3:attempt=0;fail:task=5"` -> [{'kind': 'die', 'task': 3, 'attempt': 0}, ...]."""
    rules = []
    for part in (spec or "").split(";"):
        part = part.strip()
        if not part:
            continue
        kind, *kvs = part.split(":")
        if kind not in KINDS:
            raise ValueError(f"{ENV}: unknown fault kind {kind!r} in {part!r}; known: {', '.join(KINDS)}")
        rule: dict[str, Any] = {"kind": kind}
        for kv in kvs:
            k, _, v = kv.partition("=")
            if k not in ("task", "attempt", "done") or not v.isdigit():
                raise ValueError(f"{ENV}: bad field {kv!r} in {part!r}; use task=N, attempt=N or done=N")
            rule[k] = int(v)
        rules.append(rule)
    return rules


def fault_fires(rules: list[dict[str, Any]], kind: str, task: int, attempt: int) -> bool:
    return any(
        r["kind"] == kind and r.get("task", task) == task and r.get("attempt", attempt) == attempt
        for r in rules
    )


def inject(rules: list[dict[str, Any]], point: str, task: int, attempt: int) -> None:
    """Act out the rules that fire at `point` ('render' after the first sample, 'write' inside a file write)."""
    if not rules:
        return
    if point == "render":
        if fault_fires(rules, "die", task, attempt):
            os._exit(86)  # abrupt: no cleanup, temporaries stay behind, like a killed process
        if fault_fires(rules, "stop", task, attempt):
            os.kill(os.getpid(), signal.SIGSTOP)  # the whole process stops: no heartbeats, no progress
        if fault_fires(rules, "fail", task, attempt):
            raise InjectedFailure(f"injected failure in task {task} (attempt {attempt}) by {ENV}")
    elif point == "write" and fault_fires(rules, "enospc", task, attempt):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
