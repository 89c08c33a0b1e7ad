"""`synthvox probe`: the probes on checkpoints and on a random init of the same architecture.

For each checkpoint spec (PATH | RUN | bundled | random) the probes of `probes.run_probes` run
on the network and, once per architecture, on a random initialisation of it (seed
`train.checkpoint.RANDOM_SEED`); each network gets a results record `probe-<tag>.json`
(schema `synthvox.result/1`, task "probe") and its PCA image `pca-<tag>.png` in `out`, and a
side-by-side table is printed.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
from torch import nn

from synthvox.train.checkpoint import RANDOM_SEED, Checkpoint

from .io import save_figure
from .network import load_network, open_network
from .probes import ProbeConfig, ProbeData, ProbeResult, load_probe_data, probe_taps, run_probes
from .results import make_record, write_record

__all__ = ["probe_checkpoints", "random_like", "write_pca_figure", "side_by_side", "probe_units"]


def random_like(model_config: dict[str, Any], seed: int = RANDOM_SEED) -> nn.Module:
    """A UNet3D of `model_config` initialised from `torch.Generator().manual_seed(seed)` (eval mode)."""
    return Checkpoint.random(model_config, seed=seed).build()


def probe_units(metrics: dict[str, float]) -> dict[str, str]:
    """Units of the probe metrics: seconds in s, everything else a fraction."""
    return {k: ("s" if k.endswith("seconds") else "1") for k in metrics}


def write_pca_figure(image: np.ndarray, rgb: np.ndarray, path: str | Path, title: str = "") -> Path:
    """The grey mid-slices (three axes) above the features' first three PCs as RGB."""
    import matplotlib  # lazily: ~1 s of startup, for figures only

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = np.nan_to_num(np.asarray(image, np.float32))
    fig, ax = plt.subplots(2, 3, figsize=(9, 6))
    for a in range(3):
        i = img.shape[a] // 2
        ax[0, a].imshow(np.rot90(np.take(img, i, axis=a)), cmap="gray")
        ax[1, a].imshow(np.rot90(np.take(rgb, i, axis=a)))
        for r in (0, 1):
            ax[r, a].axis("off")
    ax[0, 0].set_title("image (mid-slices)", fontsize=9, loc="left")
    ax[1, 0].set_title("output features, PCs 1-3 as RGB", fontsize=9, loc="left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=80)


def side_by_side(columns: dict[str, dict[str, float]]) -> str:
    """A plain-text table: one row per metric, one column per network."""
    keys: list[str] = []
    for m in columns.values():
        keys += [k for k in m if k not in keys]
    names = list(columns)
    w = max([len(k) for k in keys] + [6])
    cw = [max(len(n), 7) for n in names]
    lines = ["  ".join([f"{'probe':<{w}}"] + [f"{n:>{c}}" for n, c in zip(names, cw)])]
    for k in keys:
        cells = []
        for n, c in zip(names, cw):
            v = columns[n].get(k)
            cells.append(f"{'n/a' if v is None else f'{v:.3f}':>{c}}")
        lines.append("  ".join([f"{k:<{w}}"] + cells))
    return "\n".join(lines)


def _one(model: nn.Module, record: dict[str, Any], tag: str, out: Path, data: ProbeData, cfg: ProbeConfig,
         ckpt_info: dict[str, Any] | None) -> tuple[ProbeResult, dict[str, Any]]:
    t0 = time.perf_counter()
    res = run_probes(model, record, data, cfg)
    artifacts = {}
    if res.pca is not None and res.image is not None:
        write_pca_figure(res.image, res.pca, out / f"pca-{tag}.png", f"{tag}: {data.brain_name}")
        artifacts["pca"] = f"pca-{tag}.png"
    rec = make_record(task="probe", method="probes", case=tag, metrics=res.metrics, units=probe_units(res.metrics),
                      checkpoint=ckpt_info, protocol="cpu", device="cpu", artifacts=artifacts,
                      extra={"setting": "representation probes", "probe_config": asdict(cfg),
                             "taps": list(probe_taps(model, record)), "step": record.get("step"),
                             "probe_engine_config_hash": data.engine_hash, "brain": data.brain_name,
                             "notes": res.notes, "seconds": res.seconds, "total_seconds": time.perf_counter() - t0})
    write_record(rec, out / f"probe-{tag}.json")
    return res, rec


def probe_checkpoints(specs: list[str | Checkpoint], out: str | Path, cfg: ProbeConfig | None = None,
                      baseline: bool = True, echo: Callable[[str], Any] | None = print,
                      verify_weights: bool = True) -> dict[str, Any]:
    """Probe every checkpoint of `specs` (and a random init of each architecture unless `baseline` is False).

    `specs`: resolved `Checkpoint`s or specs (resolved once each, before the probe data is
    built, so a bad one is refused at once; `verify_weights` applies to specs).

    Returns {"records": {tag: record}, "table": side-by-side text}; writes probe-<tag>.json and
    pca-<tag>.png into `out`. A spec that does not load raises `CheckpointLoadError` naming it.
    """
    cfg = cfg or ProbeConfig()
    ckpts = [open_network(s, verify_weights) for s in specs]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = echo or (lambda m: None)
    data = load_probe_data(cfg)
    for note in data.notes:
        say(note)
    columns: dict[str, dict[str, float]] = {}
    records: dict[str, dict[str, Any]] = {}
    archs: dict[str, dict[str, Any]] = {}
    for ck in ckpts:
        model, rec = load_network(ck, echo=echo)
        tag = ck.tag
        if tag in records:
            raise ValueError(f"--ckpt {ck.spec}: another checkpoint already has the name {tag!r}; probe them into separate --out folders")
        res, records[tag] = _one(model, rec, tag, out, data, cfg, None if ck.is_random else ck.info())
        columns[tag] = res.metrics
        say(f"probed {tag} in {sum(res.seconds.values()):.1f} s")
        if not ck.is_random:
            archs.setdefault(repr(sorted(ck.model_config.items())), rec)
    if baseline:
        for n, rec in enumerate(archs.values()):
            tag = "random-init" if len(archs) == 1 else f"random-init-{n}"
            base_rec = {**rec, "name": tag, "sha256": None, "step": 0}
            res, records[tag] = _one(random_like(rec["model"]), base_rec, tag, out, data, cfg,
                                     {"name": f"random init (seed {RANDOM_SEED}) of {rec.get('name')}'s architecture", "sha256": None})
            columns[tag] = res.metrics
    table = side_by_side(columns)
    say(table)
    return {"records": records, "table": table}
