"""Progress of a run: samples done (finished tasks plus the samples running tasks reported),
samples/s, ETA, failures and stalled tasks.

A live bar (carriage return) on a TTY, a plain line every `interval` seconds otherwise.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


def _fmt_eta(s: float) -> str:
    if s != s or s == float("inf"):
        return "?"
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    def __init__(self, total: int, done: int = 0, stream: TextIO | None = None, interval: float = 10.0,
                 enabled: bool = True) -> None:
        self.total, self.start_done, self.done = total, done, done
        self.failures = 0
        self.stalled = 0                       # tasks past their deadline, resubmitted elsewhere
        self._partial: dict[int, int] = {}     # task -> samples it reported done so far
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = 0.2 if self.tty else interval
        self.enabled = enabled
        self.t0 = time.perf_counter()
        self._last = 0.0

    def partial(self, task: int, done: int) -> None:
        """Task `task` reports `done` of its samples finished (shown at the next update; safe to
        call from another thread)."""
        self._partial[task] = done

    def task_done(self, task: int, samples: int) -> None:
        """Task `task` finished with `samples` samples (0: it failed; its partial count goes)."""
        self._partial.pop(task, None)
        self.update(samples)

    def line(self) -> str:
        done = self.done + sum(list(self._partial.values()))
        dt = max(time.perf_counter() - self.t0, 1e-9)
        rate = (done - self.start_done) / dt
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        pct = 100.0 * done / max(self.total, 1)
        fail = f", {self.failures} failed" if self.failures else ""
        fail += f", {self.stalled} stalled (resubmitted)" if self.stalled else ""
        if self.tty:
            width = 30
            fill = int(width * done / max(self.total, 1))
            bar = "#" * fill + "-" * (width - fill)
            return f"[{bar}] {done}/{self.total} samples ({pct:.1f}%), {rate:.2f} samples/s, ETA {_fmt_eta(eta)}{fail}"
        return f"progress: {done}/{self.total} samples ({pct:.1f}%), {rate:.2f} samples/s, ETA {_fmt_eta(eta)}{fail}"

    def update(self, samples: int = 0, failures: int = 0, force: bool = False) -> None:
        self.done += samples
        self.failures += failures
        now = time.perf_counter()
        if self.enabled and (force or now - self._last >= self.interval):
            self._last = now
            if self.tty:
                self.stream.write("\r" + self.line())
            else:
                self.stream.write(self.line() + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.update(force=True)
            if self.tty:
                self.stream.write("\n")
                self.stream.flush()
