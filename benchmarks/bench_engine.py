"""The engine benchmark (`make bench`): CPU-seconds per sample = one label ensemble + two views.

One process, `torch.set_num_threads(1)`, default engine config (every branch: the appearance
coins fire at their reference probabilities, so the median covers a mix of corruptions),
median of >= 20 samples after warm-up, at 96^3 and 128^3, with a per-stage breakdown.
Bank: the benchmark template set (`benchmarks/make_template_bank.py --variant tight
--n_masks 600 --seed 0`) ingested; built on first use when absent. Where CUDA is available it
also reports samples/s at 128^3 on the GPU. Target: <= 0.4 CPU-s per 128^3 sample (the
reference needs ~3 on the same template set). Usage:

    python -m benchmarks.bench_engine [--bank DIR] [--n 20] [--sizes 96 128] [--no-record]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from benchmarks.harness import fmt_table, record
from synthvox.engine.config import EngineConfig
from synthvox.engine.render import render_sample

__all__ = ["main", "run", "ensure_bench_bank"]

DEFAULT_BANK = os.environ.get("SYNTHVOX_BENCH_BANK", "/tmp/bench_bank_tight")
MAKE_SCRIPT = Path(__file__).resolve().parent / "make_template_bank.py"
#: appearance stages as timed by apply_appearance (summed over the views of a sample)
VIEW_STAGES = ("gmm", "texture_bias", "gamma", "kspace", "lowres", "noise", "rescale", "quantise")
STAGES = ("ensemble", "labels_meta", "appearance_params") + VIEW_STAGES


def ensure_bench_bank(path: str | Path, script: Path = MAKE_SCRIPT) -> Path:
    """The ingested benchmark bank at `path`; generated (600 tight masks, seed 0) and ingested when absent."""
    from synthvox.engine.templates import ingest

    path = Path(path)
    if (path / "bank.json").is_file():
        return path
    if not script.is_file():
        raise SystemExit(f"benchmark bank {path} is missing and {script} (the benchmark template set) is not there; "
                         "pass --bank DIR of an ingested bank")
    with tempfile.TemporaryDirectory(prefix="synthvox-bench-masks-") as tmp:
        root = Path(tmp) / "masks"
        print(f"building the benchmark template set in {root} ...", flush=True)
        subprocess.run([sys.executable, str(script), "--root", str(root), "--variant", "tight", "--n_masks", "600",
                        "--seed", "0"], check=True)
        print(f"ingesting into {path} ...", flush=True)
        ingest([root], path, workers=max(1, os.cpu_count() or 1))
    return path


def _one(cfg: EngineConfig, bank: Any, index: int) -> tuple[float, dict[str, float], list[str]]:
    t: dict[str, float] = {}
    t0 = time.process_time()
    s = render_sample(cfg, 0, index, bank=bank, timings=t)
    total = time.process_time() - t0
    fired = [k for a in s["meta"]["appearance"] for k, v in a.items() if v is not None and k not in ("gmm", "texture")]
    return total, t, fired


def run(bank: Any, sizes: Sequence[int], n: int, warmup: int = 3) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, float]]:
    """(per-size total rows, per-size stage rows in mean CPU-ms per sample, firing rates of the corruptions)."""
    torch.set_num_threads(1)
    totals_rows, stage_rows = [], []
    fired_count: dict[str, int] = {}
    for size in sizes:
        cfg = EngineConfig(size=size)
        for i in range(warmup):
            _one(cfg, bank, 1_000_000 + i)
        totals, stages = [], []
        for i in range(n):
            total, t, fired = _one(cfg, bank, i)
            totals.append(total)
            stages.append(t)
            for k in fired:
                fired_count[k] = fired_count.get(k, 0) + 1
        views = cfg.views
        appearance = [sum(t.get(s, 0.0) for s in VIEW_STAGES) for t in stages]
        totals_rows.append({
            "size": f"{size}^3", "n": n,
            "median CPU-s/sample": statistics.median(totals),
            "p90": sorted(totals)[int(0.9 * (n - 1))],
            "mean": statistics.fmean(totals),
            "ensemble median": statistics.median(t.get("ensemble", 0.0) for t in stages),
            "appearance median (2 views)": statistics.median(appearance),
            "per view": statistics.median(appearance) / views,
        })
        row: dict[str, Any] = {"size": f"{size}^3"}
        for s in STAGES:
            row[f"{s} ms"] = 1000 * statistics.fmean(t.get(s, 0.0) for t in stages)
        stage_rows.append(row)
    n_views = len(sizes) * n * EngineConfig().views
    rates = {k: v / n_views for k, v in sorted(fired_count.items())}
    return totals_rows, stage_rows, rates


def calibration_ms(size: int = 128, repeat: int = 10) -> float:
    """CPU-ms of one torch.randn(size^3) here and now (~8 ms on a quiet machine),
    to read the other figures against the machine's current load."""
    g = torch.Generator().manual_seed(0)
    torch.randn((size,) * 3, generator=g)
    t0 = time.process_time()
    for _ in range(repeat):
        torch.randn((size,) * 3, generator=g)
    return 1000 * (time.process_time() - t0) / repeat


