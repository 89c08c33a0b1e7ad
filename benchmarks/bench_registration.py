"""Registration benchmark: Colin27 (mricron-data, ch2bet + AAL, 2 mm) against itself warped by a
known smooth field with inverted contrast; Dice before/after, folding, SDlogJ and seconds per
feature kind; plus the wall time of one 160x192x160 pair with the reference-size network.

    python -m benchmarks.bench_registration [--ckpt random] [--skip-large] [--kinds mind,net,...]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

from benchmarks.harness import cpu_seconds, fmt_table, peak_rss_mib, record
# the pair builder lives in the library (the real-data probe uses it too); re-exported here
from synthvox.downstream.pairs import MRICRON, colin_pair, smooth_field  # noqa: F401


def run_kinds(kinds, ckpt: str):
    from synthvox.downstream.network import load_network
    from synthvox.downstream.registration import RegistrationConfig, register_volumes, registration_metrics

    fixed, flab, moving, mlab, _ = colin_pair()
    rows = []
    model = rec = None
    for kind in kinds:
        cfg = RegistrationConfig(features=kind)
        if cfg.needs_network and model is None:
            model, rec = load_network(ckpt)
        t0, c0 = time.perf_counter(), cpu_seconds()
        res = register_volumes(fixed, moving, cfg, model, (rec or {}).get("normalisation"))
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        after = res.warp(mlab, "nearest")
        m, _, _ = registration_metrics(flab, mlab, after, fixed.spacing, res.disp_voxels, hd=True)
        rows.append({"features": kind + (f" ({ckpt})" if cfg.needs_network else ""),
                     "Dice before": m["dice_macro_before"], "Dice after": m["dice_macro_after"],
                     "HD95 before mm": m["hd95_macro_before"], "HD95 after mm": m["hd95_macro_after"],
                     "folding %": 100 * m["folding_fraction"], "SDlogJ": m["sdlogj"],
                     "wall s": wall, "CPU s": cpu, "stages wall s": _stages(res.seconds),
                     "stages CPU s": _stages(res.cpu_seconds)})
        print(rows[-1], flush=True)
    return rows, fixed.data.shape


def _stages(secs: dict[str, float]) -> str:
    return " ".join(f"{k}:{v:.1f}" for k, v in secs.items())


def run_large(ckpt: str, kind: str = "net+mind"):
    """Seconds (wall and CPU, per stage) and Dice for one 160x192x160 pair (Colin27 at 1 mm,
    cropped; features of both images with the reference network)."""
    from synthvox.downstream.io import Volume
    from synthvox.downstream.network import load_network
    from synthvox.downstream.registration import RegistrationConfig, register_volumes, registration_metrics

    fixed, flab, moving, mlab, _ = colin_pair(spacing=1.0)
    sl = tuple(slice((n - m) // 2, (n - m) // 2 + m) for n, m in zip(fixed.data.shape, (160, 192, 160)))
    f, m = Volume(np.ascontiguousarray(fixed.data[sl]), fixed.affine), Volume(np.ascontiguousarray(moving.data[sl]), moving.affine)
    model, rec = load_network(ckpt)
    t0, c0 = time.perf_counter(), cpu_seconds()
    res = register_volumes(f, m, RegistrationConfig(features=kind), model, rec.get("normalisation"))
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    mt, _, _ = registration_metrics(flab[sl], mlab[sl], res.warp(mlab[sl], "nearest"), f.spacing, res.disp_voxels, hd=False)
    return {"pair": "160x192x160 (Colin27 1 mm crop)", "features": f"{kind} ({ckpt})",
            "Dice before": mt["dice_macro_before"], "Dice after": mt["dice_macro_after"],
            "folding %": 100 * mt["folding_fraction"], "SDlogJ": mt["sdlogj"],
            "wall s": wall, "CPU s": cpu, "peak RSS MiB": peak_rss_mib(),
            "stages wall s": _stages(res.seconds), "stages CPU s": _stages(res.cpu_seconds)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default="random", help="network for net / net+mind (default random: no trained checkpoint yet)")
    ap.add_argument("--kinds", default="net,mind,net+mind,intensity")
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if not MRICRON.is_dir():
        print(f"skipped: {MRICRON} missing (install mricron-data)")
        return
    torch.set_num_threads(args.threads)
    rows, shape = run_kinds(args.kinds.split(","), args.ckpt)
    body = (f"Colin27 ch2bet + AAL (116 labels) at 2 mm, {shape}; moving = fixed pulled through a smooth random "
            f"field (max 8 mm, seed 0) with contrast inverted inside the brain; no masks; default RegistrationConfig "
            f"(affine on). Dice = macro over labels present in both.\n\n" + fmt_table(rows))
    if not args.skip_large:
        body += ("\n\nSpeed target (<= 60 s, 2 cores; the network forwards use the torch threads above, the "
                 "affine/convex/Adam stages RegistrationConfig.opt_threads = 1):\n\n" + fmt_table([run_large(args.ckpt)]))
    record("Registration (Colin27, known warp, inverted contrast)", body,
           command="python -m benchmarks.bench_registration " + " ".join(argv if argv is not None else sys.argv[1:]),
           notes=f"torch threads {args.threads}; network = --ckpt {args.ckpt}"
                 + (" (untrained random init: 'net' numbers say nothing about pretrained features)" if args.ckpt == "random" else "")
                 + "; shared CPU, other engineers' jobs were running")


if __name__ == "__main__":
    main()
