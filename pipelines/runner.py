"""`synth_shards`: render samples into a sharded store, in-process or on a Dask cluster.

The client prepares the store (manifest, Zarr metadata), skips tasks whose record and file
sizes match (hashes too with `reverify`), and feeds the rest through a bounded window of
futures (`as_completed`): memory stays flat however many tasks there are. A task lost with
its worker is resubmitted; a task failing deterministically is retried `retries` times, then
reported; more than `max_failures` failures stop the run. Full disks and read-only stores
stop it at once with a clear message. Completed records are consolidated now and then.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from synthvox.core.atomic import WriteError, write_bytes
from synthvox.core.errors import SynthvoxError
from synthvox.engine.config import EngineConfig, engine_config_hash
from synthvox.engine.schema import label_dtype
from synthvox.engine.templates import resolve_bank

from .faults import ENV as FAULTS_ENV
from .faults import parse_faults
from .layout import DEFAULT_TASK_SIZE, MANIFEST, stored_arrays, task_range, zarr_shard_samples
from .lock import store_lock
from .manifest import BYTE_DECIDING, RecordBook, check_compatible, make_manifest, read_manifest, software_versions
from .progress import Progress
from .task import FatalTaskError, make_spec, run_task
from .zarr_io import create_zarr_arrays

__all__ = ["synth_shards", "PipelineError", "FORMATS", "parse_formats", "prepare_store", "cleanup_temporaries"]

FORMATS = ("wds", "zarr")
CONSOLIDATE_EVERY_S = 30.0
LOST_RETRIES = 3          # resubmissions of a task whose worker died


class PipelineError(SynthvoxError, RuntimeError):
    """The run stopped or finished with failed tasks; `.summary` holds the run summary."""

    def __init__(self, message: str, summary: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.summary = summary or {}


def parse_formats(formats: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    items = [f.strip() for f in items if f.strip()]
    bad = [f for f in items if f not in FORMATS]
    if bad or not items:
        raise ValueError(f"--formats {','.join(items)!r}: unknown {bad or 'empty'}; choose from wds, zarr, wds,zarr")
    return tuple(f for f in FORMATS if f in items)  # canonical order


def _probe_writable(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        write_bytes(root / ".synthvox-write-probe", b"ok")
        os.unlink(root / ".synthvox-write-probe")
    except OSError as e:
        raise WriteError(e.errno or 0, f"store {root} is not writable ({e.strerror or e}); choose a writable --out") from None


def cleanup_temporaries(root: Path) -> int:
    """Remove temporaries left by killed attempts (never a file under a final name)."""
    n = 0
    for sub in ("wds", "records", "zarr-meta", "."):
        d = root / sub
        if d.is_dir():
            for name in os.listdir(d):
                if name.startswith(".") and name.endswith(".tmp"):
                    (d / name).unlink(missing_ok=True)
                    n += 1
    for name in os.listdir(root / "zarr") if (root / "zarr").is_dir() else []:
        if name.startswith(".tmp-"):
            shutil.rmtree(root / "zarr" / name, ignore_errors=True)
            n += 1
    return n


def prepare_store(out: str | Path, samples: int, task_size: int, cfg: EngineConfig, seed: int,
                  formats: tuple[str, ...], reverify: bool = False,
                  content: str = "full", lock: ExitStack | None = None) -> tuple[Path, dict[str, Any], RecordBook]:
    """Create or reopen the store (refusing a mismatch), write its metadata, load intact records.

    With `lock` (an ExitStack), the store's client lock is taken into it before anything is
    cleaned or written (lock.py): a second client stops with StoreBusy.
    """
    root = Path(out)
    if samples < 1 or task_size < 1:
        raise ValueError(f"--samples ({samples}) and --task-size ({task_size}) must be >= 1")
    bank = resolve_bank(cfg.bank)
    cfg_hash = engine_config_hash(cfg, bank.content_hash)
    zs = zarr_shard_samples(task_size)
    manifest = make_manifest(cfg_dict=cfg.to_dict(), cfg_hash=cfg_hash, bank_hash=bank.content_hash, seed=seed,
                             samples=samples, task_size=task_size, zarr_shard=zs, formats=formats,
                             label_dtype=str(label_dtype(cfg.max_labels)), views=cfg.views, size=cfg.size,
                             content=content)
    if (root / MANIFEST).exists():
        old = read_manifest(root)
        check_compatible(old, manifest, root)
    _probe_writable(root)
    if lock is not None:
        lock.enter_context(store_lock(root))
    cleanup_temporaries(root)
    for sub in ("records", "logs") + tuple(f for f in formats if f == "wds") + (("zarr-meta",) if "zarr" in formats else ()):
        (root / sub).mkdir(exist_ok=True)
    if "zarr" in formats:
        create_zarr_arrays(root, samples, cfg.size, cfg.views, manifest["label_dtype"], zs, stored_arrays(content))
    book = RecordBook(root, manifest)
    book.load(check_hash=reverify)
    book.write_manifest()
    return root, manifest, book


def synth_shards(out: str | Path, samples: int, *, task_size: int | None = None, cfg: EngineConfig | None = None, seed: int = 0,
                 formats: tuple[str, ...] | str = ("wds",), workers: int | None = None, scheduler: str | None = None,
                 client: Any = None, max_failures: int = 0, retries: int = 1, reverify: bool = False,
                 progress: bool = True, window: int | None = None, stream: Any = None, content: str = "full",
                 source: str | Path | None = None, renderer: Callable[..., dict[str, Any]] | None = None) -> dict[str, Any]:
    """Render samples [0, samples) of (cfg, seed) into the store `out`; returns a summary dict.

    content: "full" (labels and views) or "labels" (labels and meta; readers render the views).
    workers=0 renders in this process (no Dask); workers=None uses one process per core;
    `scheduler` (an address) or `client` (a distributed.Client) use an existing cluster.
    source: a store whose samples the tasks read instead of rendering them (see convert.py).
    renderer: what renders a sample in the tasks (default the engine; see `run_task`).
    Raises PipelineError (with `.summary`) when tasks failed or the run had to stop.
    """
    cfg = cfg or EngineConfig()
    formats = parse_formats(formats)
    stored_arrays(content)  # validates the content kind
    if task_size is None and (Path(out) / MANIFEST).is_file():
        task_size = int(read_manifest(Path(out))["task_size"])  # resuming/growing: the store's own layout
    task_size = int(task_size or DEFAULT_TASK_SIZE)
    stream = stream or sys.stderr
    with ExitStack() as held:
        root, manifest, book = prepare_store(out, samples, task_size, cfg, seed, formats, reverify, content, lock=held)
        run = _Run(root, manifest, book, seed, formats, max_failures, retries, progress, stream)
        run.source = str(Path(source).resolve()) if source is not None else None
        run.renderer = renderer
        run.log(f"store {root}: {samples} samples in {manifest['tasks']} tasks of {task_size} "
                f"({book.tasks_done} already done), formats {','.join(formats)}, content {content}"
                + (f", from {run.source}" if run.source else ""))
        t0 = time.perf_counter()
        try:
            if book.tasks_done < book.tasks:
                if client is not None:
                    run.run_dask(client, window)
                elif scheduler is None and workers == 0:
                    run.run_local()
                else:
                    run.run_dask_owned(workers, scheduler, window)
        finally:
            run.finish()
    summary = run.summary(time.perf_counter() - t0)
    if run.fatal:
        raise PipelineError(run.fatal, summary)
    if run.failed:
        listing = "\n  ".join(f"task {f['task']} samples [{f['range'][0]}, {f['range'][1]}): {f['error']}" for f in run.failed)
        raise PipelineError(f"{len(run.failed)} task(s) failed; rerun the same command to retry them:\n  {listing}", summary)
    return summary


class _Run:
    """The client's bookkeeping of one run (shared by the in-process and Dask paths)."""

    def __init__(self, root: Path, manifest: dict[str, Any], book: RecordBook, seed: int, formats: tuple[str, ...],
                 max_failures: int, retries: int, progress: bool, stream: Any) -> None:
        self.root, self.manifest, self.book = root, manifest, book
        self.seed, self.formats = seed, formats
        self.max_failures, self.retries = max_failures, retries
        self.faults = os.environ.get(FAULTS_ENV, "")
        self.rules = parse_faults(self.faults)
        self.stream = stream
        self.progress = Progress(manifest["samples"], book.samples_done(), stream=stream, enabled=progress)
        self.source: str | None = None  # a store to convert, read by the tasks
        self.renderer: Callable[..., dict[str, Any]] | None = None  # None: the tasks' own renderer
        self.failed: list[dict[str, Any]] = []
        self.fatal: str | None = None
        self.completed = 0
        self.skipped = book.tasks_done
        self._errors: dict[int, int] = {}
        self._lost: dict[int, int] = {}
        self._last_flush = time.perf_counter()
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self._log = open(root / "logs" / f"run-{stamp}-{os.getpid()}.jsonl", "a")

    def log(self, msg: str) -> None:
        self.stream.write(msg + "\n")
        self.stream.flush()

    def todo(self) -> Iterator[int]:
        """Tasks still to render, ascending (lazily: never a list of every task)."""
        done = self.book.done
        return (t for t in range(self.book.tasks) if not done[t])

    def spec(self, task: int, attempt: int) -> dict[str, Any]:
        a, b = task_range(task, self.manifest["samples"], self.manifest["task_size"])
        return make_spec(root=self.root, task=task, start=a, stop=b, cfg_dict=self.manifest["engine_config"],
                         cfg_hash=self.manifest["engine_config_hash"], seed=self.seed, formats=self.formats,
                         zarr_shard=self.manifest["zarr_shard"], attempt=attempt, faults=self.faults,
                         content=self.manifest["content"], source=self.source)

    def on_result(self, rec: dict[str, Any]) -> None:
        log = rec.pop("log", {})
        self.book.add(rec)
        self._log.write(json.dumps({"task": rec["task"], **log}) + "\n")
        self.completed += 1
        self.progress.update(rec["range"][1] - rec["range"][0])
        now = time.perf_counter()
        if now - self._last_flush > CONSOLIDATE_EVERY_S:
            self._log.flush()
            self.book.write_manifest()
            self._last_flush = now
        for r in self.rules:
            if r["kind"] == "kill-client" and r.get("done") == self.completed:
                os._exit(87)  # injected: the client dies abruptly (tests of resume)

    def on_error(self, task: int, attempt: int, exc: BaseException, lost: bool) -> int | None:
        """Decide what follows a failed attempt: the next attempt number, or None (given up)."""
        if isinstance(exc, (FatalTaskError, WriteError)):
            self.fatal = self.fatal or f"task {task} stopped the run: {exc}"
            return None
        if lost:
            self._lost[task] = self._lost.get(task, 0) + 1
            if self._lost[task] <= LOST_RETRIES:
                self.log(f"task {task}: worker lost, resubmitting (attempt {attempt + 1})")
                return attempt + 1
        else:
            self._errors[task] = self._errors.get(task, 0) + 1
            if self._errors[task] <= self.retries:
                self.log(f"task {task}: {type(exc).__name__}: {exc}; retrying (attempt {attempt + 1})")
                return attempt + 1
        a, b = task_range(task, self.manifest["samples"], self.manifest["task_size"])
        self.failed.append({"task": task, "range": [a, b], "error": f"{type(exc).__name__}: {exc}"})
        self.progress.update(failures=1)
        if len(self.failed) > self.max_failures:
            self.fatal = (f"{len(self.failed)} task(s) failed (more than --max-failures {self.max_failures}); "
                          f"first: task {self.failed[0]['task']}: {self.failed[0]['error']}")
        return None

    def run_local(self) -> None:
        threads = torch.get_num_threads()  # tasks render single-threaded; give the caller its setting back
        try:
            self._run_local()
        finally:
            torch.set_num_threads(threads)

    def _run_local(self) -> None:
        for task in self.todo():
            attempt: int | None = 0
            while attempt is not None:
                try:
                    self.on_result(run_task(self.spec(task, attempt), self.renderer))
                    attempt = None
                except Exception as e:  # noqa: BLE001 - classified by on_error
                    attempt = self.on_error(task, attempt, e, lost=False)
            if self.fatal:
                return

    def run_dask_owned(self, workers: int | None, scheduler: str | None, window: int | None) -> None:
        from distributed import Client  # lazily: ~1 s of startup, for cluster runs only

        if scheduler:
            with Client(scheduler, timeout="30s") as client:
                check_workers(client, self.root)
                self.run_dask(client, window)
            return
        with local_cluster(workers) as cluster, Client(cluster) as client:
            self.run_dask(client, window)

    def run_dask(self, client: Any, window: int | None) -> None:
        from distributed import as_completed  # lazily: ~1 s of startup, for cluster runs only
        from distributed.scheduler import KilledWorker

        nworkers = max(1, sum(w.get("nthreads", 1) for w in client.scheduler_info(n_workers=-1)["workers"].values()))
        window = window or max(4, 2 * nworkers)
        todo = self.todo()
        inflight: dict[str, tuple[int, int, Any]] = {}
        ac = as_completed()
        tag = f"{os.getpid()}-{id(self) % 100000}"

        def submit(task: int, attempt: int) -> None:
            fut = client.submit(run_task, self.spec(task, attempt), self.renderer, key=f"synthvox-{tag}-t{task}-a{attempt}", pure=False)
            inflight[fut.key] = (task, attempt, fut)
            ac.add(fut)

        for task in todo:
            submit(task, 0)
            if len(inflight) >= window:
                break
        for fut in ac:
            task, attempt, _ = inflight.pop(fut.key)
            nxt: int | None = None
            if fut.status == "finished":
                self.on_result(fut.result())
            else:
                exc = fut.exception()
                nxt = self.on_error(task, attempt, exc, lost=isinstance(exc, KilledWorker))
            fut.release()
            if self.fatal:
                client.cancel([f for _, _, f in inflight.values()])
                inflight.clear()
                return
            if nxt is not None:
                submit(task, nxt)
            else:
                for t in todo:  # keep the window full, one new task per completion
                    submit(t, 0)
                    break

    def finish(self) -> None:
        self._log.close()
        cleanup_temporaries(self.root)
        self.book.write_manifest()
        self.progress.close()

    def summary(self, seconds: float) -> dict[str, Any]:
        rendered = self.book.samples_done() - self.progress.start_done
        return {
            "store": str(self.root), "samples": self.manifest["samples"], "tasks": self.book.tasks,
            "tasks_done": self.book.tasks_done, "tasks_skipped": self.skipped, "tasks_rendered": self.completed,
            "failed": self.failed, "complete": self.book.tasks_done == self.book.tasks,
            "seconds": seconds, "samples_per_s": rendered / seconds if seconds > 0 else 0.0,
            "bytes": dict(self.book.bytes),
        }


