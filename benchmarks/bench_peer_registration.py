"""Peer registration benchmark (issue #17): the PyPI `convexadam` package (0.2.0, its documented
defaults, MIND-SSC) and synthvox side by side in ONE run on the same pairs (benchmarks/peer_pairs.py),
interleaved, scored by ONE scorer of ours: macro Dice, HD95 (mm), folding over the grid and
inside the fixed brain mask, SDlogJ, CPU-s and wall-s of the registration call.

    python -m benchmarks.bench_peer_registration [--pairs colin4,colin10,mni4,mni10,mni2colin,header]
        [--methods convexadam,mind,net+mind:random,net+mind:bundled] [--threads 1] [--repeats 1]
        [--set grid_sp=6 --set ...]

How each method is read (so one scorer sees both the same way):
- convexadam works on two arrays of one grid, so the moving image is first resampled into the
  fixed grid through both headers (what SimpleITK's resample-to-reference does); its output
  `(X, Y, Z, 3)` is a pull-back displacement in fixed-grid voxels, components along the array
  axes (i, j, k): `warped(i) = moving_resampled(i + u(i))` (its `apply_convex`). The pull-back of
  the original moving image is then `moving voxel = H (i + u(i))`, `H = inv(A_moving) A_fixed`.
  `check_package_reading` confirms this on an identity pair and a known shift before scoring.
- synthvox: `RegistrationResult.coords` (moving voxel coordinates on the fixed grid).
Both become a map fixed voxel -> moving voxel; labels are pulled through it (nearest), and the
Jacobian determinant is that of the whole map (affine included: a constant factor that changes
neither folding nor SDlogJ, since both images share their voxel size here).
Timings: convexadam's call excludes its header resampling; synthvox's includes its own (and its
final warp of the image). Both run with `--threads` torch threads in this one process.
Needs the `bench` extra (`pip install -c constraints.txt torch==2.13.0 -e .[bench]`).
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np
import torch

from benchmarks.harness import fmt_table, record
from benchmarks.peer_pairs import PAIR_KINDS, Pair, build_pairs

DEFAULT_METHODS = "convexadam,mind,net+mind:random,net+mind:bundled"


def _identity(shape: tuple[int, ...]) -> np.ndarray:
    return np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), -1)


def _header_map(pair: Pair) -> np.ndarray:
    from synthvox.downstream.grid import voxel_map

    return voxel_map(pair.fixed.affine, pair.moving.affine)


def run_convexadam(fixed: np.ndarray, moving_on_fixed: np.ndarray) -> np.ndarray:
    """The package's displacement `(X, Y, Z, 3)` (fixed-grid voxels, pull-back, (i, j, k))."""
    from convexAdam.convex_adam_MIND import convex_adam_pt

    # Documented defaults (mind_r 1, mind_d 2, lambda 1.25, grid_sp 6, disp_hw 4, 80 iterations,
    # grid_sp_adam 2, ic True); float32 is what its float16 default falls back to on CPU.
    return convex_adam_pt(torch.from_numpy(np.ascontiguousarray(fixed, np.float32)),
                          torch.from_numpy(np.ascontiguousarray(moving_on_fixed, np.float32)),
                          dtype=torch.float32, device=torch.device("cpu"))


def check_package_reading(fixed: np.ndarray) -> dict[str, Any]:
    """The package on (fixed, fixed) and on (fixed, fixed shifted by s): the median displacement
    inside the brain must be 0 and +s (moving(x) = fixed(x - s), so warped(i) = moving(i + s))."""
    from scipy import ndimage

    brain = fixed > 0.1 * fixed.max()
    out = {}
    for name, s in (("identity", (0.0, 0.0, 0.0)), ("shift", (4.0, -2.0, 1.0))):
        mov = ndimage.shift(fixed, s, order=1, mode="constant")
        u = run_convexadam(fixed, mov)
        med = [float(np.median(u[..., c][brain])) for c in range(3)]
        ok = all(abs(m - t) < 0.5 for m, t in zip(med, s))
        out[name] = {"true": list(s), "median_u": [round(m, 3) for m in med], "ok": ok}
        if not ok:
            raise AssertionError(f"convexadam's field is not read as assumed: {name} {out[name]}")
    return out


