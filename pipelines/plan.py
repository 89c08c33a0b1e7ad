"""`--dry-run`: the plan of a run for any sample count, in seconds and constant memory.

Tasks, samples per task and Zarr shard, bytes (estimated from one calibration sample,
compressed with the store codecs and scaled to the full size), free disk, CPU-hours (from
calibration renders at <= 64^3, scaled). Nothing per task is materialised.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from synthvox.core.configbase import replace
from synthvox.engine.config import EngineConfig
from synthvox.engine.templates import resolve_bank

from . import task
from .codecs import encode_array
from .layout import TASKS_PER_WORKER, choose_task_size, num_tasks, stored_arrays, zarr_shard_samples
from .manifest import compatibility_problems
from .skeleton import existing_manifest, plan_manifest
from .codecs import meta_bytes

__all__ = ["plan", "format_plan", "CALIBRATION_SIDE"]

CALIBRATION_SIDE = 64      # calibration renders at most this side (bounded time and memory)
CALIBRATION_SAMPLES = 2    # samples vary a lot in cost; average a few
#: CPU time grows about like side**CPU_EXPONENT above 64^3 (measured here: 64^3 -> 128^3 costs ~4x, since
#: per-shape work scales with the surface more than the volume); a two-size fit amplified noise 8x
CPU_EXPONENT = 2.0
TAR_OVERHEAD = 3 * 1024  # tar headers and padding per sample (3 members; 2 in a labels store, about the same)


def _free_bytes(path: Path) -> int:
    p = path.resolve()
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


def _calibrate(cfg: EngineConfig, seed: int, content: str = "full") -> dict[str, float]:
    """CPU time per sample and compressed bytes per voxel from a few renders at <= 64^3.

    Above 64^3 the CPU time is scaled by (size / 64) ** CPU_EXPONENT and the bytes by voxel
    count; both are estimates (samples vary +-50% in cost, and a loaded machine inflates CPU time).
    """
    # a labels task draws the views' parameters but paints none: calibrate what the tasks will run
    render = task.render_labels_numpy if content == "labels" else task.render_numpy
    bank = resolve_bank(cfg.bank)
    render(replace(cfg, {"size": 16}, "engine"), seed, 0, bank)  # warm-up: imports, allocator, caches
    side = min(cfg.size, CALIBRATION_SIDE)
    small = replace(cfg, {"size": side}, "engine")
    c0 = time.process_time()
    for i in range(CALIBRATION_SAMPLES):
        s = render(small, seed, i, bank)
    cpu = (time.process_time() - c0) / CALIBRATION_SAMPLES
    vox = side ** 3
    per_sample = cpu * (cfg.size / side) ** CPU_EXPONENT
    return {
        "side": side, "scaled": side != cfg.size,
        "cpu_s_per_sample": per_sample,
        "labels_bytes_per_voxel": len(encode_array(s["labels"], "labels")) / vox,
        "views_bytes_per_voxel": len(encode_array(s["views"], "views")) / (vox * cfg.views) if "views" in s else 0.0,
        "meta_bytes": len(meta_bytes(s["meta"])),  # about constant in the volume size
    }


def plan(out: str | Path, samples: int, task_size: int | None, cfg: EngineConfig, formats: tuple[str, ...], seed: int = 0,
         workers: int | None = None, calibrate: bool = True, content: str = "full") -> dict[str, Any]:
    """The plan of `synth_shards` with these arguments, as a dict.

    task_size None: the existing store's, else what synth_shards would choose for `workers`.
    On an existing store `existing["refusals"]` lists what the real run would refuse (another
    seed, config, task size, format, content or version), each with what to do.
    """
    stored_arrays(content)  # validates the content kind
    nworkers = 1 if workers == 0 else (workers or os.cpu_count() or 1)
    old = existing_manifest(out)
    chosen = task_size is None and old is None
    if task_size is None:
        task_size = old.task_size if old is not None else choose_task_size(samples, nworkers)
    tasks = num_tasks(samples, task_size)
    vox = cfg.size ** 3
    views_stored = cfg.views if content == "full" else 0
    p: dict[str, Any] = {
        "store": str(out), "samples": samples, "task_size": task_size, "tasks": tasks,
        "last_task_samples": samples - (tasks - 1) * task_size, "zarr_shard": zarr_shard_samples(task_size),
        "formats": list(formats), "size": cfg.size, "views": cfg.views, "content": content,
        "raw_bytes_per_sample": vox * (views_stored + (1 if cfg.max_labels <= 255 else 2)),
        "free_bytes": _free_bytes(Path(out)), "workers": nworkers, "task_size_chosen": chosen,
        "existing": None,
    }
    if old is not None:
        new = plan_manifest(samples, task_size, cfg, seed, formats, content)
        p["existing"] = {"samples": old.samples, "tasks_done": old.tasks_done, "tasks": old.tasks,
                         "task_size": old.task_size, "refusals": compatibility_problems(old, new)}
    if calibrate:
        t0 = time.perf_counter()
        c = _calibrate(cfg, seed, content)
        p["calibration"] = {**c, "seconds": time.perf_counter() - t0}
        per = c["labels_bytes_per_voxel"] * vox + c["views_bytes_per_voxel"] * vox * views_stored + c["meta_bytes"]
        per_fmt = {"wds": per + TAR_OVERHEAD, "zarr": per + 64}
        p["bytes_per_sample"] = {f: per_fmt[f] for f in formats}
        p["total_bytes"] = float(sum(per_fmt[f] for f in formats) * samples)
        p["cpu_hours"] = c["cpu_s_per_sample"] * samples / 3600.0
        p["wall_hours"] = p["cpu_hours"] / max(1, p["workers"])
        p["fits_on_disk"] = bool(p["total_bytes"] < p["free_bytes"])
    return p


def _gb(n: float) -> str:
    return f"{n / 1e9:.3f} GB" if n < 1e12 else f"{n / 1e12:.3f} TB"


def format_plan(p: dict[str, Any]) -> str:
    lines = [
        f"plan for {p['store']}:",
        f"  samples {p['samples']:,} of {p['size']}^3 with {p['views']} views, formats {','.join(p['formats'])}",
        "  content labels: label maps and meta, views rendered on load" if p.get("content") == "labels"
        else "  content full: label maps and views",
        f"  tasks {p['tasks']:,} of {p['task_size']} samples (last {p['last_task_samples']}), "
        f"Zarr shards of {p['zarr_shard']} samples"
        + (f" (--task-size not given: about {TASKS_PER_WORKER} tasks for each of {p['workers']} workers)"
           if p.get("task_size_chosen") else ""),
        f"  uncompressed {p['raw_bytes_per_sample'] / 1e6:.3f} MB per sample",
    ]
    if p["existing"]:
        e = p["existing"]
        if e["refusals"]:
            lines.append(f"  existing store: {e['samples']} samples, {e['tasks_done']}/{e['tasks']} tasks done; "
                         "THE REAL RUN WOULD REFUSE IT:")
            lines += [f"    {r}" for r in e["refusals"]]
        else:
            lines.append(f"  existing store: {e['samples']} samples, {e['tasks_done']}/{e['tasks']} tasks done, "
                         f"task size {e['task_size']} (the run resumes / grows it)")
    if "calibration" in p:
        c = p["calibration"]
        lines += [
            "  estimated bytes per sample: " + ", ".join(f"{f} {b / 1e6:.3f} MB" for f, b in p["bytes_per_sample"].items())
            + (f" (from a {c['side']}^3 calibration sample, scaled)" if c["side"] != p["size"] else " (from one calibration sample)"),
            f"  estimated total {_gb(p['total_bytes'])}; free disk {_gb(p['free_bytes'])}"
            + ("" if p["fits_on_disk"] else "  <-- DOES NOT FIT"),
            f"  estimated {p['cpu_hours']:.2f} CPU-hours ({c['cpu_s_per_sample']:.3f} CPU-s per sample, "
            + (f"{c['side']}^3 renders scaled by side^{CPU_EXPONENT:g}), about" if c["scaled"] else "measured), about")
            + f" {p['wall_hours']:.2f} h on {p['workers']} workers",
        ]
    else:
        lines.append(f"  free disk {_gb(p['free_bytes'])} (no calibration)")
    return "\n".join(lines)
