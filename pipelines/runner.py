"""`synth_shards`: render samples into a sharded store, in-process or on a Dask cluster.

The order is what keeps a failed start from leaving a half-made store: the settings are
checked against an existing store (nothing written), the cluster is reached (an unreachable
`--scheduler` fails here), the workers are checked (they can write the store and run the same
versions), and only then the skeleton is written or repaired (skeleton.py) and the unfinished
tasks run (run.py). The cluster's parts live in cluster.py and worker_check.py.
"""
from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from synthvox.engine.config import EngineConfig

from .cluster import DEFAULT_DASHBOARD, cluster_client, dashboard_url, local_cluster, worker_threads
from .errors import PipelineError
from .layout import FORMATS, TASKS_PER_WORKER, choose_task_size, stored_arrays
from .run import Run
from .skeleton import check_against, cleanup_temporaries, existing_manifest, plan_manifest, probe_writable, write_skeleton
from .task import Renderer
from .worker_check import check_workers

__all__ = ["synth_shards", "PipelineError", "FORMATS", "parse_formats", "choose_task_size", "cleanup_temporaries",
           "check_workers", "local_cluster", "TASKS_PER_WORKER"]

def parse_formats(formats: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    items = [f.strip() for f in items if f.strip()]
    bad = [f for f in items if f not in FORMATS]
    if bad or not items:
        raise ValueError(f"--formats {','.join(items)!r}: unknown {bad or 'empty'}; choose from wds, zarr, wds,zarr")
    return tuple(f for f in FORMATS if f in items)  # canonical order


def synth_shards(out: str | Path, samples: int, *, task_size: int | None = None, cfg: EngineConfig | None = None,
                 seed: int = 0, formats: tuple[str, ...] | str = ("wds",), workers: int | None = None,
                 scheduler: str | None = None, client: Any = None, max_failures: int = 0, retries: int = 1,
                 reverify: bool = False, progress: bool = True, window: int | None = None, stream: Any = None,
                 content: str = "full", source: str | Path | None = None, renderer: Renderer | None = None,
                 task_timeout: float | None = None,
                 dashboard_address: str | None = DEFAULT_DASHBOARD) -> dict[str, Any]:
    """Render samples [0, samples) of (cfg, seed) into the store `out`; returns a summary dict.

    content: "full" (labels and views) or "labels" (labels and meta; readers render the views).
    workers=0 renders in this process (no Dask); workers=None uses one process per core;
    `scheduler` (an address) or `client` (a distributed.Client) use an existing cluster.
    task_size: samples per task; None: the store's own, or for a new store `choose_task_size`.
    task_timeout: seconds after which a running task is resubmitted to another worker
    (None: TIMEOUT_FACTOR x the median task time of this run, at least TIMEOUT_FLOOR_S; run.py).
    dashboard_address: where the embedded LocalCluster's dashboard listens (None: none).
    source: a store whose samples the tasks read instead of rendering them (see convert.py).
    renderer: what renders a sample in the tasks (default the engine; see `TaskSpec`).
    Raises PipelineError (with `.summary`) when tasks failed or the run had to stop.
    """
    cfg = cfg or EngineConfig()
    formats = parse_formats(formats)
    stored_arrays(content)  # validates the content kind
    if task_timeout is not None and task_timeout <= 0:
        raise ValueError(f"--task-timeout {task_timeout}: must be > 0 seconds")
    stream = stream or sys.stderr
    root = Path(out)
    old = existing_manifest(root)
    if task_size is None and old is not None:
        task_size = old.task_size  # resuming/growing: the store's own layout
    manifest = None
    if task_size is not None:
        manifest = plan_manifest(samples, task_size, cfg, seed, formats, content)
        check_against(root, manifest)  # refuse a mismatch before any cluster starts or anything is written
    in_process = client is None and scheduler is None and workers == 0
    held_client = client is not None  # the caller's own client: its dashboard is its cluster's
    with ExitStack() as held:
        if not in_process and client is None:
            client = held.enter_context(cluster_client(workers, scheduler, dashboard_address))
        if client is not None and progress:
            owned_without = scheduler is None and dashboard_address is None and not held_client
            url = None if owned_without else dashboard_url(client)
            _say(stream, f"Dask dashboard: {url}" if url else "Dask dashboard: off")
        if manifest is None:
            task_size = choose_task_size(samples, 1 if in_process else worker_threads(client))
            if progress:
                _say(stream, f"--task-size not given: {task_size} samples per task, so that every worker has work "
                             f"(pass --task-size {task_size} to get this store's layout with another worker count)")
            manifest = plan_manifest(samples, task_size, cfg, seed, formats, content)
        probe_writable(root)
        if scheduler is not None:
            check_workers(client, root)
        book = write_skeleton(root, manifest, reverify, lock=held)
        run = Run(root, book, max_failures=max_failures, retries=retries, progress=progress, stream=stream,
                  source=str(Path(source).resolve()) if source is not None else None, renderer=renderer,
                  task_timeout=task_timeout)
        run.log(f"store {root}: {samples} samples in {manifest.tasks} tasks of {manifest.task_size} "
                f"({book.tasks_done} already done), formats {','.join(formats)}, content {content}"
                + (f", from {run.source}" if run.source else ""))
        t0 = time.perf_counter()
        try:
            if book.tasks_done < book.tasks:
                if in_process:
                    run.run_local()
                else:
                    run.run_dask(client, window)
        finally:
            run.finish()
    summary = run.summary(time.perf_counter() - t0)
    if run.fatal:
        raise PipelineError(run.fatal, summary)
    if run.failed:
        listing = "\n  ".join(f"task {f['task']} samples [{f['range'][0]}, {f['range'][1]}): {f['error']}" for f in run.failed)
        raise PipelineError(f"{len(run.failed)} task(s) failed; rerun the same command to retry them:\n  {listing}", summary)
    return summary


def _say(stream: Any, msg: str) -> None:
    stream.write(msg + "\n")
    stream.flush()