def score(pair: Pair, coords: np.ndarray) -> dict[str, float]:
    """One scorer for every method. `coords` `(X, Y, Z, 3)`: moving voxel per fixed voxel."""
    from synthvox.downstream.grid import warp_volume
    from synthvox.downstream.metrics import (dice_per_label, folding_fraction, hd95_per_label, jacobian_determinant,
                                             labels_present, macro_dice, sdlogj)

    after = warp_volume(pair.moving_labels, torch.from_numpy(np.ascontiguousarray(coords, np.float32)), "nearest")
    labels = sorted(labels_present(pair.fixed_labels) & labels_present(pair.moving_labels))
    dice = dice_per_label(after, pair.fixed_labels, labels)
    hd = hd95_per_label(after, pair.fixed_labels, pair.fixed.spacing, labels)
    finite = [v for v in hd.values() if np.isfinite(v)]
    det = jacobian_determinant(np.moveaxis(coords - _identity(coords.shape[:3]), -1, 0))
    return {"Dice": macro_dice(dice), "HD95 mm": float(np.mean(finite)) if finite else float("inf"),
            "fold %": 100 * folding_fraction(det), "fold mask %": 100 * folding_fraction(det, pair.fixed_mask),
            "SDlogJ": sdlogj(det), "SDlogJ mask": sdlogj(det, pair.fixed_mask)}


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def _parse_sets(sets: list[str]) -> dict[str, Any]:
    from synthvox.downstream.registration import RegistrationConfig

    fields = {f.name: f for f in dataclasses.fields(RegistrationConfig)}
    out: dict[str, Any] = {}
    for s in sets:
        key, _, val = s.partition("=")
        if key not in fields:
            raise SystemExit(f"--set {s}: unknown RegistrationConfig field {key!r}")
        out[key] = ast.literal_eval(val)
    return out


class Runner:
    """Runs one method on one pair and returns (coords, wall-s, CPU-s, extra)."""

    def __init__(self, overrides: dict[str, Any]):
        self.overrides = overrides
        self.models: dict[str, Any] = {}

    def _model(self, ckpt: str):
        from synthvox.downstream.network import load_network

        if ckpt not in self.models:
            self.models[ckpt] = load_network(ckpt, echo=None)
        return self.models[ckpt]

    def __call__(self, method: str, pair: Pair) -> tuple[np.ndarray, float, float, str]:
        if method == "convexadam":
            from synthvox.downstream.grid import resample_to_grid

            H = _header_map(pair)
            mov = resample_to_grid(pair.moving.data, pair.moving.affine, pair.fixed.data.shape, pair.fixed.affine)
            u, wall, cpu = _timed(lambda: run_convexadam(pair.fixed.data, mov))
            coords = (_identity(u.shape[:3]) + u) @ H[:3, :3].T + H[:3, 3]
            return coords, wall, cpu, ""
        from synthvox.downstream.registration import RegistrationConfig, register_volumes

        kind, _, ckpt = method.partition(":")
        cfg = RegistrationConfig(features=kind, **self.overrides)
        model, rec = self._model(ckpt) if cfg.needs_network else (None, None)
        res, wall, cpu = _timed(lambda: register_volumes(pair.fixed, pair.moving, cfg, model, (rec or {}).get("normalisation")))
        stages = " ".join(f"{k}:{v:.1f}" for k, v in res.cpu_seconds.items())
        return res.coords.astype(np.float64), wall, cpu, stages


