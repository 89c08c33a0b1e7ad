"""Micro-benchmark of the label-ensemble stage: CPU-seconds per stage at 96^3 and 128^3.

One thread, median over >= 20 samples after warm-up, default EnsembleConfig, on the
benchmark template set (`benchmarks/make_template_bank.py --variant tight`, 600 masks,
seed 0) ingested as a bank. Usage:

    python -m benchmarks.bench_ensemble [--bank DIR] [--n 20] [--sizes 96 128] [--no-record]

Without --bank it uses $SYNTHVOX_BENCH_BANK, then /tmp/bench_bank_tight.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any, Sequence

import torch

from benchmarks.harness import fmt_table, record
from synthvox.engine.ensemble import EnsembleConfig, sample_ensemble
from synthvox.engine.ensemble.apply import compact_ids
from synthvox.engine.ensemble.mask import inside_box, mask_with, warped_radius
from synthvox.engine.ensemble.place import place_shapes
from synthvox.engine.ensemble.smooth import majority3
from synthvox.engine.seeds import numpy_rng, torch_generator

__all__ = ["main", "run"]

STAGES = ("params", "place", "field", "smooth", "mask", "compact")


def _one(cfg: EnsembleConfig, bank: Any, size: int, index: int) -> tuple[dict[str, float], int]:
    clock = time.process_time
    t = {}
    t0 = clock()
    p = sample_ensemble(cfg, size, len(bank), numpy_rng(0, index, "ensemble"))
    t1 = clock()
    cpu = torch.device("cpu")
    lab = place_shapes(p, bank, cpu)
    t2 = clock()
    fg = p.foreground   # the same steps as apply_ensemble, timed one by one
    f = warped_radius(fg, size, torch_generator(0, index, "ensemble.noise"), cpu) if fg is not None else None
    t3 = clock()
    if p.smoothing:
        box = inside_box(f, 1) if f is not None else (slice(None),) * 3
        if box is not None:
            lab[box] = majority3(lab[box].contiguous())
    t4 = clock()
    if f is not None:
        mask_with(lab, f, fg, p.n_shapes + 1)
    t5 = clock()
    out = compact_ids(lab, p.max_labels)
    t6 = clock()
    t.update(params=t1 - t0, place=t2 - t1, field=t3 - t2, smooth=t4 - t3, mask=t5 - t4, compact=t6 - t5,
             total=t6 - t0)
    return t, int(out.max())


def calibration_ms(repeat: int = 10) -> float:
    """Median CPU-ms of a nearest grid_sample of a 128^3 volume (25 ms measured
    on an idle machine): the ratio says how much a busy shared machine inflated the figures."""
    import torch.nn.functional as F

    torch.set_num_threads(1)
    vol = torch.rand(1, 1, 128, 128, 128)
    grid = F.affine_grid(torch.eye(3, 4)[None], [1, 1, 128, 128, 128], align_corners=False)
    times = []
    for _ in range(repeat + 1):
        t0 = time.process_time()
        F.grid_sample(vol, grid, mode="nearest", align_corners=False)
        times.append(time.process_time() - t0)
    return 1e3 * statistics.median(times[1:])


def run(bank: Any, sizes: Sequence[int], n: int, warmup: int = 3) -> list[dict[str, Any]]:
    """Per-size rows: median CPU-seconds per stage and in total, label-count range."""
    torch.set_num_threads(1)
    cfg = EnsembleConfig()
    rows = []
    for size in sizes:
        for i in range(warmup):
            _one(cfg, bank, size, 10_000 + i)
        times, counts = [], []
        for i in range(n):
            t, k = _one(cfg, bank, size, i)
            times.append(t)
            counts.append(k)
        row: dict[str, Any] = {"size": f"{size}^3", "n": n}
        for s in STAGES + ("total",):
            row[f"{s} s"] = statistics.median(x[s] for x in times)
        row["total p90 s"] = sorted(x["total"] for x in times)[int(0.9 * (n - 1))]
        row["labels min..max"] = f"{min(counts)}..{max(counts)}"
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bank", default=os.environ.get("SYNTHVOX_BENCH_BANK", "/tmp/bench_bank_tight"))
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--sizes", type=int, nargs="+", default=[96, 128])
    ap.add_argument("--no-record", action="store_true")
    a = ap.parse_args(argv)
    from synthvox.engine.templates import open_bank

    if not os.path.isdir(a.bank):
        raise SystemExit(
            f"benchmark bank {a.bank} not found: run benchmarks/make_template_bank.py --variant tight "
            "--n_masks 600 --seed 0 --root DIR, ingest it with `synthvox templates ingest DIR --out BANK`, pass --bank BANK"
        )
    bank = open_bank(a.bank)
    cal0 = calibration_ms()
    rows = run(bank, a.sizes, a.n)
    cal1 = calibration_ms()
    body = fmt_table(rows) + (
        f"\n\nCalibration (nearest grid_sample of 128^3, 25 ms idle): {cal0:.1f} ms before, "
        f"{cal1:.1f} ms after this run; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores." + 
        f"\n\nCPU-seconds (time.process_time), 1 torch thread, median of {a.n} samples after 3 warm-up, "
        f"default EnsembleConfig, bank {a.bank} ({len(bank)} templates). Stages: params = numpy draw, "
        "place = templates painted (nearest, occlusion), field = warped-sphere radius field, "
        "smooth = 3x3x3 strict majority (inside the mask's box when masked), mask = mask + envelope, compact = ids to 1..K as int64. Budget: ~0.2 CPU-s per 128^3 ensemble."
    )
    if a.no_record:
        print(body)
        return body
    return record("Label ensembles (engine/ensemble)", body,
                  notes="shared 2-core machine, other jobs were running")


if __name__ == "__main__":
    main()
