"""The task: render one index range and write its tar shard and Zarr shards atomically.

`run_task(spec)` takes a `TaskSpec` (a small frozen record: engine config, seed, range, store
path, formats, content, and the renderer the task calls) and returns a small record; no arrays
travel through the scheduler. It renders on CPU with one
torch thread, writes every file through a private temporary and renames it into place, then
writes its record. Running a task twice (Dask may) gives the same bytes under the same names,
so neither attempt can corrupt the other's output.

Content `full` renders whole samples (`render_numpy`); content `labels` renders label maps and
draws the views' parameters without painting them (`render_labels_numpy`). With a `source`
store in the spec (`synthvox convert`) the task reads that store's samples of its range
instead of rendering them: to `labels` it drops the views, to `full` it paints them from meta.
"""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from synthvox.core.atomic import FATAL_ERRNOS, atomic_open, sha256_file, write_json
from synthvox.core.errors import SynthvoxError
from synthvox.engine.config import EngineConfig, engine_config_hash
from synthvox.engine.device import device_type
from synthvox.engine.render import render_sample, sample_to_numpy
from synthvox.engine.templates import TemplateBank, resolve_bank

from .faults import inject, parse_faults
from .labels import labels_only, render_labels_numpy, views_from_meta
from .layout import record_path, stored_arrays, wds_path
from .manifest import Manifest, read_manifest
from .records import find_record
from .wds_io import WdsWriter, iter_wds_shard
from .zarr_io import ZarrReader, write_zarr_meta, write_zarr_shard

__all__ = ["run_task", "TaskSpec", "Renderer", "FatalTaskError", "render_numpy", "render_labels_numpy"]

#: what renders sample `index`: (EngineConfig, seed, index, TemplateBank) -> numpy sample dict
Renderer = Callable[[EngineConfig, int, int, TemplateBank], dict[str, Any]]

_BANKS: dict[Any, Any] = {}
_ENGINES: dict[str, tuple[Any, Any, str]] = {}


class FatalTaskError(SynthvoxError, RuntimeError):
    """A failure no retry can cure (full disk, read-only store, another template bank): stop the run."""


def _limit_threads() -> None:
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)  # one single-threaded worker per core: threads would only contend


def _bank(spec: str | None) -> Any:
    if spec not in _BANKS:
        _BANKS[spec] = resolve_bank(spec)
    return _BANKS[spec]


def _engine(cfg_dict: dict[str, Any]) -> tuple[EngineConfig, TemplateBank, str]:
    """(EngineConfig, bank, engine config hash), parsed once per process (tiny tasks add up)."""

    key = json.dumps(cfg_dict, sort_keys=True)
    if key not in _ENGINES:
        cfg = EngineConfig.from_dict(cfg_dict)
        bank = _bank(cfg.bank)
        _ENGINES[key] = (cfg, bank, engine_config_hash(cfg, bank.content_hash))
    return _ENGINES[key]


def render_numpy(cfg: EngineConfig, seed: int, index: int, bank: TemplateBank) -> dict[str, Any]:
    """Sample `index` as numpy arrays, rendered on CPU (the pipeline's renderer)."""
    return sample_to_numpy(render_sample(cfg, seed, index, bank=bank, device="cpu"))


@dataclass(frozen=True)
class TaskSpec:
    """Everything one task needs, and nothing more (it travels to a worker with each attempt).

    `renderer` renders a sample (None: the engine, `render_numpy` or `render_labels_numpy`
    by content); `source` names a store whose samples are read instead (convert.py);
    `faults` are the SYNTHVOX_FAULTS rules (faults.py); `progress_topic` names the Dask event
    topic the task reports its samples done on (None: no report).
    """

    root: str
    task: int
    start: int
    stop: int
    engine: dict[str, Any]
    engine_hash: str
    seed: int
    formats: tuple[str, ...]
    zarr_shard: int
    content: str = "full"
    attempt: int = 0
    faults: str = ""
    source: str | None = None
    renderer: Renderer | None = None
    progress_topic: str | None = None

    @classmethod
    def of(cls, manifest: Manifest, root: Path, task: int, **kw: Any) -> "TaskSpec":
        """The spec of `task` of a store with this manifest (`kw`: the optional fields)."""
        a, b = manifest.task_range(task)
        return cls(root=str(root), task=task, start=a, stop=b, engine=manifest.engine_config,
                   engine_hash=manifest.engine_config_hash, seed=manifest.seed, formats=manifest.formats,
                   zarr_shard=manifest.zarr_shard, content=manifest.content, **kw)

    def retry(self, attempt: int) -> "TaskSpec":
        return dataclasses.replace(self, attempt=attempt)

    def render_fn(self) -> Renderer:
        """The renderer this task calls (the given one, else the engine's for its content)."""
        if self.renderer is not None:
            return self.renderer
        return render_labels_numpy if self.content == "labels" else render_numpy


