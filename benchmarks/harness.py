"""The one benchmark harness: time things, then append machine, command, date and figures
to benchmarks/RESULTS.md.

Each benchmark module exposes `main(argv=None)` that measures and calls `record(...)`.
Speed and memory targets are checked here, never by timed tests.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["RESULTS", "machine", "record", "median_time", "peak_rss_mib", "fmt_table", "cpu_seconds"]

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine() -> str:
    """One line describing this machine: CPU model, cores, memory, OS, Python, torch, GPU."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    torch_v, gpu = "", ""
    try:
        import torch

        torch_v = f", torch {torch.__version__}"
        if torch.cuda.is_available():
            gpu = f", GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return f"{cpu}, {os.cpu_count()} cores{mem}, {platform.system()} {platform.release()}, Python {platform.python_version()}{torch_v}{gpu}"


def git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=RESULTS.parent, timeout=5).stdout.strip() or "uncommitted"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_seconds() -> float:
    """CPU time of this process (user + system), all threads."""
    return time.process_time()


def median_time(fn: Callable[[], Any], repeat: int, warmup: int = 1, clock: Callable[[], float] = time.perf_counter) -> tuple[float, list[float]]:
    """Median and all timings of `fn()` over `repeat` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return statistics.median(times), times


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def fmt_table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of dict rows (columns from the first row)."""
    if not rows:
        return ""
    cols = list(rows[0])
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def record(title: str, body: str, command: str | None = None, notes: str = "") -> str:
    """Append a dated section (machine, command, git revision, body) to RESULTS.md; return it.

    With SYNTHVOX_BENCH_NO_RECORD=1 in the environment the section is printed only (trial runs).
    """
    command = command or " ".join(shlex.quote(a) for a in [Path(sys.executable).name, "-m"] + sys.argv)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"\n## {title}\n\n"
        f"- date: {now}\n- machine: {machine()}\n- command: `{command}`\n- revision: {git_rev()}\n"
        + (f"- notes: {notes}\n" if notes else "")
        + f"\n{body.strip()}\n"
    )
    if os.environ.get("SYNTHVOX_BENCH_NO_RECORD") == "1":
        print(section)
        return section
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nAppended by `make bench` (benchmarks/harness.py); newest last.\n")
    with RESULTS.open("a") as f:
        f.write(section)
    print(section)
    return section
