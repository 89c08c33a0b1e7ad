"""Loss curves of a run (log.jsonl) as a PNG."""
from __future__ import annotations

import json
from pathlib import Path

from synthvox.core.atomic import write_figure

__all__ = ["read_log", "plot_log"]


def read_log(run: str | Path) -> tuple[list[dict], list[dict]]:
    """(train records, validation records) of RUN/log.jsonl."""
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
        (val if "val_loss" in rec else train).append(rec)
    return train, val


def plot_log(run: str | Path, out: str | Path | None = None, smooth: int = 10) -> Path:
    """Write the total, per-tap and validation loss curves to `out` (default RUN/loss.png)."""
    import matplotlib  # lazily: ~1 s of startup, for figures only

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, val = read_log(run)
    if not train:
        raise ValueError(f"{Path(run) / 'log.jsonl'} holds no training steps yet")
    out = Path(out) if out else Path(run) / "loss.png"
    steps = [r["step"] for r in train]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))

    def running(y: list[float]) -> list[float]:
        k = max(1, min(smooth, len(y)))
        return [sum(y[max(0, i - k + 1): i + 1]) / len(y[max(0, i - k + 1): i + 1]) for i in range(len(y))]

    loss = [r["loss"] for r in train]
    ax1.plot(steps, loss, alpha=0.3, color="C0", label="train")
    ax1.plot(steps, running(loss), color="C0", label=f"train (mean of {smooth})")
    if val:
        ax1.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", color="C3", label="validation")
    ax1.set_xlabel("step")
    ax1.set_ylabel("contrastive loss")
    ax1.legend()
    for i, tap in enumerate(train[0].get("taps", {})):
        ax2.plot(steps, running([r["taps"][tap] for r in train]), color=f"C{i}", label=tap)
    ax2.set_xlabel("step")
    ax2.set_title("per tap (running mean)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return write_figure(out, fig, format="png", dpi=100)
