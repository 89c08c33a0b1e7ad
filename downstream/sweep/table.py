"""A sweep's outputs: probe values per CPU-minute as Markdown, CSV and JSON tables and a plot.

Pure aggregation of the points' result dicts (run.py) into rows; the step-0 row of a point is
the random init of its architecture (seed `train.checkpoint.RANDOM_SEED`, not the run's own
init), at 0 CPU-minutes.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from synthvox.core.atomic import write_json, write_text

from ..io import save_figure
from .spec import SweepSpec

__all__ = ["rows_of", "summary_rows", "write_outputs", "HEADLINE"]

#: the probe values the summary and the plot show (others are in the CSV/JSON)
HEADLINE = ("retrieval/mean", "retrieval/out", "reg/dice_net")


def rows_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per probed network of a point: the random init (step 0), then each checkpoint."""
    base = {"point": result["name"], "overrides": _fmt_over(result["overrides"]), "threads": result["threads"]}
    rows = []
    if result.get("baseline"):
        rows.append({**base, "step": 0, "cpu_min": 0.0, "wall_min": 0.0, "loss": None, **result["baseline"]})
    for c in result["checkpoints"]:
        rows.append({**base, "step": c["step"], "cpu_min": c["cpu_s"] / 60, "wall_min": c["wall_s"] / 60,
                     "loss": c["loss"], **c["probe"]})
    return rows


def _fmt_over(over: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in over.items()) or "(base)"


def _num(v: Any, nd: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{nd}f}"


def summary_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per point: the last checkpoint's headline probes, the random init's, and gain per CPU-minute."""
    out = []
    for r in sorted(results, key=lambda r: r["name"]):
        last = r["checkpoints"][-1]
        cpu_min = last["cpu_s"] / 60
        row = {"point": r["name"], "overrides": _fmt_over(r["overrides"]), "steps": last["step"], "cpu_min": cpu_min,
               "loss": last["loss"]}
        for k in HEADLINE:
            v, b = last["probe"].get(k), (r.get("baseline") or {}).get(k)
            row[k] = v
            row[f"{k} (init)"] = b
            row[f"{k} gain/CPU-min"] = (v - b) / cpu_min if v is not None and b is not None and cpu_min > 0 else None
        out.append(row)
    return out


def _markdown(spec: SweepSpec, results: list[dict[str, Any]], failures: dict[str, str], out: Path) -> str:
    s = summary_rows(results)
    lines = [f"# Sweep {spec.name}", "",
             f"Recipe: `synthvox sweep {spec.path} --out {out}` (the sweep file is copied to "
             f"`{out / 'sweep.yaml'}`); checkpoints at steps {list(spec.checkpoints)}; CPU-minutes of training "
             "(process tree, all threads, from process start) to each checkpoint; init = random init of the same architecture "
             "(fixed seed). Probes: `retrieval/*` macro label accuracy of cross-view nearest neighbours on held-out "
             "synthetic pairs (chance in the CSV), `reg/dice_net` Colin27 known-warp AAL Dice with network features "
             "alone.", "",
             "| point | overrides | steps | CPU-min | loss | " + " | ".join(f"{k} (init -> last)" for k in HEADLINE)
             + " | retrieval/mean gain per CPU-min |",
             "|---|---|---|---|---|" + "---|" * len(HEADLINE) + "---|"]
    for r in s:
        cells = [r["point"], r["overrides"], str(r["steps"]), _num(r["cpu_min"], 2), _num(r["loss"])]
        cells += [f"{_num(r[f'{k} (init)'])} -> {_num(r[k])}" for k in HEADLINE]
        cells.append(_num(r["retrieval/mean gain/CPU-min"], 4))
        lines.append("| " + " | ".join(cells) + " |")
    if failures:
        lines += ["", "Failed points:", ""] + [f"- {k}: {v.splitlines()[0]}" for k, v in sorted(failures.items())]
    lines += ["", "All checkpoints: `table.csv`; the plot: `plot.png`.", ""]
    return "\n".join(lines)


def _csv(rows: list[dict[str, Any]]) -> str:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in keys})
    return buf.getvalue()


def _plot(results: list[dict[str, Any]], path: Path, title: str) -> Path:
    import matplotlib  # lazily: ~1 s of startup, for figures only

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in HEADLINE if any(k in row for r in results for row in rows_of(r))]
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(5.5 * max(1, len(keys)), 4.2), squeeze=False)
    for ax, k in zip(axes[0], keys):
        chance = []
        for i, r in enumerate(sorted(results, key=lambda r: r["name"])):
            rows = [row for row in rows_of(r) if row.get(k) is not None]
            ax.plot([row["cpu_min"] for row in rows], [row[k] for row in rows], "o-", ms=3, color=f"C{i % 10}",
                    label=r["name"])
            chance += [row["retrieval/chance"] for row in rows if row.get("retrieval/chance") is not None]
        if k.startswith("retrieval/") and chance:
            ax.axhline(sum(chance) / len(chance), ls="--", color="grey", lw=1, label="chance")
        ax.set_xlabel("training CPU-minutes")
        ax.set_title(k)
    axes[0][0].legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)


def write_outputs(spec: SweepSpec, results: list[dict[str, Any]], failures: dict[str, str], out: str | Path) -> dict[str, Path]:
    """table.md, table.csv, table.json and plot.png in `out`; returns their paths."""
    out = Path(out)
    rows = [row for r in sorted(results, key=lambda r: r["name"]) for row in rows_of(r)]
    paths = {"table_md": out / "table.md", "table_csv": out / "table.csv", "table_json": out / "table.json",
             "plot": out / "plot.png"}
    write_text(paths["table_md"], _markdown(spec, results, failures, out))
    write_text(paths["table_csv"], _csv(rows))
    write_json(paths["table_json"], {"sweep": spec.name, "checkpoints": list(spec.checkpoints),
                                            "summary": summary_rows(results), "rows": rows, "failures": failures})
    if results:
        _plot(results, paths["plot"], f"sweep {spec.name}: probes vs training CPU-minutes")
    return paths