def local_cluster(workers: int | None) -> Any:
    """The embedded LocalCluster: one single-threaded worker process per core (or `workers`).

    Thread limits go into the worker environment before torch is imported; a lost worker
    fails its task at once (allowed-failures 0) so the client resubmits it with a new attempt.
    """
    import dask  # lazily: ~1 s of startup, for cluster runs only
    from distributed import LocalCluster

    n = workers or os.cpu_count() or 1
    env = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                               silence_logs=logging.ERROR, env=env)
    from distributed import Client  # lazily: ~1 s of startup, for cluster runs only

    with Client(cluster) as c:
        c.register_plugin(_WorkerPlugin())
    return cluster


def _WorkerPlugin() -> Any:
    from distributed.diagnostics.plugin import WorkerPlugin  # lazily: ~1 s of startup, for cluster runs only

    class ThreadLimit(WorkerPlugin):
        """One torch thread per single-threaded worker process."""

        name = "synthvox-thread-limit"

        def setup(self, worker: Any) -> None:
            torch.set_num_threads(1)

    return ThreadLimit()


def _worker_probe(root: str) -> dict[str, Any]:
    out: dict[str, Any] = {"versions": software_versions()}
    try:
        p = Path(root) / f".probe-{os.getpid()}-{os.uname().nodename}"
        p.write_bytes(b"ok")
        p.unlink()
        out["writable"] = True
    except OSError as e:
        out["writable"] = f"{type(e).__name__}: {e}"
    return out


def check_workers(client: Any, root: Path) -> None:
    """Every worker can write the store and runs the client's versions of BYTE_DECIDING."""
    mine = software_versions()
    replies: dict[str, dict[str, Any]] = client.run(_worker_probe, str(root))
    if not replies:
        raise PipelineError(f"the Dask cluster at {client.scheduler.address} has no workers")
    problems = []
    for addr, r in replies.items():
        if r["writable"] is not True:
            problems.append(f"{addr} cannot write {root}: {r['writable']} (the store must be on a shared file system)")
        for pkg in BYTE_DECIDING:
            if r["versions"].get(pkg) != mine.get(pkg):
                problems.append(f"{addr} runs {pkg} {r['versions'].get(pkg)}, the client {mine.get(pkg)}")
    if problems:
        raise PipelineError("worker check failed:\n  " + "\n  ".join(problems))
