"""`verify(store)`: counts, sizes, checksums, decoding and re-rendering; names each bad shard.

Per task (locally, or on a Dask cluster for large stores): the record exists and matches the
task's range, every file has its recorded size and (unless quick) sha256, and every sample
decodes with the right index, shape and dtype, its meta matching its checksum (quick: the tar
shards and Zarr shards holding K random samples are decoded whole). Then K random samples
are re-rendered and compared: exactly when the shard's device type equals this one's, else
labels exactly and views within one quantisation step; the report says which.

A `labels` store holds no views: samples must have labels and a meta with every view's
appearance parameters and seeds; the re-render check compares the stored labels exactly and
the views painted here from the stored meta with a fresh render here (so always exactly).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from synthvox.core.atomic import sha256_file
from synthvox.engine.device import device_type, same_device_type
from synthvox.engine.templates import resolve_bank

from .errors import DamagedShard
from .labels import views_from_meta
from .layout import wds_path, zarr_meta_path, zarr_shard_key
from .manifest import Manifest
from .records import file_problem, record_is_intact
from .store import open_store
from .task import render_numpy
from .wds_io import iter_wds_shard
from .zarr_io import ZarrReader, read_zarr_meta

__all__ = ["verify", "verify_task", "format_report"]


def _check_meta(meta: dict[str, Any] | None, manifest: Manifest, where: str) -> list[str]:
    """A labels-store meta records each view's appearance parameters and noise seed."""
    meta = meta or {}
    n = len(meta.get("appearance", [])), len(meta.get("appearance_noise_seeds", []))
    v = manifest.views
    if n != (v, v):
        return [f"{where}: meta records {n[0]} appearance parameter sets and {n[1]} noise seeds, "
                f"expected {v} of each (its views cannot be re-rendered)"]
    return []


def _check_sample(s: dict[str, Any], manifest: Manifest, where: str) -> list[str]:
    out = []
    if "labels" not in s:
        return [f"{where}: no labels member"]
    if tuple(s["labels"].shape) != manifest.label_shape or str(s["labels"].dtype) != manifest.label_dtype:
        out.append(f"{where}: labels {s['labels'].dtype}{list(s['labels'].shape)}, expected "
                   f"{manifest.label_dtype}{list(manifest.label_shape)}")
    if manifest.content == "labels":
        if "views" in s:
            out.append(f"{where}: holds views, but the store's content is 'labels'")
        return out + _check_meta(s.get("meta"), manifest, where)
    if "views" not in s:
        return out + [f"{where}: no views member"]
    if tuple(s["views"].shape) != manifest.views_shape or s["views"].dtype != np.uint8:
        out.append(f"{where}: views {s['views'].dtype}{list(s['views'].shape)}, expected uint8{list(manifest.views_shape)}")
    return out


def verify_task(root: str, task: int, manifest: Manifest, record: dict[str, Any] | None,
                check_hash: bool, decode: bool | list[int]) -> list[dict[str, Any]]:
    """Problems of one task as [{'task', 'file', 'problem'}] (empty when it is sound).

    decode: True decodes every sample; a list of sample indices decodes the whole tar shard
    and the whole Zarr shards holding those of this task; False decodes nothing.
    """
    rootp = Path(root)
    a, b = manifest.task_range(task)
    probs: list[dict[str, Any]] = []

    def bad(file: str, problem: str) -> None:
        probs.append({"task": task, "file": file, "problem": problem})

    if record is None:
        bad(wds_path(rootp, task).relative_to(rootp).as_posix() if "wds" in manifest.formats else f"task {task}",
            "no record: the task never finished (rerun synth-shards to render it)")
        return probs
    if not record_is_intact(rootp, record, manifest, check_hash=False):
        for rel, info in record.get("files", {}).items():
            problem = file_problem(rootp, rel, info)
            if problem is not None:
                bad(rel, problem)
        if not probs:
            bad(f"task {task}", f"record range {record.get('range')} does not match the task's [{a}, {b})")
        return probs
    if check_hash:
        for rel, info in record["files"].items():
            if file_problem(rootp, rel, info, check_hash=True) is not None:
                bad(rel, "sha256 mismatch (content damaged)")
    if decode is False:
        return probs
    picks = [i for i in range(a, b)] if decode is True else [i for i in decode if a <= i < b]
    if not picks:
        return probs
    if "wds" in manifest.formats:
        rel = wds_path(rootp, task).relative_to(rootp).as_posix()
        try:
            seen = []
            for s in iter_wds_shard(rootp / rel, render_views=False):
                seen.append(s["index"])
                for msg in _check_sample(s, manifest, f"sample {s['index']}"):
                    bad(rel, msg)
            if seen != list(range(a, b)):
                bad(rel, f"holds samples {seen[:3]}..{seen[-3:] if seen else []} ({len(seen)}), expected [{a}, {b})")
        except DamagedShard as e:
            bad(rel, f"does not decode: {e.problem}")
    if "zarr" in manifest.formats:
        _verify_zarr_task(rootp, task, manifest, picks, bad)
    return probs


