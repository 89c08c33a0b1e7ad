"""The few-shot grid: initialisations x shots x seeds on one nnU-Net dataset -> per-case records.

Output folder::

    splits.json                               support / validation cases per (shots, seed), reused
    records/{init}/{k}shot/seed{s}/{case}.json   one results record per test case (Dice, HD95 per label)
    runs/{init}/{k}shot/seed{s}.json          training summary (losses, validation curve, selection)
    overlays/{init}/{k}shot/seed{s}/{case}.png   mid-slice overlay (seed 0 only), referenced by records
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from synthvox.core.atomic import write_json
from synthvox.engine.seeds import numpy_rng, torch_generator
from synthvox.train.checkpoint import Checkpoint, open_checkpoint
from synthvox.train.model import init_weights

from ..datasets import NnunetDataset, load_case, read_nnunet_dataset
from ..io import save_figure
from ..metrics import dice_per_label, hd95_per_label, macro_dice
from ..results import make_record, read_records, write_record
from .data import Prepared, prepare_volume, to_original_grid
from .protocol import FewshotProtocol, get_protocol
from .splits import SPLITS_FILE, load_or_make_splits, split_key
from .train import FewshotNet, finetune, predict

__all__ = ["run_fewshot", "run_one", "device_label"]

UNITS = {"dice": "1", "hd95": "mm", "dice_mean": "1", "hd95_mean": "mm", "train_seconds": "s", "run_seconds": "s"}


def device_label(device: torch.device) -> str:
    """"cpu" or "cuda:<GPU name>" for records."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return "cpu"


def _prepared(ds: NnunetDataset, case_id: str, protocol: FewshotProtocol, norm: dict | None, cache: dict) -> tuple[Prepared, np.ndarray | None]:
    key = (case_id, json.dumps(norm, sort_keys=True))
    if key not in cache:
        image, label, affine = load_case(ds, ds.case(case_id))
        cache[key] = (prepare_volume(image, label, affine, protocol.spacing_mm, norm), label)
    return cache[key]


def _overlay(path: Path, image: np.ndarray, gt: np.ndarray, pred: np.ndarray, title: str) -> None:
    import matplotlib  # lazily: ~1 s of startup, for figures only

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    for ax, axis in zip(axes, range(3)):
        # the slice with the most reference foreground along this axis
        counts = (gt > 0).sum(axis=tuple(a for a in range(3) if a != axis))
        k = int(np.argmax(counts)) if counts.any() else image.shape[axis] // 2
        take = lambda a: np.rot90(np.take(a, k, axis=axis))  # noqa: E731
        ax.imshow(take(image), cmap="gray")
        if take(gt).any():
            ax.contour(take(gt) > 0, levels=[0.5], colors="lime", linewidths=0.8)
        if take(pred).any():
            ax.contour(take(pred) > 0, levels=[0.5], colors="red", linewidths=0.8)
        ax.set_axis_off()
    fig.suptitle(f"{title}  (green: reference, red: prediction)", fontsize=8)
    save_figure(fig, path, dpi=80)


