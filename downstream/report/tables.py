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
           "case_rows", "fmt_stat", "scalar_metrics", "dict_metrics", "GROUP_FIELDS", "split_fields", "group_title",
           "label_name", "label_means", "paired_metrics", "pairs_adjacent", "lower_is_better"]

#: the fields that identify a group, in column order
GROUP_FIELDS = ("setting", "method", "checkpoint", "protocol", "device")


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
    """"mean ± std (n=k)" over finite values; "value (n=1)" for one (no std: it is undefined); "–" for none."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    m = float(np.mean(vals))
    if len(vals) == 1:
        return f"{m:.3g} (n=1)"
    s = float(np.std(vals, ddof=1))
    return f"{m:.3g} ± {s:.2g} (n={len(vals)})"


def split_fields(groups: Iterable[Group]) -> tuple[list[str], dict[str, str]]:
    """(fields that differ between the groups, {field: value} of those that do not).

    Tables show the varying fields as columns and state the constant ones once above them,
    so no column repeats one value on every row. "method" always stays a column.
    """
    groups = list(groups)
    varying, constant = [], {}
    for f in GROUP_FIELDS:
        vals = {getattr(g, f) for g in groups}
        if len(vals) > 1 or f == "method":
            varying.append(f)
        elif vals and next(iter(vals)) not in ("", "-"):  # an empty setting is not worth a word
            constant[f] = next(iter(vals))
    return varying, constant


def group_title(g: Group, fields: list[str]) -> str:
    """A short name of a group from its varying fields: "setting · method [checkpoint] · protocol · device"."""
    parts = []
    if "setting" in fields and g.setting:
        parts.append(g.setting)
    parts.append(g.method + (f" [{g.checkpoint}]" if "checkpoint" in fields else ""))
    parts += [getattr(g, f) for f in ("protocol", "device") if f in fields]
    return " · ".join(parts)


def label_name(lid: str, recs: Iterable[dict[str, Any]], names: dict[str, str] | None = None) -> str:
    """A label's display name: "name (id)" when a record names it (or else `names` does), else the id."""
    name = None
    for r in recs:
        cand = (r.get("labels") or {}).get(str(lid))
        if cand is not None and str(cand) != str(lid):
            name = str(cand)
            break
    if name is None:
        name = (names or {}).get(str(lid))
    return f"{name} ({lid})" if name is not None and name != str(lid) else str(lid)


def label_means(recs: list[tuple[str, dict[str, Any]]], metric: str) -> dict[str, tuple[float, int]]:
    """{label id: (mean over the records' finite values, n)} of a per-label metric (labels without one left out)."""
    vals: dict[str, list[float]] = defaultdict(list)
    for _, r in recs:
        for lid, v in (r["metrics"].get(metric) or {}).items():
            x = _num(v)
            if x is not None:
                vals[str(lid)].append(x)
    return {lid: (float(np.mean(v)), len(v)) for lid, v in vals.items()}


def pairs_adjacent(names: list[str]) -> list[str]:
    """The metric names in first-seen order, each `X_after` moved right behind its `X_before`."""
    out: list[str] = []
    for m in names:
        if m in out:
            continue
        if m.endswith("_after") and m[: -len("_after")] + "_before" in names:
            continue  # placed after its _before
        out.append(m)
        if m.endswith("_before") and m[: -len("_before")] + "_after" in names:
            out.append(m[: -len("_before")] + "_after")
    return out


def lower_is_better(metric: str, unit: str) -> bool:
    """Distances, errors and times: smaller is better (sorting "best first")."""
    return unit in ("mm", "s", "voxels") or metric.startswith(("hd", "assd", "error", "folding", "sdlogj", "seconds"))


