"""`info(store)`: a store's summary (samples, tasks, bytes per sample per format, hash, device types)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .store import open_store

__all__ = ["info", "format_info"]


def info(store: str | Path) -> dict[str, Any]:
    st = open_store(store)
    m = st.manifest
    devices: dict[str, int] = {}
    n_records = 0
    for rec in st.records():
        n_records += 1
        key = json.dumps(rec.get("device_type"), sort_keys=True)
        devices[key] = devices.get(key, 0) + 1
    # an incomplete store: approximate the samples done by whole tasks
    done = st.num_samples if st.complete else min(st.num_samples, int(m.get("tasks_done", 0)) * st.task_size)
    per_sample = {f: (m["bytes"].get(f, 0) / done if done else None) for f in st.formats}
    return {
        "store": str(st.path), "samples": st.num_samples, "tasks": st.num_tasks, "tasks_done": m.get("tasks_done", 0),
        "complete": st.complete, "task_size": st.task_size, "zarr_shard": m.get("zarr_shard"),
        "formats": list(st.formats), "content": st.content, "seed": st.seed,
        "engine_config_hash": m["engine_config_hash"], "bank_hash": m.get("bank_hash"),
        "size": m["shapes"]["labels"], "views": m["shapes"]["views"][0], "label_dtype": m["label_dtype"],
        "bytes": m.get("bytes", {}), "bytes_per_sample": per_sample,
        "device_types": [{"device_type": json.loads(k), "tasks": v} for k, v in sorted(devices.items())],
        "versions": m.get("versions", {}), "schema_version": m["schema_version"],
    }


def format_info(d: dict[str, Any]) -> str:
    bps = ", ".join(f"{f} {b / 1e6:.4f} MB" if b is not None else f"{f} ?" for f, b in d["bytes_per_sample"].items())
    devs = "; ".join(f"{x['device_type']} ({x['tasks']} tasks)" for x in d["device_types"]) or "none yet"
    return "\n".join([
        f"store        {d['store']}",
        f"samples      {d['samples']} ({'complete' if d['complete'] else 'INCOMPLETE'}: {d['tasks_done']}/{d['tasks']} tasks of {d['task_size']})",
        f"content      {d['content']}" + (" (labels and meta; views rendered on load)" if d["content"] == "labels" else "")
        + f", formats {','.join(d['formats'])}, volume {d['size']}, {d['views']} views, labels {d['label_dtype']}",
        f"bytes/sample {bps}",
        f"config hash  {d['engine_config_hash']}",
        f"seed         {d['seed']}",
        f"device type  {devs}",
        f"versions     " + ", ".join(f"{k} {v}" for k, v in d["versions"].items()),
    ])