def _progress_reporter(spec: TaskSpec) -> Callable[[int], None]:
    """A callback the task calls with its samples done: sends them (at most twice a second) on
    `spec.progress_topic` to the client, which moves its progress line within a task."""
    if not spec.progress_topic:
        return lambda done: None
    from distributed import get_worker  # lazily: only tasks on a Dask worker report

    try:
        worker = get_worker()
    except ValueError:  # not on a worker (in-process run)
        return lambda done: None
    last = [0.0]

    def report(done: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.5 or done == spec.stop - spec.start:
            last[0] = now
            worker.log_event(spec.progress_topic, {"task": spec.task, "attempt": spec.attempt, "done": done})
    return report


def _source_samples(source: str, task: int, start: int, stop: int) -> tuple[Callable[[int], dict[str, Any]], Any]:
    """(sample getter by index, device type of the source task) for converting store `source`.

    Reads the source's tar shard of the same task (both stores share the task size) or, in a
    Zarr-only store, its samples by index; views are never rendered here.
    """
    m = read_manifest(Path(source))
    rec = find_record(Path(source), task)
    if rec is None or list(rec["range"]) != [start, stop]:
        raise FatalTaskError(f"source store {source} has no finished task {task} with samples [{start}, {stop}); "
                             "finish it with synthvox synth-shards before converting")
    if "wds" in m.formats:
        it = iter_wds_shard(wds_path(Path(source), task), render_views=False)

        def get(i: int) -> dict[str, Any]:
            s = next(it)
            if s["index"] != i:
                raise ValueError(f"{wds_path(Path(source), task)}: sample {s['index']} where {i} was expected (damaged shard)")
            return s
    else:
        reader = ZarrReader(source, allow_partial=True, render_views=False)  # its tasks are checked one by one
        get = reader.__getitem__
    return get, rec.get("device_type")


def run_task(spec: TaskSpec, on_sample: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Render and write one task; return its record plus `log` (host, seconds: not stored in records/).

    `on_sample(done)` is called after each sample (in-process progress); on a Dask worker the
    task reports on `spec.progress_topic` instead.
    """
    t0, c0 = time.perf_counter(), time.process_time()
    _limit_threads()
    root, task, attempt = Path(spec.root), spec.task, spec.attempt
    rules = parse_faults(spec.faults)
    cfg, bank, cfg_hash = _engine(spec.engine)
    if cfg_hash != spec.engine_hash:
        raise FatalTaskError(
            f"task {task} on {socket.gethostname()}: the engine config hash differs from the store's "
            "(another template bank content at the same path?); make every worker see the same bank")
    content = spec.content
    dev_type = device_type("cpu")
    render: Renderer
    if spec.source:
        get, src_type = _source_samples(spec.source, task, spec.start, spec.stop)
        if content == "labels":
            dev_type = src_type  # nothing is rendered: the labels are the source's

            def render(cfg: EngineConfig, seed: int, i: int, bank: TemplateBank) -> dict[str, Any]:
                return labels_only(get(i))
        else:
            def render(cfg: EngineConfig, seed: int, i: int, bank: TemplateBank) -> dict[str, Any]:
                return views_from_meta(get(i))
    else:
        render = spec.render_fn()
    report = on_sample or _progress_reporter(spec)
    files: dict[str, dict[str, Any]] = {}
    try:
        files.update(_write_task(spec, cfg, bank, render, rules, stored_arrays(content), report))
    except OSError as e:
        if e.errno in FATAL_ERRNOS:
            raise FatalTaskError(str(e)) from e
        raise
    record = {"task": task, "range": [spec.start, spec.stop], "files": files,
              "formats": sorted(spec.formats), "device_type": dev_type}
    try:
        write_json(record_path(root, task), record)
    except OSError as e:
        raise (FatalTaskError(str(e)) if e.errno in FATAL_ERRNOS else e) from e
    record["log"] = {"host": socket.gethostname(), "pid": os.getpid(), "attempt": attempt,
                     "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}
    return record


def _write_task(spec: TaskSpec, cfg: EngineConfig, bank: TemplateBank, render: Renderer, rules: list[dict[str, Any]],
                arrays: tuple[str, ...], report: Callable[[int], None]) -> dict[str, dict[str, Any]]:
    root, task, attempt, formats, zs = Path(spec.root), spec.task, spec.attempt, spec.formats, spec.zarr_shard
    start, stop, seed = spec.start, spec.stop, spec.seed
    files: dict[str, dict[str, Any]] = {}
    metas: list[tuple[int, dict[str, Any]]] = []
    buf: list[dict[str, Any]] = []

    def on_member() -> None:
        inject(rules, "write", task, attempt)

    def flush_zarr() -> None:
        shard = buf[0]["index"] // zs
        for name in arrays:
            data = np.stack([s[name] for s in buf])
            rel = write_zarr_shard(root, name, shard, zs, data, on_member)
            files[rel] = {}
        buf.clear()

    tar_final = wds_path(root, task)
    tar_ctx = atomic_open(tar_final, "wb") if "wds" in formats else None
    try:
        f = tar_ctx.__enter__() if tar_ctx else None
        writer = WdsWriter(f, on_member) if f is not None else None
        for i in range(start, stop):
            s = render(cfg, seed, i, bank)
            if i == start:
                inject(rules, "render", task, attempt)
            if writer is not None:
                writer.write(s, arrays)
            if "zarr" in formats:
                metas.append((i, s["meta"]))
                buf.append(s)
                if len(buf) == zs or i == stop - 1:
                    flush_zarr()
            report(i + 1 - start)
        if writer is not None:
            writer.close()
    except BaseException as e:
        if tar_ctx is not None:
            tar_ctx.__exit__(type(e), e, e.__traceback__)
        raise
    if tar_ctx is not None:
        tar_ctx.__exit__(None, None, None)
        files[tar_final.relative_to(root).as_posix()] = {}
    if "zarr" in formats:
        files[write_zarr_meta(root, task, metas).relative_to(root).as_posix()] = {}
    for rel in files:
        p = root / rel
        files[rel] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
    return files
