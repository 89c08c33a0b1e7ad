"""The results contract: one JSON record per evaluated case, one schema for every evaluation.

A record (a plain dict, written atomically as JSON)::

    schema        "synthvox.result/1"
    task          "registration" | "fewshot" | ...          what was evaluated
    method        e.g. "net+mind", "fewshot-pretrained"     how
    checkpoint    {"name": ..., "sha256": ...} or None      which network (None: no network)
    case          case id (str)
    protocol      e.g. "cpu" / "reference", plus free keys in `extra`
    device        where it ran ("cpu", "cuda:NVIDIA H100 ...")
    labels        {label id (str): label name}
    metrics       {metric name: value or {label id: value}}  (NaN written as null)
    units         {metric name: unit}, e.g. {"dice": "1", "hd95": "mm", "seconds": "s"}
    artifacts     {name: relative path}  images, fields, ... (optional)
    extra         free JSON-able dict (seeds, shots, stage times, ...)

Reports aggregate these records and nothing else.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

from synthvox.core.atomic import write_json
from synthvox.core.errors import SynthvoxError

__all__ = ["RESULT_SCHEMA", "make_record", "write_record", "read_records", "RecordError"]

RESULT_SCHEMA = "synthvox.result/1"
_REQUIRED = ("schema", "task", "method", "checkpoint", "case", "protocol", "device", "labels", "metrics", "units")


class RecordError(SynthvoxError, ValueError):
    """A results record is malformed; the message names the file and key."""


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if hasattr(v, "item") and callable(v.item):  # numpy / torch scalars
        return _clean(v.item())
    return v


def make_record(
    *,
    task: str,
    method: str,
    case: str,
    metrics: dict[str, Any],
    units: dict[str, str],
    checkpoint: dict[str, str] | None = None,
    protocol: str = "",
    device: str = "cpu",
    labels: dict[Any, str] | None = None,
    artifacts: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a record; every metric must have a unit."""
    missing = sorted(set(metrics) - set(units))
    if missing:
        raise RecordError(f"metrics {missing} have no unit; add them to `units`")
    return _clean({
        "schema": RESULT_SCHEMA,
        "task": task,
        "method": method,
        "checkpoint": checkpoint,
        "case": str(case),
        "protocol": protocol,
        "device": device,
        "labels": {str(k): v for k, v in (labels or {}).items()},
        "metrics": metrics,
        "units": units,
        "artifacts": artifacts or {},
        "extra": extra or {},
    })


def write_record(record: dict[str, Any], path: str | Path) -> Path:
    """Write `record` as JSON atomically (temporary file, then rename)."""
    return write_json(path, _clean(record), newline=False)


def read_records(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Read records from files and folders (recursively, `*.json`), checking the schema.

    Each returned record carries `_path`, the file it came from.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(q for q in p.rglob("*.json") if not q.name.startswith("."))
        elif p.is_file():
            files.append(p)
        else:
            raise RecordError(f"{p} does not exist")
    out = []
    for f in files:
        try:
            rec = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise RecordError(f"{f} is not valid JSON: {e}") from None
        if not isinstance(rec, dict) or rec.get("schema") != RESULT_SCHEMA:
            continue  # other JSON files (configs, splits) may live beside records
        missing = [k for k in _REQUIRED if k not in rec]
        if missing:
            raise RecordError(f"{f} is a {RESULT_SCHEMA} record but lacks keys {missing}")
        rec["_path"] = str(f)
        out.append(rec)
    return out