def gpu_rate(bank: Any, size: int = 128, n: int = 50) -> dict[str, Any] | None:
    """Samples/s at `size` on the first CUDA device (None without CUDA)."""
    if not torch.cuda.is_available():
        return None
    cfg = EngineConfig(size=size)
    dev = torch.device("cuda")
    for i in range(5):
        render_sample(cfg, 0, 1_000_000 + i, bank=bank, device=dev)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(n):
        render_sample(cfg, 0, i, bank=bank, device=dev)
    torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    return {"device": torch.cuda.get_device_name(0), "size": f"{size}^3", "n": n, "samples/s": n / wall,
            "ms/sample": 1000 * wall / n}


def main(argv: Sequence[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bank", default=DEFAULT_BANK, help="ingested benchmark bank (built when absent)")
    ap.add_argument("--n", type=int, default=20, help="samples per size (>= 20 for the record)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[96, 128])
    ap.add_argument("--no-gpu", action="store_true", help="skip the GPU rate even when CUDA is available")
    ap.add_argument("--no-record", action="store_true", help="print, do not append to RESULTS.md")
    a = ap.parse_args(argv)
    from synthvox.engine.templates import open_bank

    bank = open_bank(ensure_bench_bank(a.bank))
    torch.set_num_threads(1)
    calib_before = calibration_ms()
    totals, stages, rates = run(bank, a.sizes, a.n)
    calib_after = calibration_ms()
    gpu = None if a.no_gpu else gpu_rate(bank)
    body = (
        fmt_table(totals)
        + "\n\nMean CPU-ms per sample by stage (both views summed; probabilistic steps averaged over "
          "samples where they fired and where they did not):\n\n" + fmt_table(stages)
        + "\n\nFiring rate per view of the optional appearance steps in these samples: "
        + ", ".join(f"{k} {v:.2f}" for k, v in rates.items())
        + (f"\n\nGPU: {fmt_table([gpu])}" if gpu else "\n\nGPU: none on this machine.")
        + f"\n\nCPU-seconds (time.process_time), 1 torch thread, {a.n} samples per size after 3 warm-up, "
          f"default engine config (2 views), bank {a.bank} ({len(bank)} templates, content {bank.content_hash[:12]}). "
          "Target <= 0.4 CPU-s per 128^3 sample; reference ~3 CPU-s on the same template set. "
          f"Load check: torch.randn(128^3) took {calib_before:.1f} ms before and {calib_after:.1f} ms after "
          "the run (~8 ms on a quiet machine); scale the figures by that ratio."
    )
    if a.no_record:
        print(body)
        return body
    args = list(argv) if argv is not None else sys.argv[1:]
    return record("Engine: CPU-seconds per sample (engine/render)", body,
                  command=" ".join(["python -m benchmarks.bench_engine"] + args),
                  notes="shared 2-core machine, other jobs were running")


if __name__ == "__main__":
    main()
