"""`make demo`: the whole synthvox flow end to end on embedded defaults.

Stages (each timed and printed): template banks -> previews -> a Dask-rendered store (+ verify)
-> a short CPU pretraining -> features of a real volume -> registration of a real pair ->
1-shot segmentation -> the HTML report. Real data: Colin27 from Debian's mricron-data when
installed, otherwise nilearn's MNI152 alone (the demo says which).

`quick=True` is the miniature used by the test suite: tiny volumes, two training steps, a tiny
network, a coarse registration; it checks the flow, its numbers mean nothing.

This module lives in `cli/` because it is the one place allowed to import every part.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["DemoSettings", "run_demo"]


@dataclass(frozen=True)
class DemoSettings:
    """What the demo does at each stage (full demo vs the test-suite miniature)."""

    size: int = 64                 # engine volume side
    samples: int = 96              # store samples
    task_size: int = 16
    workers: int = 2               # Dask LocalCluster worker processes
    bank_count: int = 192          # procedural templates
    steps: int = 160               # pretraining steps (CPU)
    crop: int = 32
    widths: tuple[int, ...] = (16, 32, 64, 128, 256)   # the reference UNet
    spacing: int = 2               # real volumes resampled to this many mm
    reg_adam_iters: int = 50
    reg_affine_iters: int = 80
    fewshot_steps: int = 40
    previews: int = 2
    extra: dict[str, Any] = field(default_factory=dict)


QUICK = DemoSettings(size=16, samples=8, task_size=4, workers=0, bank_count=24, steps=2, crop=16,
                     widths=(4, 8, 16), spacing=4, reg_adam_iters=5, reg_affine_iters=5, fewshot_steps=2, previews=1)


class _Stages:
    """Prints one line per stage with its wall time; keeps the times for the summary."""

    def __init__(self, echo: Callable[[str], Any]) -> None:
        self.echo = echo
        self.times: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        self.echo(f"[demo] {name} ...")
        t0 = time.perf_counter()
        result = fn()
        self.times[name] = time.perf_counter() - t0
        self.echo(f"[demo] {name}: {self.times[name]:.1f} s")
        return result


def _real_volumes(out: Path, spacing: int) -> dict[str, Any]:
    """A real brain volume (+ brain mask) and a second subject, as NIfTI files under `out`."""
    from synthvox.downstream.datasets import write_nifti
    from synthvox.downstream.evaluate import halve, data_sources, load_colin, load_mni, rigid_offset, warp_array

    src = data_sources()
    mni = load_mni(resolution=2)
    if src["colin"]:
        colin = load_colin(src["colin"], spacing=2)
        fixed = (colin["bet"], colin["mask"], colin["affine"], "Colin27 (brain-extracted T1, mricron-data)")
    else:
        fixed = (mni["t1"], mni["mask"], mni["affine"], "MNI152 2009a (nilearn)")
    # the moving subject: MNI152 displaced by a rigid offset (headroom for the affine stage);
    # without Colin27, MNI152 against its own displaced copy
    off = rigid_offset(mni["t1"].shape, 8.0, (3.0, -2.0, 2.0))
    moving = (warp_array(mni["t1"], off, False), warp_array(mni["mask"], off, True), mni["affine"], "MNI152 2009a (nilearn), rigidly offset")
    paths: dict[str, Any] = {"note": src["note"]}
    for role, (img, mask, aff, name) in (("fixed", fixed), ("moving", moving)):
        for _ in range(int(np.log2(spacing)) - 1):  # 2 mm -> 4 mm for the miniature
            img, aff2 = halve(img, aff, False)
            mask, _ = halve(mask, aff, True)
            aff = aff2
        paths[role] = write_nifti(out / f"{role}.nii.gz", img.astype(np.float32), aff)
        paths[f"{role}_mask"] = write_nifti(out / f"{role}_mask.nii.gz", mask.astype(np.int16), aff)
        paths[f"{role}_name"] = name
    return paths


def _fewshot_dataset(out: Path, real: dict[str, Any]) -> Path:
    """A 1-shot brain-extraction dataset: train on the moving subject, test on the fixed one."""
    import nibabel as nib

    from synthvox.downstream.datasets import write_nnunet_dataset

    def load(p: Path) -> tuple[np.ndarray, np.ndarray]:
        img = nib.load(str(p))
        return np.asarray(img.dataobj, np.float32), img.affine

    (mi, maff), (mm, _) = load(real["moving"]), load(real["moving_mask"])
    (fi, faff), (fm, _) = load(real["fixed"]), load(real["fixed_mask"])
    d = out / "BrainExtraction"
    write_nnunet_dataset(d, "BrainExtraction", {0: "background", 1: "brain"},
                         {"train_subject": (mi, mm.astype(np.int64), maff)}, {"test_subject": (fi, fm.astype(np.int64), faff)},
                         channel="T1", description="1-shot brain extraction across subjects (demo)")
    return d


def run_demo(out: str | Path = "out/demo", *, quick: bool = False, settings: DemoSettings | None = None,
             echo: Callable[[str], Any] = print) -> dict[str, Any]:
    """Run the whole flow into `out`; return {"times": {stage: s}, "outputs": {name: path}}."""
    import torch

    from synthvox.downstream.features import extract_features, write_pca_png
    from synthvox.downstream.fewshot import run_fewshot
    from synthvox.downstream.io import load_nifti, save_nifti
    from synthvox.downstream.registration.config import RegistrationConfig
    from synthvox.downstream.registration.run import register_files
    from synthvox.downstream.report import build_report
    from synthvox.downstream.results import read_records
    from synthvox.engine.config import EngineConfig
    from synthvox.engine.preview import write_previews
    from synthvox.engine.templates import make_procedural_bank, open_bank
    from synthvox.pipelines.runner import synth_shards
    from synthvox.pipelines.verify import verify
    from synthvox.train.checkpoint import load_model
    from synthvox.train.config import TrainConfig
    from synthvox.train.pretrain import pretrain

    s = settings or (QUICK if quick else DemoSettings())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    st = _Stages(echo)
    outputs: dict[str, Any] = {}

    bank = out / "bank"
    st.run("template bank (procedural)", lambda: make_procedural_bank(bank, s.bank_count, seed=0, overwrite=True))
    echo(f"[demo]   {len(open_bank(bank))} templates in {bank}")
    cfg = EngineConfig(size=s.size, bank=str(bank))

    outputs["previews"] = st.run("previews", lambda: write_previews(cfg, 0, s.previews, out / "previews"))

    store = out / "store"
    summary = st.run("render store (Dask)" if s.workers else "render store (in process)",
                     lambda: synth_shards(store, s.samples, task_size=s.task_size, cfg=cfg, seed=0,
                                          formats=("wds", "zarr"), workers=s.workers, progress=False))
    echo(f"[demo]   {summary.get('samples', s.samples)} samples in {store}")
    rep = st.run("verify store", lambda: verify(store, quick=True, rerender=1))
    if not rep["ok"]:
        raise RuntimeError(f"the demo store failed verification: {rep['problems']}")

    run_dir = out / "run"
    tcfg = TrainConfig(steps=s.steps, crop=s.crop, widths=s.widths, workers=0, warmup_steps=min(20, s.steps),
                       ckpt_every=max(1, s.steps), val_samples=0, n_voxels=256 if quick else 512)
    st.run(f"pretrain ({s.steps} steps, CPU)", lambda: pretrain(run_dir, tcfg, store, overwrite=True, log=lambda m: None))
    log = [json.loads(l) for l in (run_dir / "log.jsonl").read_text().splitlines() if '"loss"' in l]
    if log:
        k = max(1, len(log) // 10)
        first, last = np.mean([r["loss"] for r in log[:k]]), np.mean([r["loss"] for r in log[-k:]])
        echo(f"[demo]   loss {first:.3f} (first {k} steps) -> {last:.3f} (last {k}); a few CPU minutes show a trend, not a useful model")
    outputs["run"] = run_dir
    try:
        from synthvox.train.plot import plot_log

        outputs["loss_png"] = plot_log(run_dir)
    except Exception as e:  # a plot is a nicety; the demo goes on
        echo(f"[demo]   (no loss plot: {e})")

    real = st.run("real data", lambda: _real_volumes(out / "data", s.spacing))
    echo(f"[demo]   {real['note']}")
    model, record = load_model(run_dir)

    def features() -> Path:
        vol = load_nifti(real["fixed"])
        f = extract_features(model, vol.data, record.get("normalisation"))
        path = save_nifti(np.moveaxis(f.numpy(), 0, -1), vol.affine, out / "features" / "fixed_features.nii.gz")
        outputs["pca_png"] = write_pca_png(vol.data, f, out / "features" / "fixed_pca.png")
        return path

    outputs["features"] = st.run("features of a real volume", features)

    rcfg = RegistrationConfig(adam_iters=s.reg_adam_iters, affine_iters=s.reg_affine_iters)
    reg = st.run("register a real pair (net+mind)", lambda: register_files(
        real["fixed"], real["moving"], out / "registration", fixed_labels=real["fixed_mask"],
        moving_labels=real["moving_mask"], cfg=rcfg, model=model, model_record=record, case="demo-pair", echo=None))
    m = reg["metrics"]
    echo(f"[demo]   brain Dice {m.get('dice_macro_before', float('nan')):.3f} -> {m.get('dice_macro_after', float('nan')):.3f}, "
         f"folding {m.get('folding_fraction', float('nan')):.4%}")
    outputs["registration"] = out / "registration"

    ds = st.run("few-shot dataset", lambda: _fewshot_dataset(out / "datasets", real))
    st.run(f"1-shot segmentation ({s.fewshot_steps} steps)", lambda: run_fewshot(
        ds, [str(run_dir)], [1], 1, out / "fewshot", protocol="cpu", steps=s.fewshot_steps, log=None, overwrite=True))

    records = read_records([out / "registration", out / "fewshot"])
    outputs["report"] = st.run("report", lambda: build_report(
        records, out / "report", title="synthvox demo" + (" (miniature)" if quick else ""),
        notes=[real["note"], f"pretrained {s.steps} CPU steps at {s.crop}^3 crops: a flow check, not a trained model",
               "registration: MNI152 rigidly offset -> the fixed brain, net+mind features"]))["html"]

    total = sum(st.times.values())
    echo("\n[demo] stage times:")
    for name, t in st.times.items():
        echo(f"  {t:7.1f} s  {name}")
    echo(f"  {total:7.1f} s  total")
    echo(f"\n[demo] open first: {outputs['report']}")
    echo(f"[demo] then: previews {out / 'previews'}, loss curve {outputs.get('loss_png', '-')}, "
         f"registration overview {out / 'registration' / 'overview.png'}, feature PCA {outputs.get('pca_png', '-')}")
    result = {"times": st.times, "outputs": {k: str(v) for k, v in outputs.items()}, "total_s": total}
    (out / "demo.json").write_text(json.dumps(result, indent=1))
    return result