def paired_metrics(names: list[str]) -> list[tuple[str, str | None, str]]:
    """(base, before metric or None, after/only metric) for each metric: `X_before` pairs with `X_after`."""
    out, used = [], set()
    for m in names:
        if m in used:
            continue
        if m.endswith("_before") and m[: -len("_before")] + "_after" in names:
            base = m[: -len("_before")]
            out.append((base, m, base + "_after"))
            used |= {m, base + "_after"}
        elif m.endswith("_after") and m[: -len("_after")] + "_before" in names:
            continue  # handled with its _before
        else:
            out.append((m, None, m))
            used.add(m)
    return out


def _unit(recs: list[tuple[str, dict]], metric: str) -> str:
    for _, r in recs:
        u = r.get("units", {}).get(metric)
        if u:
            return u
    return ""


def _fields(groups: dict[Group, Any], fields: list[str] | None) -> list[str]:
    return list(GROUP_FIELDS) if fields is None else list(fields)


def summary_rows(groups: dict[Group, list[tuple[str, dict]]], metrics: list[str],
                 fields: list[str] | None = None) -> tuple[list[str], list[Row]]:
    """Header and rows: one row per group, mean ± std over its records of each scalar metric.
    `fields`: the group columns to show (default all; see `split_fields`)."""
    fields = _fields(groups, fields)
    header = list(fields)
    units = {m: next((_unit(v, m) for v in groups.values() if _unit(v, m)), "") for m in metrics}
    header += [f"{m} [{units[m]}]" if units[m] else m for m in metrics]
    rows = []
    for g, recs in groups.items():
        cells = [getattr(g, f) or "–" for f in fields]
        cells += [fmt_stat([_num(r["metrics"].get(m)) for _, r in recs]) for m in metrics]
        rows.append(Row(cells, [rid for rid, _ in recs]))
    return header, rows


def label_rows(groups: dict[Group, list[tuple[str, dict]]], metrics: list[str], fields: list[str] | None = None,
               names: dict[str, str] | None = None) -> tuple[list[str], list[Row]]:
    """One row per group and label: mean ± std of each per-label metric over the group's records.
    Labels show as "name (id)" when named (by the records or `names`), else as the id."""
    fields = _fields(groups, fields)
    header = list(fields) + ["label"]
    units = {m: next((_unit(v, m) for v in groups.values() if _unit(v, m)), "") for m in metrics}
    header += [f"{m} [{units[m]}]" if units[m] else m for m in metrics]
    rows = []
    for g, recs in groups.items():
        labels: set[str] = set()
        for _, r in recs:
            for m in metrics:
                labels |= {str(lid) for lid in (r["metrics"].get(m) or {})}
        for lid in sorted(labels, key=lambda s: (len(s), s)):
            cells = [getattr(g, f) or "–" for f in fields] + [label_name(lid, (r for _, r in recs), names)]
            cells += [fmt_stat([_num((r["metrics"].get(m) or {}).get(lid)) for _, r in recs]) for m in metrics]
            rows.append(Row(cells, [rid for rid, _ in recs]))
    return header, rows


def case_rows(groups: dict[Group, list[tuple[str, dict]]], metrics: list[str], rel: Any = str,
              fields: list[str] | None = None) -> tuple[list[str], list[Row]]:
    """One row per record: its case, group, seed (when any record has one), scalar metrics and the record file."""
    fields = _fields(groups, fields)
    seeded = any("seed" in (r.get("extra") or {}) for recs in groups.values() for _, r in recs)
    header = ["case"] + list(fields) + (["seed"] if seeded else []) + metrics + ["record"]
    rows = []
    for g, recs in groups.items():
        for rid, r in sorted(recs, key=lambda x: (x[1]["case"], str((x[1].get("extra") or {}).get("seed", "")))):
            seed = (r.get("extra") or {}).get("seed", "–")
            cells = [r["case"]] + [getattr(g, f) or "–" for f in fields] + ([str(seed)] if seeded else [])
            for m in metrics:
                v = _num(r["metrics"].get(m))
                cells.append("–" if v is None else f"{v:.4g}")
            cells.append(rel(rid))
            rows.append(Row(cells, [rid]))
    return header, rows
