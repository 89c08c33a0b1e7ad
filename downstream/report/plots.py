"""Report figures as PNG bytes: per-metric strip plots and per-label before/after dot plots.

Both are horizontal (groups or labels on the y axis) so their names stay readable at any
length; every case is a dot, a box is drawn only over 3 or more values (a box of one value
is a flat line), and a before/after pair shows before as a hollow dot joined to after.
"""
from __future__ import annotations

import io
import math
import textwrap
from typing import Any

import numpy as np

from .tables import Group, _num, group_title, label_means, label_name, lower_is_better

__all__ = ["strip_plot", "label_dot_plot", "LABELS_PER_PANEL", "MAX_PANELS"]

LABELS_PER_PANEL = 40
MAX_PANELS = 3
_DPI = 90
_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def _unit(groups: dict[Group, list[tuple[str, dict]]], metric: str) -> str:
    return next((r.get("units", {}).get(metric, "") for v in groups.values() for _, r in v if r.get("units", {}).get(metric)), "")


def _values(recs: list[tuple[str, dict]], metric: str) -> list[float]:
    return [v for v in (_num(r["metrics"].get(metric)) for _, r in recs) if v is not None]


def strip_plot(groups: dict[Group, list[tuple[str, dict]]], metric: str, before: str | None, fields: list[str],
               title: str) -> bytes | None:
    """Each group's values of `metric` (one dot per case, the mean as a bar, a box when n >= 3);
    with `before`, that metric's values as hollow dots in the same row. None when nothing is finite."""
    rows = [(g, _values(recs, metric), _values(recs, before) if before else []) for g, recs in groups.items()]
    rows = [r for r in rows if r[1] or r[2]]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.2, 0.9 + 0.55 * len(rows)))
    rng = np.random.default_rng(0)  # jitter only: fixed so the figure is reproducible
    for y, (g, vals, prev) in enumerate(reversed(rows)):
        for series, hollow in ((prev, True), (vals, False)):
            if not series:
                continue
            if len(series) >= 3:
                ax.boxplot([series], positions=[y], orientation="horizontal", widths=0.5, showfliers=False,
                           medianprops={"color": "#555"}, boxprops={"color": "#999"}, whiskerprops={"color": "#999"},
                           capprops={"color": "#999"})
            jit = rng.uniform(-0.12, 0.12, len(series)) if len(series) > 1 else np.zeros(1)
            ax.scatter(series, y + jit, s=22, zorder=3, facecolors="none" if hollow else "#1f77b4",
                       edgecolors="#1f77b4", linewidths=1.2)
            ax.plot([np.mean(series)] * 2, [y - 0.3, y + 0.3], color="#1f77b4", lw=2.5 if not hollow else 1,
                    ls="-" if not hollow else ":", zorder=4)
    ax.set_yticks(range(len(rows)),
                  [textwrap.fill(f"{group_title(g, fields)} (n={max(len(v), len(p))})", 40) for g, v, p in reversed(rows)],
                  fontsize=9)
    unit = _unit(groups, metric)
    name = metric if before is None else f"{before} (hollow) → {metric} (filled)"
    ax.set_xlabel(f"{name} [{unit}]" if unit else name, fontsize=9)
    ax.tick_params(axis="x", labelsize=9)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def label_dot_plot(groups: dict[Group, list[tuple[str, dict]]], metric: str, before: str | None, fields: list[str],
                   names: dict[str, str] | None, title: str) -> bytes | None:
    """Per label (rows, best first, up to 3 panels of 40; one label: None), each group's mean of the per-label
    `metric` as a filled dot; with `before`, the mean before as a hollow dot joined to it."""
    after = {g: label_means(recs, metric) for g, recs in groups.items()}
    prev = {g: label_means(recs, before) for g, recs in groups.items()} if before else {}
    after = {g: m for g, m in after.items() if m}
    if len({lid for m in after.values() for lid in m}) < 2:
        return None  # one label: the summary table says it all
    sign = 1.0 if lower_is_better(metric, _unit(groups, metric)) else -1.0
    ids = sorted({lid for m in after.values() for lid in m},
                 key=lambda lid: (sign * np.mean([m[lid][0] for m in after.values() if lid in m]), len(lid), lid))
    recs_all = [r for v in groups.values() for _, r in v]
    shown = ids[: LABELS_PER_PANEL * MAX_PANELS]
    panels = max(1, math.ceil(len(shown) / LABELS_PER_PANEL))
    per = math.ceil(len(shown) / panels)
    plt = _plt()
    fig, axes = plt.subplots(1, panels, figsize=(4.3 * panels if panels > 1 else 7.2, 1.0 + 0.2 * per), squeeze=False)
    gs = list(after)
    vals_all = [v for m in list(after.values()) + list(prev.values()) for v, _ in m.values()]
    lo, hi = min(vals_all), max(vals_all)
    pad = 0.05 * (hi - lo or 1.0)
    for p in range(panels):
        ax = axes[0, p]
        chunk = shown[p * per: (p + 1) * per]
        for gi, g in enumerate(gs):
            color = _COLORS[gi % len(_COLORS)]
            dy = (gi - (len(gs) - 1) / 2) * (0.5 / max(1, len(gs)))
            for row, lid in enumerate(chunk):
                y = len(chunk) - 1 - row + dy
                if lid in prev.get(g, {}) and lid in after[g]:
                    ax.plot([prev[g][lid][0], after[g][lid][0]], [y, y], color=color, lw=0.8, alpha=0.6)
                if lid in prev.get(g, {}):
                    ax.scatter([prev[g][lid][0]], [y], s=16, facecolors="none", edgecolors=color, linewidths=1)
                if lid in after[g]:
                    ax.scatter([after[g][lid][0]], [y], s=16, color=color, zorder=3)
        ax.set_yticks(range(len(chunk)), [textwrap.shorten(label_name(lid, recs_all, names), 30, placeholder="…")
                                          for lid in reversed(chunk)], fontsize=7.5)
        ax.set_ylim(-0.7, len(chunk) - 0.3)
        ax.set_xlim(lo - pad, hi + pad)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
        unit = _unit(groups, metric)
        base = metric[: -len("_after")] if before and metric.endswith("_after") else metric
        ax.set_xlabel(f"{base} [{unit}]" if unit else base, fontsize=8)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color=_COLORS[i % len(_COLORS)], label=textwrap.shorten(group_title(g, fields), 60))
               for i, g in enumerate(gs)]
    if before:
        handles += [Line2D([], [], marker="o", ls="", markerfacecolor="none", color="#444", label=f"before ({before})"),
                    Line2D([], [], marker="o", ls="", color="#444", label=f"after ({metric})")]
    more = f"; {len(ids) - len(shown)} more in the table" if len(ids) > len(shown) else ""
    fig.suptitle(f"{title} (mean over cases per label, best first{more})", fontsize=10)
    fig.tight_layout()
    # the legend below the panels: bbox_inches="tight" keeps it in the image
    fig.legend(handles=handles, loc="upper center", ncol=min(3, len(handles)), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    return _png(fig)