def run_one(
    ds: NnunetDataset,
    ckpt: Checkpoint,
    split: dict[str, Any],
    protocol: FewshotProtocol,
    out: Path,
    *,
    device: torch.device,
    cache: dict | None = None,
    log: Callable[[str], None] | None = None,
    overlays: bool = True,
    extra: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One (initialisation, shots, seed) run: fine-tune, predict every test case, write records.

    `ckpt`: the resolved checkpoint (`Checkpoint.random()` for training from scratch); each run
    builds a fresh network from it (the weights were read and checked once).
    """
    cache = {} if cache is None else cache
    t_run = time.perf_counter()
    shots, seed = split["shots"], split["seed"]
    backbone = ckpt.build("cpu")
    tag = ckpt.tag
    pretrained = not ckpt.is_random
    norm = ckpt.normalisation
    n_classes = max(ds.labels) + 1
    feat_c = int(backbone.config["out_channels"])
    net = FewshotNet(backbone, feat_c, n_classes)
    # The head (and, for scratch, the whole network) is drawn per (shots, seed): paired with the
    # pretrained run of the same split, which sees the same crops.
    g = torch_generator(seed, shots, "fewshot.init")
    init_weights(net.head if pretrained else net, g)
    rng = numpy_rng(seed, shots, "fewshot.crops")
    support = [_prepared(ds, c, protocol, norm, cache)[0] for c in split["train"]]
    val = _prepared(ds, split["val"], protocol, norm, cache)[0] if split["val"] else None
    summary = finetune(net, support, val, n_classes, protocol, rng, device, log)
    fg = sorted(ds.foreground)
    sub = Path(tag) / f"{shots}shot" / f"seed{seed}"
    runs_file = out / "runs" / sub.parent / f"seed{seed}.json"
    runs_file.parent.mkdir(parents=True, exist_ok=True)
    records = []
    checkpoint = ckpt.info()
    for case in ds.test:
        if case.label is None:
            continue
        prep, gt = _prepared(ds, case.id, protocol, norm, cache)
        t0 = time.perf_counter()
        pred = to_original_grid(predict(net, prep.image, tuple(summary["crop"]), protocol.overlap, device), prep)
        dice = dice_per_label(pred, gt, fg)
        hd = hd95_per_label(pred, gt, prep.orig_spacing, fg)
        finite_hd = [v for v in hd.values() if math.isfinite(v)]
        artifacts = {}
        if overlays and seed == 0:
            png = out / "overlays" / sub / f"{case.id}.png"
            img, _, _ = load_case(ds, case)
            _overlay(png, img, gt, pred, f"{ds.name} {case.id}: {tag}, {shots}-shot, seed {seed}")
            rec_dir = out / "records" / sub
            artifacts["overlay"] = os.path.relpath(png, rec_dir)
        record = make_record(
            task="fewshot",
            method="fewshot-" + ("pretrained" if pretrained else "scratch"),
            case=f"{ds.name}/{case.id}",
            metrics={
                "dice": dice,
                "hd95": hd,
                "dice_mean": macro_dice(dice),
                "hd95_mean": float(np.mean(finite_hd)) if finite_hd else float("nan"),
                "train_seconds": summary["train_seconds"],
            },
            units={k: UNITS[k] for k in ("dice", "hd95", "dice_mean", "hd95_mean", "train_seconds")},
            checkpoint=checkpoint,
            protocol=protocol.name,
            device=device_label(device),
            labels={k: ds.labels[k] for k in fg},
            artifacts=artifacts,
            extra={
                "setting": f"{ds.name} {shots}-shot",
                "dataset": ds.name,
                "shots": shots,
                "seed": seed,
                "support": split["train"],
                "validation": split["val"],
                "selection": summary["selection"],
                "selected_step": summary["selected_step"],
                "steps": protocol.steps,
                "protocol_params": protocol.to_dict(),
                "crop": summary["crop"],
                "init": "pretrained" if pretrained else "scratch (random init per seed)",
                "predict_seconds": time.perf_counter() - t0,
                **(extra or {}),
            },
        )
        write_record(record, out / "records" / sub / f"{case.id}.json")
        records.append(record)
    summary = {**summary, "run_seconds": time.perf_counter() - t_run, "split": split, "init": tag, "protocol": protocol.to_dict()}
    write_json(runs_file, summary, sort_keys=False, newline=False)
    return records


def run_fewshot(
    data: str | Path,
    ckpts: Sequence[str | Checkpoint],
    shots: Sequence[int],
    seeds: int | Sequence[int],
    out: str | Path,
    *,
    protocol: str | FewshotProtocol = "cpu",
    steps: int | None = None,
    device: str | torch.device | None = None,
    overwrite: bool = False,
    overlays: bool = True,
    log: Callable[[str], None] | None = print,
    extra: dict[str, Any] | None = None,
    verify_weights: bool = True,
) -> list[dict[str, Any]]:
    """Few-shot grid on the nnU-Net dataset `data`; returns (and writes) every per-case record.

    `ckpts`: resolved `Checkpoint`s or specs (dir | run dir | "bundled" | "random", resolved
    here, once each; `verify_weights` applies to those); `seeds`: a count (0..n-1)
    or explicit seeds. Splits are read from / written to `out/splits.json`. A run whose records
    all exist is skipped unless `overwrite` (its records are read back).
    """
    out = Path(out)
    inits = [open_checkpoint(c, verify_weights=verify_weights) for c in ckpts]
    ds = read_nnunet_dataset(data)
    proto = protocol if isinstance(protocol, FewshotProtocol) else get_protocol(protocol, steps)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    splits = load_or_make_splits(out / SPLITS_FILE, ds.name, [c.id for c in ds.train], list(shots), seed_list)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    labelled_tests = [c for c in ds.test if c.label is not None]
    if not labelled_tests:
        raise ValueError(f"{ds.root}: no labelled test cases (labelsTs) to evaluate on")
    if proto.name == "reference" and dev.type == "cpu" and log:
        log(f"[fewshot] warning: the reference protocol ({proto.steps} steps of {proto.batch} x {proto.crop}^3 crops) "
            "is GPU work; on CPU use --protocol cpu")
    cache: dict = {}
    records: list[dict[str, Any]] = []
    for ckpt in inits:
        tag = ckpt.tag
        for k in shots:
            for s in seed_list:
                split = splits[split_key(k, s)]
                rec_dir = out / "records" / tag / f"{k}shot" / f"seed{s}"
                files = [rec_dir / f"{c.id}.json" for c in labelled_tests]
                if not overwrite and all(f.exists() for f in files):
                    old = read_records(files)
                    if all(r.get("protocol") == proto.name and r["extra"].get("steps") == proto.steps for r in old):
                        if log:
                            log(f"[fewshot] {tag} {k}-shot seed {s}: records exist, skipped")
                        records += old
                        continue
                if log:
                    log(f"[fewshot] {ds.name}: {tag} {k}-shot seed {s} ({proto.name} protocol, {proto.steps} steps, {dev})")
                records += run_one(ds, ckpt, split, proto, out, device=dev, cache=cache,
                                   log=log, overlays=overlays, extra=extra)
    return records

