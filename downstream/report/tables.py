"""Aggregation of results records into table rows (pure: records in, rows out).

A *group* is what one number in a summary stands for: (task, setting, method, checkpoint,
protocol, device). Records compare side by side when they share task and setting.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

__all__ = ["Group", "Row", "record_id", "checkpoint_label", "group_of", "group_records", "summary_rows", "label_rows",
           "case_rows", "fmt_stat", "scalar_metrics", "dict_metrics"]


@dataclass(frozen=True, order=True)
class Group:
    task: str
    setting: str
    method: str
    checkpoint: str
    protocol: str
    device: str

    def name(self) -> str:
        return f"{self.method} [{self.checkpoint}]"


@dataclass
class Row:
    """A table row: cells (strings) and the ids of the records it comes from."""

    cells: list[str]
    records: list[str] = field(default_factory=list)


def record_id(rec: dict[str, Any], index: int) -> str:
    """The id a table row cites: the record's file when known, else its position."""
    return str(rec.get("_path") or f"record#{index}")


def checkpoint_label(rec: dict[str, Any]) -> str:
    ck = rec.get("checkpoint")
    if not ck:
        return "none"
    name = str(ck.get("name") or "?")
    sha = ck.get("sha256")
    return f"{name} ({sha[:8]})" if sha else name


def group_of(rec: dict[str, Any]) -> Group:
    setting = str((rec.get("extra") or {}).get("setting", ""))
    return Group(str(rec["task"]), setting, str(rec["method"]), checkpoint_label(rec), str(rec.get("protocol") or "-"),
                 str(rec.get("device") or "-"))


def group_records(records: list[dict[str, Any]]) -> dict[Group, list[tuple[str, dict[str, Any]]]]:
    """Group -> [(record id, record)], groups sorted."""
    groups: dict[Group, list] = defaultdict(list)
    for i, r in enumerate(records):
        groups[group_of(r)].append((record_id(r, i), r))
    return dict(sorted(groups.items()))


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)) and math.isfinite(v):
        return float(v)
    return None


def scalar_metrics(records: Iterable[dict[str, Any]]) -> list[str]:
    """Metric names holding one number per record, in first-seen order."""
    seen: dict[str, None] = {}
    for r in records:
        for k, v in r["metrics"].items():
            if not isinstance(v, dict):
                seen.setdefault(k)
    return list(seen)


def dict_metrics(records: Iterable[dict[str, Any]]) -> list[str]:
    """Metric names holding {label id: value} per record."""
    seen: dict[str, None] = {}
    for r in records:
        for k, v in r["metrics"].items():
            if isinstance(v, dict):
                seen.setdefault(k)
    return list(seen)


def fmt_stat(values: list[float], unit: str = "") -> str:
    """"mean ± std (n)" over finite values; "–" when there are none."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    m = float(np.mean(vals))
    s = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
    return f"{m:.3g} ± {s:.2g} (n={len(vals)})"


def _unit(recs: list[tuple[str, dict]], metric: str) -> str:
    for _, r in recs:
        u = r.get("units", {}).get(metric)
        if u:
            return u
    return ""


def summary_rows(groups: dict[Group, list[tuple[str, dict]]], metrics: list[str]) -> tuple[list[str], list[Row]]:
    """Header and rows: one row per group, mean ± std over its records of each scalar metric."""
    header = ["setting", "method", "checkpoint", "protocol", "device"]
    units = {m: next((_unit(v, m) for v in groups.values() if _unit(v, m)), "") for m in metrics}
    header += [f"{m} [{units[m]}]" if units[m] else m for m in metrics]
    rows = []
    for g, recs in groups.items():
        cells = [g.setting or "–", g.method, g.checkpoint, g.protocol, g.device]
        cells += [fmt_stat([_num(r["metrics"].get(m)) for _, r in recs]) for m in metrics]
        rows.append(Row(cells, [rid for rid, _ in recs]))
    return header, rows


def label_rows(groups: dict[Group, list[tuple[str, dict]]], metrics: list[str]) -> tuple[list[str], list[Row]]:
    """One row per group and label: mean ± std of each per-label metric over the group's records."""
    header = ["setting", "method", "checkpoint", "protocol", "device", "label"]
    units = {m: next((_unit(v, m) for v in groups.values() if _unit(v, m)), "") for m in metrics}
    header += [f"{m} [{units[m]}]" if units[m] else m for m in metrics]
    rows = []
    for g, recs in groups.items():
        labels: dict[str, str] = {}
        for _, r in recs:
            for m in metrics:
                for lid in (r["metrics"].get(m) or {}):
                    labels.setdefault(str(lid), str(r.get("labels", {}).get(str(lid), lid)))
        for lid in sorted(labels, key=lambda s: (len(s), s)):
            cells = [g.setting or "–", g.method, g.checkpoint, g.protocol, g.device, f"{labels[lid]} ({lid})"]
            cells += [fmt_stat([_num((r["metrics"].get(m) or {}).get(lid)) for _, r in recs]) for m in metrics]
            rows.append(Row(cells, [rid for rid, _ in recs]))
    return header, rows


def case_rows(groups: dict[Group, list[tuple[str, dict]]], metrics: list[str], rel: Any = str) -> tuple[list[str], list[Row]]:
    """One row per record: its case, group, seed, scalar metrics and the record file."""
    header = ["case", "setting", "method", "checkpoint", "protocol", "device", "seed"] + metrics + ["record"]
    rows = []
    for g, recs in groups.items():
        for rid, r in sorted(recs, key=lambda x: (x[1]["case"], str((x[1].get("extra") or {}).get("seed", "")))):
            seed = (r.get("extra") or {}).get("seed", "–")
            cells = [r["case"], g.setting or "–", g.method, g.checkpoint, g.protocol, g.device, str(seed)]
            for m in metrics:
                v = _num(r["metrics"].get(m))
                cells.append("–" if v is None else f"{v:.4g}")
            cells.append(rel(rid))
            rows.append(Row(cells, [rid]))
    return header, rows
