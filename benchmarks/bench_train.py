"""Trainer benchmarks: loss memory (plain vs chunked), reference-model step time on CPU,
loader throughput for 128^3 pairs, and (where a GPU is at hand) bf16 pairs/s at 128^3.

    python -m benchmarks.bench_train [--quick] [--skip-loader] [--gpu]

Loss memory is measured in a fresh subprocess per variant (peak RSS over a baseline taken
after the inputs exist; CUDA: max_memory_allocated). CPU times use one thread.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import fmt_table, record

_LOSS_CHILD = r"""
import json, resource, sys, torch
torch.set_num_threads(1)
from torch.nn import functional as F
from synthvox.train.loss import supcon_loss
n, c, chunk, dev = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
chunk = None if chunk == "none" else int(chunk)
g = torch.Generator().manual_seed(0)
raw = torch.randn(2 * n, c, generator=g).to(dev).requires_grad_(True)
labels = torch.randint(0, 30, (2 * n,), generator=g).to(dev)
warm = supcon_loss(F.normalize(raw[:64], dim=1), labels[:64], 0.33, chunk); warm.backward(); raw.grad = None
if dev == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
else:
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
loss = supcon_loss(F.normalize(raw, dim=1), labels, 0.33, chunk)
loss.backward()
if dev == "cuda":
    torch.cuda.synchronize(); peak = torch.cuda.max_memory_allocated() - base
else:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
print(json.dumps({"peak_mib": peak / 2**20, "loss": loss.item()}))
"""


def loss_memory(n: int = 4096, c: int = 256, device: str = "cpu") -> list[dict]:
    rows = []
    for chunk in ("none", "1024", "256"):
        t0 = time.perf_counter()
        # every allocation above 64 KiB is its own mmap, returned at free: peak RSS then tracks live tensors
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
        out = subprocess.run([sys.executable, "-c", _LOSS_CHILD, str(n), str(c), chunk, device], capture_output=True,
                             text=True, check=True, env=env)
        d = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append({"variant": "plain (one pass)" if chunk == "none" else f"chunked, {chunk} rows, recomputed",
                     "points (2 views)": 2 * n, "dims": c, "peak MiB (fwd+bwd)": round(d["peak_mib"], 1),
                     "loss": round(d["loss"], 6), "wall s": round(time.perf_counter() - t0, 2)})
    return rows


def step_time(sizes: tuple[int, ...], repeat: int = 3) -> list[dict]:
    """CPU seconds of one training step (pair, reference UNet, 6 taps x 512 voxels, Adam), one thread."""
    import torch

    from synthvox.train.config import load_train_config
    from synthvox.train.pretrain import build_pretrainer

    torch.set_num_threads(1)
    rows = []
    cfg = load_train_config(None)
    for s in sizes:
        net = build_pretrainer(cfg, 2)
        opt = torch.optim.Adam(net.parameters(), lr=2e-4, betas=(0.5, 0.999))
        g = torch.Generator().manual_seed(0)
        x = torch.rand(2, 1, s, s, s, generator=g)
        lab = torch.randint(0, 30, (1, s, s, s), generator=g)

        def step():
            loss, _ = net(x, lab, torch.Generator().manual_seed(1))
            opt.zero_grad()
            loss.backward()
            opt.step()

        step()
        times, walls = [], []
        for _ in range(repeat):
            c0, w0 = time.process_time(), time.perf_counter()
            step()
            times.append(time.process_time() - c0)
            walls.append(time.perf_counter() - w0)
        rows.append({"size": f"{s}^3", "CPU s/step (median)": round(float(np.median(times)), 3),
                     "wall s/step (median)": round(float(np.median(walls)), 3), "threads": 1})
    return rows


def _random_render(cfg, seed, index, bank):
    """Random uint8 content of the store format (noise views barely compress, like real ones)."""
    rng = np.random.default_rng([seed, index])
    n = cfg.size
    coarse = rng.integers(0, 30, (n // 8,) * 3, dtype=np.uint8)
    lab = coarse.repeat(8, 0).repeat(8, 1).repeat(8, 2)
    views = rng.integers(0, 256, (cfg.views, n, n, n), dtype=np.uint8)
    return {"labels": lab, "views": views, "index": int(index), "meta": {"random": True}}


def make_random_store(path: Path, samples: int, task_size: int, size: int) -> Path:
    from synthvox.engine.config import EngineConfig
    from synthvox.pipelines.runner import synth_shards

    synth_shards(path, samples, task_size=task_size, cfg=EngineConfig(size=size), workers=0, formats=("wds",),
                 progress=False, renderer=_random_render)
    return path


def loader_throughput(store: Path, workers_list: tuple[int, ...], batches: int) -> list[dict]:
    """Pairs/s of the training stream (decode only, uint8 batches out)."""
    import torch

    from synthvox.train.data import StoreSource, UnitStream, make_loader

    torch.set_num_threads(1)
    src = StoreSource(store)
    rows = []
    for w in workers_list:
        it = iter(make_loader(UnitStream(src, 0, 0, 1, w), 1, w, prefetch=4))
        b = next(it)  # start-up (fork, first shard) not counted
        assert b["views"].dtype == torch.uint8
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(batches):
            b = next(it)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        rows.append({"workers": w, "pairs": batches, "pairs/s (wall)": round(batches / dt, 1),
                     "main-process CPU ms/pair": round(1000 * cpu / batches, 1),
                     "batch": f"views {tuple(b['views'].shape)} {b['views'].dtype}"})
        del it
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="bench_train")
    p.add_argument("--quick", action="store_true", help="smaller: 32^3 step time only, fewer loader batches")
    p.add_argument("--skip-loader", action="store_true")
    p.add_argument("--device", default="cpu", help="device for the loss-memory measurement (cpu|cuda)")
    p.add_argument("--only", choices=["memory", "step", "loader"], help="run one part")
    a = p.parse_args(argv)
    parts = []
    if a.only in (None, "memory"):
        mem = loss_memory(device=a.device)
        parts.append(f"### Loss peak memory, forward + backward, one tap, 4,096 voxels/view x 256 dims ({a.device})\n\n"
                     + fmt_table(mem) + "\n\nReference point (the reference implementation): ~1.7 GiB for plain matrix products, "
                     "64 GiB for the broadcast (N, N, C) form; target < 1 GiB.")
    if a.only in (None, "step"):
        steps = step_time((32,) if a.quick else (32, 64))
        parts.append("### CPU training step, reference UNet (5.9M params), one pair, 6 taps x 512 voxels, Adam\n\n" + fmt_table(steps))
    if not a.skip_loader and a.only in (None, "loader"):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            store = make_random_store(Path(tmp) / "s128", 32 if a.quick else 64, 8, 128)
            build = time.perf_counter() - t0
            rows = loader_throughput(store, (0, 2), 24 if a.quick else 56)
        parts.append("### Loader throughput, 128^3 pairs (random uint8 content, wds shards of 8), decode only, uint8 out\n\n"
                     + fmt_table(rows) + f"\n\n(store built in {build:.1f} s; target >= 100 pairs/s. With 0 workers the "
                     "main-process CPU ms/pair is the whole decode cost: 1000 / it = pairs/s per idle core.)")
    notes = ("shared 2-core machine with other jobs running: wall times are polluted, CPU seconds less so; "
             f"peak RSS of the parent {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    title = "train: " + ({"memory": "loss memory", "step": "CPU step time", "loader": "loader throughput"}[a.only]
                         if a.only else "loss memory, step time, loader throughput")
    record(title, "\n\n".join(parts), notes=notes)


if __name__ == "__main__":
    main()
