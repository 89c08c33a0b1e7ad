"""What a run tells: RUN/log.jsonl (every `train.log_every` steps, validation lines), tensorboard,
and the console: a start header, then a live bar on a terminal or a line every `log_every`
steps / `log_every_s` seconds otherwise (a log file of a long run stays short).
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from synthvox.core.atomic import write_text

__all__ = ["RunLog", "Console", "ConsoleConfig", "format_seconds"]


class RunLog:
    """RUN/log.jsonl (appended; a resumed run first drops the lines of steps it will redo) and tensorboard."""

    def __init__(self, out: Path, start: int, tensorboard: bool, say: Callable[[str], None]) -> None:
        path = out / "log.jsonl"
        if path.exists():
            keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", -1) < start]
            write_text(path, "".join(ln + "\n" for ln in keep))
        self._f = path.open("a")
        self._tb = _tensorboard(out, say) if tensorboard else None

    def write(self, rec: dict[str, Any]) -> None:
        """One JSONL line; training records (with `loss`) and validation records also go to tensorboard."""
        self._f.write(json.dumps(rec) + "\n")
        self._f.flush()
        if self._tb is None:
            return
        step = rec["step"]
        if "loss" in rec:
            self._tb.add_scalar("loss/train", rec["loss"], step)
            self._tb.add_scalar("lr", rec["lr"], step)
            for t, v in rec["taps"].items():
                self._tb.add_scalar(f"loss/{t}", v, step)
        for k, v in rec.items():
            if (k == "val_loss" or k.startswith("probe/")) and isinstance(v, (int, float)):
                self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        self._f.close()
        if self._tb is not None:
            self._tb.close()


def _tensorboard(out: Path, say: Callable[[str], None]) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter  # lazily: tensorboard is optional
    except ImportError:
        say("tensorboard is not installed: logging to log.jsonl only (pip install tensorboard)")
        return None
    return SummaryWriter(str(out / "tb"))


@dataclass(frozen=True)
class ConsoleConfig:
    log_every: int = 100        # a progress line every this many steps (no terminal)
    log_every_s: float = 60.0   # ... or when this many seconds passed since the last one (0 = off)
    live: bool = False          # a live bar on the terminal (stdout) instead of lines


def format_seconds(s: float) -> str:
    """1:02:03 / 3d 4:05:06 / 0:07."""
    s = int(max(0.0, s))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    hms = f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
    return f"{d}d {hms}" if d else hms


class Console:
    """The console of rank 0: header, progress (bar or lines), messages. Other ranks say nothing."""

    def __init__(self, say: Callable[[str], None], cfg: ConsoleConfig, total: int, start: int, enabled: bool = True) -> None:
        self._say, self.cfg, self.total, self.start = say, cfg, total, start
        self.enabled = enabled
        self._t0 = time.perf_counter()
        self._last_line_t = self._t0
        self._bar_shown = False
        self._rate: float | None = None     # steps per second, smoothed
        self._data = 0.0
        self._skipped = 0

    def say(self, msg: str) -> None:
        if not self.enabled:
            return
        self._clear_bar()
        self._say(msg)

    def header(self, fields: dict[str, Any]) -> None:
        self.say("pretrain: " + "  ".join(f"{k} {v}" for k, v in fields.items()))

    def step(self, step: int, loss: float, lr: float, samples_per_s: float, data_wait: float, dt: float,
             skipped: int = 0) -> None:
        """After step `step` (0-based): the bar, or a line when `log_every` steps / `log_every_s` seconds passed."""
        if not self.enabled:
            return
        rate = 1.0 / max(dt, 1e-9)
        self._rate = rate if self._rate is None else 0.9 * self._rate + 0.1 * rate
        self._data = data_wait if step == self.start else 0.9 * self._data + 0.1 * data_wait
        self._skipped += skipped
        done = step + 1
        eta = (self.total - done) / self._rate if self._rate else 0.0
        elapsed = time.perf_counter() - self._t0
        text = (f"step {done}/{self.total} ({done / self.total:.0%})  loss {loss:.4f}  lr {lr:.2e}  "
                f"{samples_per_s:.2f} samples/s  data {self._data:.0%}  elapsed {format_seconds(elapsed)}  "
                f"ETA {format_seconds(eta)}" + (f"  skipped shards {self._skipped}" if self._skipped else ""))
        if self.cfg.live:
            width = 24
            fill = int(width * done / self.total)
            sys.stdout.write("\r[" + "#" * fill + "." * (width - fill) + "] " + text + "\x1b[K")
            sys.stdout.flush()
            self._bar_shown = True
            return
        now = time.perf_counter()
        due = (done - self.start) % self.cfg.log_every == 0 or done == self.total or done == self.start + 1
        if self.cfg.log_every_s > 0 and now - self._last_line_t >= self.cfg.log_every_s:
            due = True
        if due:
            self._last_line_t = now
            self._say(text)

    def close(self) -> None:
        if self._bar_shown:
            sys.stdout.write("\n")
            sys.stdout.flush()
            self._bar_shown = False

    def _clear_bar(self) -> None:
        if self._bar_shown:
            sys.stdout.write("\r\x1b[K")
            sys.stdout.flush()
            self._bar_shown = False
