"""Loss curves of a run (log.jsonl) as a PNG, and probe curves when the log holds `probe/...` keys."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synthvox.core.atomic import write_figure

__all__ = ["read_log", "plot_log", "probe_series", "PROBE_PREFIX"]

#: log keys of representation probes (downstream/probes.py's hook) start with this
PROBE_PREFIX = "probe/"


def read_log(run: str | Path) -> tuple[list[dict], list[dict]]:
    """(train records, validation records) of RUN/log.jsonl.

    Validation records are those with `val_loss` or with `probe/...` keys (and no training `loss`).
    """
    path = Path(run) / "log.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; pass a run directory written by `synthvox pretrain --out RUN`")
    train, val = [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"{path}:{n} is not JSON; the log is damaged") from None
        is_val = "val_loss" in rec or ("loss" not in rec and any(k.startswith(PROBE_PREFIX) for k in rec))
        (val if is_val else train).append(rec)
    return train, val


def probe_series(val: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """`{probe key: (steps, values)}` over the validation records (seconds-valued keys left out)."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for r in val:
        for k, v in r.items():
            if k.startswith(PROBE_PREFIX) and not k.endswith("seconds") and isinstance(v, (int, float)):
                steps, vals = series.setdefault(k, ([], []))
                steps.append(int(r["step"]))
                vals.append(float(v))
    return series


def plot_log(run: str | Path, out: str | Path | None = None, smooth: int = 10) -> Path:
    """Write the total, per-tap and validation loss curves (and probe curves, if logged) to `out` (default RUN/loss.png)."""
    import matplotlib  # lazily: ~1 s of startup, for figures only

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, val = read_log(run)
    if not train:
        raise ValueError(f"{Path(run) / 'log.jsonl'} holds no training steps yet")
    out = Path(out) if out else Path(run) / "loss.png"
    steps = [r["step"] for r in train]
    probes = probe_series(val)
    fig, axes = plt.subplots(1, 3 if probes else 2, figsize=(16.5 if probes else 11, 4))
    ax1, ax2 = axes[0], axes[1]

    def running(y: list[float]) -> list[float]:
        k = max(1, min(smooth, len(y)))
        return [sum(y[max(0, i - k + 1): i + 1]) / len(y[max(0, i - k + 1): i + 1]) for i in range(len(y))]

    loss = [r["loss"] for r in train]
    ax1.plot(steps, loss, alpha=0.3, color="C0", label="train")
    ax1.plot(steps, running(loss), color="C0", label=f"train (mean of {smooth})")
    vl = [r for r in val if "val_loss" in r]
    if vl:
        ax1.plot([r["step"] for r in vl], [r["val_loss"] for r in vl], "o-", color="C3", label="validation")
    ax1.set_xlabel("step")
    ax1.set_ylabel("contrastive loss")
    ax1.legend()
    for i, tap in enumerate(train[0].get("taps", {})):
        ax2.plot(steps, running([r["taps"][tap] for r in train]), color=f"C{i}", label=tap)
    ax2.set_xlabel("step")
    ax2.set_title("per tap (running mean)")
    ax2.legend(fontsize=8)
    if probes:
        _draw_probes(axes[2], probes)
    fig.tight_layout()
    return write_figure(out, fig, format="png", dpi=100)


def _draw_probes(ax: Any, probes: dict[str, tuple[list[int], list[float]]]) -> None:
    """Probe values against steps on one [0, 1] axis; chance levels dashed."""
    for i, (k, (steps, vals)) in enumerate(sorted(probes.items())):
        chance = k.endswith("chance")
        ax.plot(steps, vals, "--" if chance else "o-", color="grey" if chance else f"C{i % 10}", ms=3,
                label=k[len(PROBE_PREFIX):])
    ax.set_xlabel("step")
    ax.set_title("probes (at validation)")
    ax.legend(fontsize=7, ncol=2)