def run(pair_names: list[str], methods: list[str], repeats: int, overrides: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    pairs = build_pairs(pair_names)
    runner = Runner(overrides)
    rows: list[dict[str, Any]] = []
    for n, pair in enumerate(pairs):
        before = score(pair, _identity(pair.fixed.data.shape) @ _header_map(pair)[:3, :3].T + _header_map(pair)[:3, 3])
        rows.append({"pair": pair.name, "method": "header only", **before, "CPU s": 0.0, "wall s": 0.0, "stages CPU s": ""})
        results: dict[str, list] = {m: [] for m in methods}
        for r in range(repeats):
            # Interleaved: the order rotates with pair and repeat so no method always runs first.
            k = (n + r) % len(methods)
            for m in methods[k:] + methods[:k]:
                results[m].append(runner(m, pair))
        for m in methods:
            coords, _, _, stages = results[m][0]
            row = {"pair": pair.name, "method": m, **score(pair, coords),
                   "CPU s": statistics.median(x[2] for x in results[m]),
                   "wall s": statistics.median(x[1] for x in results[m]), "stages CPU s": stages}
            rows.append(row)
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    return rows, [{"pair": p.name, "description": p.note} for p in pairs]


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue #17's targets per pair, for `mind` against convexadam."""
    by = {(r["pair"], r["method"]): r for r in rows}
    out = []
    for pair in dict.fromkeys(r["pair"] for r in rows):
        pk, mi = by.get((pair, "convexadam")), by.get((pair, "mind"))
        if pk is None or mi is None:
            continue
        t = {"pair": pair, "Dice mind - pkg": mi["Dice"] - pk["Dice"],
             "fold mask % mind / pkg": f"{mi['fold mask %']:.3g} / {pk['fold mask %']:.3g}",
             "CPU s mind / pkg": mi["CPU s"] / max(pk["CPU s"], 1e-9)}
        nets = [r for (p, m), r in by.items() if p == pair and m.startswith("net+mind")]
        t["worst net+mind - mind"] = min((r["Dice"] - mi["Dice"] for r in nets), default=float("nan"))
        if pair == "colin-header-15cm-20deg":
            t["met"] = "see the next row (the package reads no header start)"
            out.append(t)
            continue
        t["met"] = (mi["Dice"] >= pk["Dice"] and mi["fold mask %"] <= pk["fold mask %"] and mi["CPU s"] <= pk["CPU s"]
                    and (not nets or t["worst net+mind - mind"] >= -0.005))
        out.append(t)
    h, c = by.get(("colin-header-15cm-20deg", "mind")), by.get(("colin-inv-warp4", "mind"))
    if h and c:
        out.append({"pair": "header vs colin4 (mind)", "Dice mind - pkg": h["Dice"] - c["Dice"],
                    "met": h["Dice"] >= c["Dice"] - 0.02})
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", default=",".join(PAIR_KINDS))
    ap.add_argument("--methods", default=DEFAULT_METHODS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], help="RegistrationConfig override for synthvox, key=value")
    ap.add_argument("--no-check", action="store_true", help="skip the identity/shift check of the package's field")
    args = ap.parse_args(argv)
    try:
        import convexAdam  # noqa: F401
    except ImportError:
        print("skipped: the convexadam package is missing (pip install -c constraints.txt torch==2.13.0 -e .[bench])")
        return
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    overrides = _parse_sets(args.set)
    check = None
    if not args.no_check and "convexadam" in methods:
        check = check_package_reading(build_pairs(["colin4"])[0].fixed.data)
        print("package reading check:", check, flush=True)
    rows, descr = run(args.pairs.split(","), methods, args.repeats, overrides)
    body = (fmt_table(descr) + "\n\n" + fmt_table(rows) + "\n\nTargets (mind vs convexadam; met = Dice >=, folding in mask <=, "
            "CPU-s <=, every net+mind within 0.005 below mind):\n\n" + fmt_table(targets(rows)))
    if check:
        body += f"\n\nconvexadam field reading check (median u in the brain, voxels): {check}"
    cmd = "python -m benchmarks.bench_peer_registration " + " ".join(argv if argv is not None else sys.argv[1:])
    record("Peer registration: synthvox vs convexadam 0.2.0 (same pairs, one scorer)", body, command=cmd.strip(),
           notes=f"torch threads {args.threads} for both; repeats {args.repeats} (median seconds); synthvox overrides "
                 f"{overrides or 'none'}; shared 2-core VM, other helpers' jobs running")


if __name__ == "__main__":
    main()
