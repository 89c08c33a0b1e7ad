"""Few-shot Dice at 1 shot, pretrained vs random initialisation, cpu protocol, brain extraction.

The case: Colin27 (mricron-data) -> MNI152 (nilearn), one labelled volume, tested on the other
subject (downstream.evaluate builds the nnU-Net dataset). Reports mean +- std of the brain Dice
over seeds per initialisation and seconds per run (wall and CPU). Without a pretrained
checkpoint (`--ckpt random` or none found) only the random initialisation runs, and the notes
say so.

    python -m benchmarks.bench_fewshot --ckpt RUN_DIR [--seeds 3] [--steps 300] [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.harness import fmt_table, record


def _default_ckpt() -> str:
    try:
        from synthvox.train.checkpoint import resolve_checkpoint

        resolve_checkpoint("bundled")
        return "bundled"
    except Exception:  # no bundled checkpoint yet
        return "random"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default=None, help="pretrained checkpoint (default: bundled if present, else random only)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=None, help="override the cpu protocol's 300 steps")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from synthvox.downstream.evaluate import build_fewshot_datasets, data_sources
    from synthvox.downstream.fewshot import get_protocol, run_fewshot

    src = data_sources()
    if not (src["colin"] and src["mni"]):
        print(f"bench_fewshot skipped: {src['note']}")
        return
    ckpt = args.ckpt or _default_ckpt()
    inits = ["random"] if ckpt == "random" else [ckpt, "random"]
    proto = get_protocol("cpu", args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.out or tmp)
        ds = [d for d in build_fewshot_datasets(work / "datasets", src) if d.name == "BrainExtraction_Colin27toMNI152"][0]
        rows, notes = [], []
        for init in inits:
            dice, wall, cpu = [], [], []
            for seed in range(args.seeds):
                t0, c0 = time.perf_counter(), time.process_time()
                recs = run_fewshot(ds, [init], [1], [seed], work / "fewshot", protocol=proto, device="cpu",
                                   overlays=False, log=None, overwrite=True)
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
                dice += [r["metrics"]["dice"]["1"] for r in recs]
            sd = statistics.stdev(dice) if len(dice) > 1 else 0.0
            rows.append({"init": init, "seeds": args.seeds, "brain Dice mean": statistics.mean(dice), "std": sd,
                         "per seed": ", ".join(f"{d:.3f}" for d in dice),
                         "wall s/run": statistics.mean(wall), "CPU s/run": statistics.mean(cpu)})
    if ckpt == "random":
        notes.append("no pretrained checkpoint available: random initialisation only (no pretrained-vs-random comparison)")
    if proto.steps != 300:
        notes.append(f"{proto.steps} steps instead of the protocol's 300: Dice is not the protocol's number")
    notes.append(f"torch threads {args.threads}; shared 2-core machine, other jobs may have been running")
    body = (f"Colin27 -> MNI152 brain extraction, 1 shot, cpu protocol ({proto.spacing_mm} mm, crop {proto.crop}, "
            f"batch {proto.batch}, {proto.steps} steps, lr {proto.lr}, last step kept: no validation case), "
            f"checkpoint `{ckpt}`.\n\n" + fmt_table(rows))
    record("Few-shot 1-shot brain extraction (cpu protocol)", body, notes="; ".join(notes))


if __name__ == "__main__":
    main()
