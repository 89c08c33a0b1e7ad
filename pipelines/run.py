"""The run: feed a store's unfinished tasks to a worker pool and keep the books.

The client keeps a bounded window of attempts in flight (memory stays flat however many
tasks there are). A task lost with its worker is resubmitted; a task failing
deterministically is retried `retries` times, then reported; more than `max_failures`
failures stop the run; a full disk or a read-only store stops it at once. A task that has
run past its deadline (`task_timeout`, by default TIMEOUT_FACTOR times the median task time
of this run, at least TIMEOUT_FLOOR_S) is resubmitted to another worker and shown as stalled
in the progress line; whichever attempt finishes first wins (both write the same bytes
through private temporaries). Tasks report their samples as they go, so the progress line
moves within a task.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from synthvox.core.atomic import WriteError

from .faults import ENV as FAULTS_ENV
from .faults import parse_faults
from .progress import Progress
from .records import RecordBook
from .skeleton import cleanup_temporaries
from .task import FatalTaskError, Renderer, TaskSpec, run_task

__all__ = ["Run", "TIMEOUT_FACTOR", "TIMEOUT_FLOOR_S", "LOST_RETRIES"]

CONSOLIDATE_EVERY_S = 30.0
LOST_RETRIES = 3           # resubmissions of a task whose worker died or stalled
TIMEOUT_FACTOR = 10.0      # default deadline: this many times the median task time of the run ...
TIMEOUT_FLOOR_S = 60.0     # ... and never less (a loaded node, a slow first task)
POLL_S = 1.0               # how often the client wakes to check deadlines and draw progress


@dataclass
class _Attempt:
    task: int
    attempt: int
    future: Any
    started: float | None = None   # when the client first saw it on a worker
    worker: str | None = None
    stalled: bool = False


class Run:
    """The client's bookkeeping of one run (shared by the in-process and Dask paths)."""

    def __init__(self, root: Path, book: RecordBook, *, max_failures: int = 0, retries: int = 1,
                 progress: bool = True, stream: Any = None, source: str | None = None,
                 renderer: Renderer | None = None, task_timeout: float | None = None) -> None:
        self.root, self.book, self.manifest = root, book, book.manifest
        self.max_failures, self.retries = max_failures, retries
        self.faults = os.environ.get(FAULTS_ENV, "")
        self.rules = parse_faults(self.faults)
        self.stream = stream or sys.stderr
        self.progress = Progress(self.manifest.samples, book.samples_done(), stream=self.stream, enabled=progress)
        self.source = source
        self.renderer = renderer
        self.task_timeout = task_timeout
        self.failed: list[dict[str, Any]] = []
        self.fatal: str | None = None
        self.completed = 0
        self.skipped = book.tasks_done
        self.stalls = 0
        self._errors: dict[int, int] = {}
        self._lost: dict[int, int] = {}
        self._seconds: list[float] = []
        self._next_attempt: dict[int, int] = {}
        self.stalled_tasks: set[int] = set()
        self._last_flush = time.perf_counter()
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self._log = open(root / "logs" / f"run-{stamp}-{os.getpid()}.jsonl", "a")

    def log(self, msg: str) -> None:
        self.stream.write(msg + "\n")
        self.stream.flush()

    def todo(self) -> Iterator[int]:
        """Tasks still to render, ascending (lazily: never a list of every task)."""
        done = self.book.done
        return (t for t in range(self.book.tasks) if not done[t])

    def spec(self, task: int, attempt: int, progress_topic: str | None = None) -> TaskSpec:
        return TaskSpec.of(self.manifest, self.root, task, attempt=attempt, faults=self.faults, source=self.source,
                           renderer=self.renderer, progress_topic=progress_topic)

    def deadline(self) -> float | None:
        """Seconds a task may run before it is resubmitted elsewhere (None: no result yet to calibrate on)."""
        if self.task_timeout is not None:
            return self.task_timeout
        if not self._seconds:
            return None
        return max(TIMEOUT_FLOOR_S, TIMEOUT_FACTOR * statistics.median(self._seconds))

    def on_result(self, rec: dict[str, Any]) -> None:
        log = rec.pop("log", {})
        if self.book.done[rec["task"]]:
            return  # a second attempt of a task already recorded (a stalled one that woke up)
        self.book.add(rec)
        self._log.write(json.dumps({"task": rec["task"], **log}) + "\n")
        self.completed += 1
        if "seconds" in log:
            self._seconds.append(float(log["seconds"]))
        self.progress.task_done(rec["task"], rec["range"][1] - rec["range"][0])
        now = time.perf_counter()
        if now - self._last_flush > CONSOLIDATE_EVERY_S:
            self._log.flush()
            self.book.write_manifest()
            self._last_flush = now
        for r in self.rules:
            if r["kind"] == "kill-client" and r.get("done") == self.completed:
                os._exit(87)  # injected: the client dies abruptly (tests of resume)

    def on_error(self, task: int, attempt: int, exc: BaseException, lost: bool) -> int | None:
        """Decide what follows a failed attempt: the next attempt number, or None (given up)."""
        if isinstance(exc, (FatalTaskError, WriteError)):
            self.fatal = self.fatal or f"task {task} stopped the run: {exc}"
            return None
        self.progress.task_done(task, 0)
        if lost:
            self._lost[task] = self._lost.get(task, 0) + 1
            if self._lost[task] <= LOST_RETRIES:
                self.log(f"task {task}: worker lost, resubmitting (attempt {attempt + 1})")
                return attempt + 1
        else:
            self._errors[task] = self._errors.get(task, 0) + 1
            if self._errors[task] <= self.retries:
                self.log(f"task {task}: {type(exc).__name__}: {exc}; retrying (attempt {attempt + 1})")
                return attempt + 1
        a, b = self.manifest.task_range(task)
        self.failed.append({"task": task, "range": [a, b], "error": f"{type(exc).__name__}: {exc}"})
        self.progress.update(failures=1)
        if len(self.failed) > self.max_failures:
            self.fatal = (f"{len(self.failed)} task(s) failed (more than --max-failures {self.max_failures}); "
                          f"first: task {self.failed[0]['task']}: {self.failed[0]['error']}")
        return None

    # -- in this process -------------------------------------------------------------------

    def run_local(self) -> None:
        threads = torch.get_num_threads()  # tasks render single-threaded; give the caller its setting back
        try:
            for task in self.todo():
                attempt: int | None = 0
                while attempt is not None:
                    try:
                        rec = run_task(self.spec(task, attempt), lambda done, t=task: self._local_progress(t, done))
                        self.on_result(rec)
                        attempt = None
                    except Exception as e:  # noqa: BLE001 - classified by on_error
                        attempt = self.on_error(task, attempt, e, lost=False)
                if self.fatal:
                    return
        finally:
            torch.set_num_threads(threads)

    def _local_progress(self, task: int, done: int) -> None:
        self.progress.partial(task, done)
        self.progress.update()

    # -- on a Dask cluster -----------------------------------------------------------------

    def run_dask(self, client: Any, window: int | None = None) -> None:
        from distributed import wait  # lazily: ~1 s of startup, for cluster runs only
        from distributed.scheduler import KilledWorker

        nthreads = max(1, sum(w.get("nthreads", 1) for w in client.scheduler_info(n_workers=-1)["workers"].values()))
        window = window or max(4, 2 * nthreads)
        todo = self.todo()
        tag = f"{os.getpid()}-{id(self) % 100000}"
        topic = f"synthvox-progress-{tag}"
        inflight: dict[str, _Attempt] = {}
        client.subscribe_topic(topic, self._on_event)

        def submit(task: int, attempt: int, workers: list[str] | None = None) -> None:
            attempt = max(attempt, self._next_attempt.get(task, 0))  # never reuse a key still known to Dask
            self._next_attempt[task] = attempt + 1
            placement = {"workers": workers, "allow_other_workers": False} if workers else {}
            fut = client.submit(run_task, self.spec(task, attempt, topic), key=f"synthvox-{tag}-t{task}-a{attempt}",
                                pure=False, **placement)
            inflight[fut.key] = _Attempt(task, attempt, fut)

        def fill() -> None:
            for t in todo:
                submit(t, 0)
                if sum(1 for a in inflight.values() if not a.stalled) >= window:
                    break

        try:
            fill()
            last_poll = 0.0
            while inflight:
                try:
                    done, _ = wait([a.future for a in inflight.values()], timeout=POLL_S, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    done = set()
                for fut in done:
                    att = inflight.pop(fut.key, None)
                    if att is None:
                        continue
                    nxt = self._settle(client, att, inflight, KilledWorker)
                    if self.fatal:
                        client.cancel([a.future for a in inflight.values()])
                        inflight.clear()
                        return
                    if nxt is not None:
                        submit(att.task, nxt)
                    else:
                        fill()
                now = time.monotonic()
                if now - last_poll >= 2 * POLL_S:
                    last_poll = now
                    self._check_deadlines(client, inflight, submit)
                self.progress.update()
        finally:
            client.unsubscribe_topic(topic)

    def _on_event(self, event: Any) -> None:
        """A task's report of its samples done (runs on the client's event loop thread)."""
        _, msg = event
        if not self.book.done[int(msg["task"])]:
            self.progress.partial(int(msg["task"]), int(msg["done"]))

    def _settle(self, client: Any, att: _Attempt, inflight: dict[str, _Attempt], killed: type) -> int | None:
        """Handle a finished attempt; returns the next attempt number to submit, or None."""
        fut = att.future
        siblings = [k for k, a in inflight.items() if a.task == att.task]
        ok = fut.status == "finished"
        ended = [att] + ([inflight[k] for k in siblings] if ok else [])
        self.stalls -= sum(1 for a in ended if a.stalled)
        self.progress.stalled = self.stalls
        if ok:
            self.on_result(fut.result())
            fut.release()
            if siblings:
                client.cancel([inflight.pop(k).future for k in siblings])  # the other attempts' bytes are the same
            return None
        exc = fut.exception()
        fut.release()
        if siblings and not isinstance(exc, (FatalTaskError, WriteError)):
            return None  # another attempt of this task is still running: let it finish
        return self.on_error(att.task, att.attempt, exc, lost=isinstance(exc, killed))

    def _check_deadlines(self, client: Any, inflight: dict[str, _Attempt], submit: Any) -> None:
        """Note when attempts start on a worker; resubmit elsewhere those past their deadline."""
        try:
            processing = client.processing()
        except (OSError, TimeoutError):
            return
        now = time.monotonic()
        for worker, keys in processing.items():
            for key in keys:
                att = inflight.get(key)
                if att is not None and att.started is None:
                    att.started, att.worker = now, worker
        limit = self.deadline()
        if limit is None:
            return
        for att in list(inflight.values()):
            if att.stalled or att.started is None or now - att.started <= limit:
                continue
            if any(a.task == att.task and a is not att for a in inflight.values()):
                continue  # already resubmitted
            att.stalled = True
            self.stalls += 1
            self.progress.stalled = self.stalls
            self._lost[att.task] = self._lost.get(att.task, 0) + 1
            others = [w for w in client.scheduler_info(n_workers=-1)["workers"] if w != att.worker]
            if not others or self._lost[att.task] > LOST_RETRIES:
                self.log(f"task {att.task}: no result after {now - att.started:.0f} s on {att.worker} "
                         f"(task timeout {limit:.0f} s) and no other worker to resubmit it to; waiting")
                continue
            nxt = self._next_attempt.get(att.task, att.attempt + 1)
            self.stalled_tasks.add(att.task)
            self.log(f"task {att.task}: no result after {now - att.started:.0f} s on {att.worker} "
                     f"(task timeout {limit:.0f} s); resubmitted to another worker (attempt {nxt})")
            submit(att.task, nxt, others)
            self.progress.update(force=True)

    # -- the end ---------------------------------------------------------------------------

    def finish(self) -> None:
        self._log.close()
        cleanup_temporaries(self.root)
        self.book.write_manifest()
        self.progress.close()

    def summary(self, seconds: float) -> dict[str, Any]:
        rendered = self.book.samples_done() - self.progress.start_done
        return {
            "store": str(self.root), "samples": self.manifest.samples, "tasks": self.book.tasks,
            "tasks_done": self.book.tasks_done, "tasks_skipped": self.skipped, "tasks_rendered": self.completed,
            "failed": self.failed, "complete": self.book.tasks_done == self.book.tasks,
            "seconds": seconds, "samples_per_s": rendered / seconds if seconds > 0 else 0.0,
            "bytes": dict(self.book.bytes), "stalled_tasks": sorted(self.stalled_tasks),
        }
