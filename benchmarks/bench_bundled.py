"""The bundled checkpoint against random initialisation of the same architecture, on real data.

Colin27 (mricron-data, 2 mm) against itself under known smooth warps with inverted contrast
(benchmarks.bench_registration.colin_pair, several seeds); registration with `net` features
alone (the network is the only source of contrast invariance) and with `net+mind`; AAL Dice
before/after, mean +- std over seeds. Writes the table to RESULTS.md and, with --card, to a
Markdown file for the checkpoint's CARD.md.

    python -m benchmarks.bench_bundled [--ckpt bundled] [--seeds 3] [--card FILE.md]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from benchmarks.bench_registration import colin_pair
from benchmarks.harness import fmt_table, record


def _models(ckpt: str):
    from synthvox.train.checkpoint import load_model
    from synthvox.train.model import build_model

    trained, rec = load_model(ckpt)
    g = torch.Generator().manual_seed(0)
    random = build_model(dict(rec["model"]), generator=g).eval()  # same architecture, untrained
    return {f"{ckpt} ({rec.get('name')}, step {rec['step']})": (trained, rec), "random init (same architecture)": (random, rec)}


def main(argv: list[str] | None = None) -> str:
    from synthvox.downstream.registration import RegistrationConfig, register_volumes, registration_metrics

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default="bundled")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--kinds", default="net,net+mind")
    ap.add_argument("--card", help="also write the table to this Markdown file")
    ap.add_argument("--no-record", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    pairs = [colin_pair(seed=s) for s in range(a.seeds)]
    rows = []
    for name, (model, rec) in _models(a.ckpt).items():
        for kind in a.kinds.split(","):
            cfg = RegistrationConfig(features=kind)
            before, after, fold, secs = [], [], [], []
            for fixed, flab, moving, mlab, _ in pairs:
                t0 = time.perf_counter()
                res = register_volumes(fixed, moving, cfg, model=model, normalisation=rec["normalisation"])
                secs.append(time.perf_counter() - t0)
                m, _, _ = registration_metrics(flab, mlab, res.warp(mlab, "nearest"), fixed.spacing, res.disp_voxels, hd=False)
                before.append(m["dice_macro_before"])
                after.append(m["dice_macro_after"])
                fold.append(m["folding_fraction"])
            rows.append({"network": name, "features": kind, "Dice before": f"{np.mean(before):.3f}",
                         "Dice after (mean +- std)": f"{np.mean(after):.3f} +- {np.std(after):.3f}",
                         "folding": f"{np.mean(fold):.2e}", "s per pair": f"{np.mean(secs):.0f}"})
            print(rows[-1], flush=True)
    body = (f"Colin27 at 2 mm against itself under {a.seeds} known smooth warps (max 8 mm) with inverted contrast, "
            f"AAL macro Dice over 116 regions:\n\n" + fmt_table(rows))
    if a.card:
        with open(a.card, "w") as f:
            f.write(body + "\n")
    if not a.no_record:
        record("Bundled checkpoint vs random initialisation (registration, Colin27)", body,
               notes="2 torch threads; `net` = network features alone, `net+mind` = 0.1 x network features + MIND-SSC")
    return body


if __name__ == "__main__":
    main()
