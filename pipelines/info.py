"""`info(store)`: a store's summary (samples, tasks, bytes per sample per format, hash, device types)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .store import open_store

__all__ = ["info", "format_info"]


def info(store: str | Path) -> dict[str, Any]:
    """A store's summary; `complete` holds only when the manifest says so and every task has a
    record (`missing_records` lists the tasks without one)."""
    st = open_store(store)
    m = st.manifest
    devices: dict[str, int] = {}
    for rec in st.record_map.values():
        key = json.dumps(rec.get("device_type"), sort_keys=True)
        devices[key] = devices.get(key, 0) + 1
    missing = st.missing_tasks()
    # an incomplete store: approximate the samples done by whole tasks
    done = st.num_samples if st.complete else min(st.num_samples, m.tasks_done * st.task_size)
    per_sample = {f: (m.bytes.get(f, 0) / done if done else None) for f in st.formats}
    return {
        "store": str(st.path), "samples": st.num_samples, "tasks": st.num_tasks, "tasks_done": m.tasks_done,
        "records": len(st.record_map), "missing_records": missing,
        "complete": st.complete, "task_size": st.task_size, "zarr_shard": m.zarr_shard,
        "formats": list(st.formats), "content": st.content, "seed": st.seed,
        "engine_config_hash": m.engine_config_hash, "bank_hash": m.bank_hash,
        "size": list(m.label_shape), "views": m.views, "label_dtype": m.label_dtype,
        "bytes": dict(m.bytes), "bytes_per_sample": per_sample,
        "device_types": [{"device_type": json.loads(k), "tasks": v} for k, v in sorted(devices.items())],
        "versions": dict(m.versions), "schema_version": m.schema_version,
    }


def format_info(d: dict[str, Any]) -> str:
    bps = ", ".join(f"{f} {b / 1e6:.4f} MB" if b is not None else f"{f} ?" for f, b in d["bytes_per_sample"].items())
    devs = "; ".join(f"{x['device_type']} ({x['tasks']} tasks)" for x in d["device_types"]) or "none yet"
    miss = d["missing_records"]
    records = f"{d['records']}/{d['tasks']} tasks recorded"
    if miss and d["tasks_done"] == d["tasks"]:
        shown = ", ".join(map(str, miss[:8])) + (", ..." if len(miss) > 8 else "")
        records += (f"; the manifest says all {d['tasks']} are done but {len(miss)} records are missing (tasks {shown}): "
                    "rerun the same synth-shards command to re-render them")
    return "\n".join([
        f"store        {d['store']}",
        f"samples      {d['samples']} ({'complete' if d['complete'] else 'INCOMPLETE'}: {records}, tasks of {d['task_size']})",
        f"content      {d['content']}" + (" (labels and meta; views rendered on load)" if d["content"] == "labels" else "")
        + f", formats {','.join(d['formats'])}, volume {d['size']}, {d['views']} views, labels {d['label_dtype']}",
        f"bytes/sample {bps}",
        f"config hash  {d['engine_config_hash']}",
        f"seed         {d['seed']}",
        f"device type  {devs}",
        f"versions     " + ", ".join(f"{k} {v}" for k, v in d["versions"].items()),
    ])