def _verify_zarr_task(root: Path, task: int, manifest: Manifest, picks: list[int], bad: Callable[[str, str], None]) -> None:
    """Decode the Zarr shards of `task` holding `picks` (whole), and the task's meta file."""
    zs = manifest.zarr_shard
    want = sorted({i for p in picks for i in range(p // zs * zs, min(p // zs * zs + zs, manifest.samples))})
    reader = ZarrReader(root, allow_partial=True, render_views=False, check_files=False)
    try:
        arrays = reader._open()
    except DamagedShard as e:
        bad("zarr", str(e))
        return
    for name in manifest.arrays:
        for i in want:
            try:
                got = np.asarray(arrays[name][i])
            except Exception as e:  # noqa: BLE001 - any decoding error: name the shard holding the sample
                bad(zarr_shard_key(name, i // zs), f"{name} of sample {i} does not decode: {type(e).__name__}: {e}")
                break
            if tuple(got.shape) != manifest.shape(name):
                bad(zarr_shard_key(name, i // zs), f"{name} shape {list(got.shape)}, expected {list(manifest.shape(name))}")
                break
    meta_rel = zarr_meta_path(root, task).relative_to(root).as_posix()
    try:
        metas = read_zarr_meta(root / meta_rel)
    except DamagedShard as e:
        bad(meta_rel, e.problem)
        return
    a, b = manifest.task_range(task)
    if sorted(metas) != list(range(a, b)):
        bad(meta_rel, f"holds the meta of {len(metas)} samples, expected [{a}, {b})")
    elif manifest.content == "labels":  # each meta must hold what re-renders its views
        for i in range(a, b):
            for msg in _check_meta(metas[i], manifest, f"sample {i}"):
                bad(meta_rel, msg)


def _rerender_check(store: Any, indices: list[int], records: dict[int, dict[str, Any]],
                    renderer: Callable[..., dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    m: Manifest = store.manifest
    labels_store = store.content == "labels"
    cfg = store.engine_config
    bank = resolve_bank(cfg.bank)
    here = device_type("cpu")
    probs, modes = [], set()
    zr = ZarrReader(store.path, allow_partial=True, render_views=False, check_files=False) if "zarr" in store.formats else None
    for i in indices:
        task = i // m.task_size
        rec = records.get(task)
        if rec is None:
            continue
        if labels_store:  # the views are painted here from the stored meta: same device type as the fresh render
            exact = True
            modes.add("labels exact, views painted here from the stored meta exact (labels store)")
        else:
            exact = same_device_type(rec["device_type"], here)
            modes.add("exact (same device type)" if exact else "labels exact, views within one quantisation step (other device type)")
        fresh = renderer(cfg, m.seed, i, bank)
        stored = []
        if "wds" in store.formats:
            rel = wds_path(store.path, task).relative_to(store.path).as_posix()
            try:
                stored.append((rel, next(s for s in iter_wds_shard(store.path / rel, render_views=False) if s["index"] == i)))
            except Exception:  # noqa: BLE001 - decoding problems are reported by verify_task
                pass
        if zr is not None:
            try:
                stored.append((f"zarr shard {i // m.zarr_shard}", zr[i]))
            except Exception:  # noqa: BLE001
                pass
        for where, s in stored:
            if not np.array_equal(s["labels"], fresh["labels"]):
                probs.append({"task": task, "file": where, "problem": f"sample {i}: re-rendered labels differ"})
                continue
            if labels_store:
                try:
                    s = views_from_meta(s)
                except (ValueError, KeyError, TypeError) as e:
                    probs.append({"task": task, "file": where, "problem": f"sample {i}: views do not render from its meta: {e}"})
                    continue
            diff = np.abs(s["views"].astype(np.int16) - fresh["views"].astype(np.int16)).max()
            if (exact and diff != 0) or diff > 1:
                probs.append({"task": task, "file": where, "problem": f"sample {i}: re-rendered views differ (max {int(diff)})"})
    return probs, sorted(modes)


def verify(store: str | Path, quick: bool = False, rerender: int = 0, scheduler: str | None = None,
           client: Any = None, seed: int = 0, renderer: Callable[..., dict[str, Any]] | None = None) -> dict[str, Any]:
    """Check a store; returns {'ok', 'problems': [...], 'bad_files', 'checked', 'comparison', ...}.

    quick: sizes only (no sha256); the shards holding K = max(rerender, 8) random samples are
    decoded whole (every sample's meta checked against its checksum), and damage elsewhere in
    the payload is seen only by the full check.
    scheduler/client: run the per-task checks on a Dask cluster.
    renderer: what re-renders the samples (default the pipeline's `task.render_numpy`).
    """
    st = open_store(store)
    m = st.manifest
    n_tasks = m.tasks
    records = st.record_map
    rng = np.random.default_rng(seed)  # a local generator: which samples to spot-check
    k_decode = min(m.samples, max(rerender, 8))
    decode_pick = sorted(int(i) for i in rng.choice(m.samples, k_decode, replace=False)) if quick else None
    args = [(str(st.path), t, m, records.get(t), not quick, decode_pick if quick else True) for t in range(n_tasks)]
    problems: list[dict[str, Any]] = []
    if client is not None or scheduler is not None:
        problems = _verify_dask(args, client, scheduler)
    else:
        for a in args:
            problems += verify_task(*a)
    pick = sorted(int(i) for i in rng.choice(m.samples, min(rerender, m.samples), replace=False)) if rerender else []
    rr_probs, modes = _rerender_check(st, pick, records, renderer or render_numpy) if pick else ([], [])
    problems += rr_probs
    bad_files = sorted({p["file"] for p in problems})
    return {
        "store": str(st.path), "ok": not problems, "samples": m.samples, "tasks": n_tasks,
        "records": len(records), "checksums": not quick,
        "decoded": (k_decode if quick else m.samples), "rerendered": len(pick),
        "comparison": modes, "problems": problems, "bad_files": bad_files,
    }


def _verify_dask(args: list[tuple], client: Any, scheduler: str | None) -> list[dict[str, Any]]:
    from distributed import Client, as_completed  # lazily: ~1 s of startup, for cluster runs only

    own = client is None
    client = client or Client(scheduler, timeout="30s")
    try:
        problems: list[dict[str, Any]] = []
        it = iter(args)
        window = 64
        ac = as_completed([client.submit(verify_task, *a, pure=False) for a, _ in zip(it, range(window))])
        for fut in ac:
            problems += fut.result()
            fut.release()
            for a in it:
                ac.add(client.submit(verify_task, *a, pure=False))
                break
        return sorted(problems, key=lambda p: (p["task"], p["file"]))
    finally:
        if own:
            client.close()


def format_report(r: dict[str, Any]) -> str:
    lines = [
        f"store {r['store']}: {r['samples']} samples, {r['tasks']} tasks, {r['records']} records",
        (f"checksums: checked; decoded {r['decoded']} samples; " if r["checksums"] else
         f"checksums: skipped (--quick); decoded the shards holding {r['decoded']} random samples; ")
        + f"re-rendered {r['rerendered']}" + (f" ({'; '.join(r['comparison'])})" if r["comparison"] else ""),
    ]
    if r["ok"]:
        lines.append("OK")
    else:
        lines.append(f"BAD: {len(r['bad_files'])} bad shard(s)/file(s):")
        lines += [f"  {p['file']} (task {p['task']}): {p['problem']}" for p in r["problems"]]
        lines.append("rerun the same synth-shards command with --reverify to re-render them")
    return "\n".join(lines)
