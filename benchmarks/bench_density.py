"""Label density of the engine's maps per kind and volume size, against the targets.

For each bank and size, renders `--n` label maps of each kind (unconstrained, foreground
masked, enveloped: the same ensembles with the mask coin forced, seeds 0, indices 0..n-1)
and reports the mean (p5-p95) of the statistics of engine/ensemble/density.py: background
share, foreground label count, largest label, median label, effective label count; then
the per-kind targets that miss. "all kinds" weighs the kinds as the default config draws
them (1/3 each).

Banks: the built-in procedural bank (default) and, with --bench-bank, the benchmark template
set ingested (`benchmarks/make_template_bank.py --variant tight`, 600 masks, seed 0).
`--reference-maps DIR` also summarises label maps written by the reference's own generator
(NIfTI files named `<kind>_shapes<N>_<id>.nii.gz` as it names them), so both are measured by
the same code. Usage:

    python -m benchmarks.bench_density [--sizes 32 64 128] [--n 40] [--bench-bank DIR]
                                       [--reference-maps DIR] [--no-record]
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from benchmarks.harness import fmt_table, record
from synthvox.engine.config import EngineConfig
from synthvox.engine.ensemble.density import (KINDS, TARGETS, LabelStats, check_targets, ensemble_kind, label_stats,
                                              summarise)
from synthvox.engine.render import render_labels

__all__ = ["main", "measure", "FORCE_KIND", "reference_stats"]

#: ensemble overrides that force each kind (the shapes drawn stay the same)
FORCE_KIND: dict[str, dict[str, float]] = {
    "unconstrained": {"foreground_p": 0.0},
    "foreground_masked": {"foreground_p": 1.0, "envelope_p": 0.0},
    "enveloped": {"foreground_p": 1.0, "envelope_p": 1.0},
}


def measure(bank: Any, size: int, n: int, seed: int = 0, cfg: EngineConfig | None = None) -> list[LabelStats]:
    """Statistics of n maps of each kind at `size` (indices 0..n-1 of run `seed`)."""
    base = cfg or EngineConfig()
    out = []
    for kind, over in FORCE_KIND.items():
        c = dataclasses.replace(base, size=size, ensemble=dataclasses.replace(base.ensemble, **over))
        for i in range(n):
            lab, meta = render_labels(c, seed, i, bank=bank)
            st = label_stats(lab, ensemble_kind(meta["ensemble"]))
            assert st.kind == kind
            out.append(st)
    return out


def reference_stats(folder: Path) -> list[LabelStats]:
    """Statistics of the reference generator's NIfTI label maps in `folder` (kind from the name)."""
    import nibabel as nib

    out = []
    for f in sorted(folder.glob("*.nii.gz")):
        name = f.name
        kind = ("enveloped" if name.startswith("foreground_masked_enveloped") else
                "foreground_masked" if name.startswith("foreground_masked") else
                "unconstrained" if name.startswith("unconstrained") else None)
        if kind is None:
            raise SystemExit(f"{f}: not named like the reference's maps (<kind>_shapes<N>_<id>.nii.gz)")
        out.append(label_stats(np.asarray(nib.load(str(f)).dataobj).astype(np.int64), kind))
    if not out:
        raise SystemExit(f"--reference-maps {folder}: no .nii.gz label maps there")
    return out


def _rows(source: str, size: str, stats: list[LabelStats]) -> list[dict[str, Any]]:
    summ = summarise(stats)
    rows = []
    for kind in KINDS:
        if kind not in summ:
            continue
        d = summ[kind]
        rows.append({"source": source, "size": size, "kind": kind, "maps": int(d["maps"]),
                     "background": f"{d['background']:.3f} ({d['background_p5']:.2f}-{d['background_p95']:.2f})",
                     "labels": f"{d['labels']:.1f} ({d['labels_p5']:.0f}-{d['labels_p95']:.0f})",
                     "largest": f"{d['largest']:.3f} ({d['largest_p5']:.2f}-{d['largest_p95']:.2f})",
                     "median label": f"{d['median_label']:.4f}",
                     "effective labels": f"{d['effective_labels']:.1f}"})
    bg_all = float(np.mean([summ[k]["background"] for k in KINDS if k in summ]))
    rows.append({"source": source, "size": size, "kind": "all kinds (1/3 each)", "maps": len(stats),
                 "background": f"{bg_all:.3f}", "labels": "", "largest": "", "median label": "",
                 "effective labels": ""})
    return rows


def main(argv: Sequence[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--n", type=int, default=40, help="maps per kind and size")
    ap.add_argument("--bench-bank", default=None, help="also measure this ingested bank (the benchmark set)")
    ap.add_argument("--reference-maps", type=Path, default=None,
                    help="folder of the reference generator's NIfTI maps to summarise beside ours")
    ap.add_argument("--no-record", action="store_true", help="print, do not append to RESULTS.md")
    a = ap.parse_args(argv)
    from synthvox.engine.templates import open_bank, resolve_bank

    torch.set_num_threads(1)
    banks = [("built-in procedural bank", resolve_bank(None))]
    if a.bench_bank:
        banks.append(("benchmark set (ingested)", open_bank(a.bench_bank)))
    rows: list[dict[str, Any]] = []
    misses: list[str] = []
    t0 = time.process_time()
    if a.reference_maps is not None:
        rows += _rows("reference generator", "128^3", reference_stats(a.reference_maps))
    for name, bank in banks:
        for size in a.sizes:
            stats = measure(bank, size, a.n)
            rows += _rows(name, f"{size}^3", stats)
            if name.startswith("built-in"):
                misses += [f"{size}^3 {m}" for m in check_targets(summarise(stats))]
    cpu = time.process_time() - t0
    targets = "; ".join(
        f"{k}: background {t.background[0]:.2f}-{t.background[1]:.2f}, labels {t.labels[0]:g}-{t.labels[1]:g}, "
        f"largest {t.largest[0]:g}-{t.largest[1]:g}, median label {t.median_label[0]:g}-{t.median_label[1]:g}, "
        f"effective labels {t.effective_labels[0]:g}-{t.effective_labels[1]:g}" for k, t in TARGETS.items())
    body = (fmt_table(rows)
            + f"\n\nMean (p5-p95) over maps; {a.n} maps per kind and size (seed 0, indices 0..{a.n - 1}, the kind "
              "forced on the same ensembles), default engine config, 1 thread, "
              f"{cpu:.0f} CPU-s in all. Targets (engine/ensemble/density.py, per-kind means, every size): {targets}."
            + ("\n\nTargets missed by the built-in bank: " + "; ".join(misses) if misses
               else "\n\nEvery target met by the built-in bank at every size measured."))
    if a.no_record:
        print(body)
        return body
    args = list(argv) if argv is not None else sys.argv[1:]
    return record("Label density per kind and size (engine/ensemble/density.py)", body,
                  command=" ".join(["python -m benchmarks.bench_density"] + args),
                  notes="shared 2-core machine, other jobs were running")


if __name__ == "__main__":
    main()
