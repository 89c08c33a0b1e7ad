"""Run a sweep: one Dask task per point trains (`synthvox pretrain` in a subprocess) and probes it.

Each task holds `threads` units of the Dask resource `cores` (the embedded LocalCluster offers
this machine's cores), so trainings never share a core. A task:

1. writes the point's config (engine: and train: sections, checkpoints at the sweep's steps)
   and runs `python -m synthvox.cli.main pretrain --config ... --out RUN` with
   OMP_NUM_THREADS = MKL_NUM_THREADS = threads, polling the CPU time of the process tree
   (psutil, every 0.2 s); the CPU-seconds at a checkpoint are read off that series at the
   moment its record.json was written; the run's total comes from its rusage;
2. runs `synthvox probe` on every listed checkpoint (and a random init of the architecture);
3. writes `result.json` (small: steps, CPU-seconds, losses, probe values) and returns it.

A point whose result.json matches its config hash is reused; an unfinished one is restarted.
Tasks take (spec, point, folder) and return small dicts: no tensors through the scheduler.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import psutil
import yaml

from synthvox.core.atomic import write_bytes, write_json

from .spec import PROBE_FLAGS, Point, SweepError, SweepSpec
from .table import write_outputs

__all__ = ["run_sweep", "run_point", "train_point", "probe_point", "cpu_at"]

POLL_S = 0.2


def _tree_cpu(proc: Any) -> float | None:
    """CPU-seconds of a process, its reaped children and its live descendants (None once gone)."""
    try:
        t = proc.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for c in proc.children(recursive=True):
            try:
                ct = c.cpu_times()
                total += ct.user + ct.system
            except psutil.Error:
                pass
        return total
    except psutil.Error:
        return None


def cpu_at(samples: list[tuple[float, float]], t: float) -> float:
    """CPU-seconds at wall time `t`, linearly interpolated in the (time, cpu) series."""
    if not samples:
        raise ValueError("no CPU samples were taken")
    if t <= samples[0][0]:
        return samples[0][1]
    for (t0, c0), (t1, c1) in zip(samples, samples[1:]):
        if t0 <= t <= t1:
            return c0 + (c1 - c0) * (t - t0) / max(t1 - t0, 1e-9)
    return samples[-1][1]


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def train_point(point: Point, folder: Path, checkpoints: tuple[int, ...]) -> dict[str, Any]:
    """Train one point in a subprocess; {"checkpoints": [{step, cpu_s, wall_s, loss}], "cpu_s", "wall_s"}."""
    run = folder / "run"
    cfg_path = folder / "point.yaml"
    write_bytes(cfg_path, yaml.safe_dump({"engine": point.engine, "train": point.train}, sort_keys=True).encode())
    cmd = [sys.executable, "-m", "synthvox.cli.main", "pretrain", "--config", str(cfg_path), "--out", str(run)]
    if point.store:
        cmd += ["--store", str(point.store)]
    samples: list[tuple[float, float]] = []
    t_start = time.time()
    with open(folder / "train.log", "wb") as log:
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env(point.threads))
        proc = psutil.Process(p.pid)
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                p.returncode = os.waitstatus_to_exitcode(status)
                break
            c = _tree_cpu(proc)
            if c is not None:
                samples.append((time.time(), c))
            time.sleep(POLL_S)
    wall = time.time() - t_start
    total_cpu = ru.ru_utime + ru.ru_stime
    if p.returncode != 0:
        tail = (folder / "train.log").read_text(errors="replace")[-1500:]
        raise SweepError(f"point {point.name}: training failed (exit {p.returncode}); {folder / 'train.log'} ends:\n{tail}")
    samples.append((time.time(), total_cpu))
    losses = _losses(run / "log.jsonl")
    out = []
    for step in checkpoints:
        rec = run / "checkpoints" / f"step-{step:06d}" / "record.json"
        if not rec.is_file():
            raise SweepError(f"point {point.name}: checkpoint {rec.parent} is missing after training; see {folder / 'train.log'}")
        t = rec.stat().st_mtime
        window = [v for s, v in losses if step - 10 <= s < step]
        out.append({"step": step, "cpu_s": min(cpu_at(samples, t), total_cpu), "wall_s": t - t_start,
                    "loss": sum(window) / len(window) if window else None, "ckpt": str(rec.parent)})
    return {"checkpoints": out, "cpu_s": total_cpu, "wall_s": wall}


def _losses(path: Path) -> list[tuple[int, float]]:
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            if "loss" in r:
                out.append((int(r["step"]), float(r["loss"])))
    return out


def probe_point(point: Point, folder: Path, ckpts: list[str], probe: dict[str, Any], baseline: bool) -> dict[str, Any]:
    """`synthvox probe` on `ckpts` (one subprocess, `threads` threads); {tag: metrics}."""
    pdir = folder / "probes"
    cmd = [sys.executable, "-m", "synthvox.cli.main", "probe", "--out", str(pdir), "--threads", str(point.threads)]
    for c in ckpts:
        cmd += ["--ckpt", c]
    cmd.append("--baseline" if baseline else "--no-baseline")
    for k, v in probe.items():
        flag = PROBE_FLAGS[k]
        cmd += [flag if v else f"--no-{flag[2:]}"] if isinstance(v, bool) else [flag, str(v)]
    with open(folder / "probe.log", "wb") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env(point.threads)).returncode
    if rc != 0:
        tail = (folder / "probe.log").read_text(errors="replace")[-1500:]
        raise SweepError(f"point {point.name}: probing failed (exit {rc}); {folder / 'probe.log'} ends:\n{tail}")
    out = {}
    for f in sorted(pdir.glob("probe-*.json")):
        rec = json.loads(f.read_text())
        out[rec["case"]] = {k: v for k, v in rec["metrics"].items() if isinstance(v, (int, float))}
    return out


def run_point(spec: SweepSpec, point: Point, out: str) -> dict[str, Any]:
    """The Dask task: train, probe, write `points/<name>/result.json`; returns the result (reused when complete)."""
    folder = Path(out) / "points" / point.name
    h = point.config_hash(spec.checkpoints, spec.probe)
    res_path = folder / "result.json"
    if res_path.is_file():
        old = json.loads(res_path.read_text())
        if old.get("hash") == h:
            old["reused"] = True
            return old
    if folder.exists():
        shutil.rmtree(folder)  # an unfinished or differently configured attempt of this point
    folder.mkdir(parents=True)
    tr = train_point(point, folder, spec.checkpoints)
    t0 = time.time()
    probes = probe_point(point, folder, [c["ckpt"] for c in tr["checkpoints"]], spec.probe, spec.baseline)
    for c in tr["checkpoints"]:
        c["probe"] = probes.get(Path(c["ckpt"]).name, {})
    baseline = next((m for tag, m in probes.items() if tag.startswith("random-init")), None)
    result = {"name": point.name, "overrides": point.overrides, "hash": h, "threads": point.threads,
              "engine": point.engine, "train": point.train, "store": point.store, "checkpoints": tr["checkpoints"],
              "baseline": baseline, "train_cpu_s": tr["cpu_s"], "train_wall_s": tr["wall_s"],
              "probe_wall_s": time.time() - t0}
    write_json(res_path, result)
    return result


def _client(scheduler: str | None, cores: int, echo: Callable[[str], Any]) -> tuple[Any, Any, bool]:
    """(client, cluster or None, whether workers offer the `cores` resource)."""
    from distributed import Client, LocalCluster  # lazily: ~1 s of startup, for sweep runs only

    if scheduler:
        client = Client(scheduler, timeout="30s")
        workers = client.scheduler_info().get("workers", {})
        has = any("cores" in (w.get("resources") or {}) for w in workers.values())
        if not has:
            echo("the cluster's workers declare no `cores` resource (dask worker --resources cores=N): "
                 "trainings run as many at a time as the workers have threads")
        return client, None, has
    cluster = LocalCluster(n_workers=1, threads_per_worker=cores, processes=False, resources={"cores": cores},
                           dashboard_address=None)
    return Client(cluster), cluster, True


def run_sweep(spec: SweepSpec, out: str | Path, scheduler: str | None = None, cores: int | None = None,
              echo: Callable[[str], Any] = print) -> dict[str, Any]:
    """Run every point of `spec` (Dask), then write the tables and the plot; returns their paths.

    Points that fail are reported (and listed in the table) after the others finish; the call
    then raises SweepError naming them.
    """
    from distributed import as_completed  # lazily: ~1 s of startup, for sweep runs only

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    points = spec.points()
    cores = int(cores or os.cpu_count() or 1)
    too_big = [p.name for p in points if p.threads > cores]
    if too_big and not scheduler:
        raise SweepError(f"points {too_big} want more threads than --cores {cores}")
    write_bytes(out / "sweep.yaml", Path(spec.path).read_bytes())
    echo(f"sweep {spec.name}: {len(points)} points, checkpoints at steps {list(spec.checkpoints)}, {cores} cores")
    client, cluster, resources = _client(scheduler, cores, echo)
    results, failures = [], {}
    try:
        futs = {client.submit(run_point, spec, p, str(out), key=f"sweep-{p.name}-{time.time_ns()}", pure=False,
                              resources={"cores": p.threads} if resources else None): p for p in points}
        for fut in as_completed(futs):
            p = futs[fut]
            try:
                r = fut.result()
            except Exception as e:  # a failed point must not lose the others' results
                failures[p.name] = str(e)
                echo(f"{p.name}: FAILED: {str(e).splitlines()[0]}")
                continue
            results.append(r)
            last = r["checkpoints"][-1]
            echo(f"{p.name}: {'reused' if r.get('reused') else 'done'}: step {last['step']}, "
                 f"{last['cpu_s'] / 60:.2f} CPU-min, retrieval/mean {last['probe'].get('retrieval/mean', float('nan')):.3f}")
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    paths = write_outputs(spec, results, failures, out)
    if failures:
        raise SweepError(f"{len(failures)} of {len(points)} points failed: {sorted(failures)}; "
                         f"the table in {paths['table_md']} holds the others")
    return paths
