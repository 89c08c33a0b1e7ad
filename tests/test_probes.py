"""Representation probes, the trainer's probe hook, plot-log's probe curves and the new anchor knobs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from synthvox.downstream.probes import ProbeConfig, make_probe_hook, retrieval_accuracy
from synthvox.train.loss import sample_voxels
from synthvox.train.model import build_model

TINY = {"in_channels": 1, "out_channels": 4, "widths": [4, 8], "convs_per_level": 1, "norm": "batch"}


def _labels(g: torch.Generator, n_labels: int = 5, shape=(12, 12, 12)) -> torch.Tensor:
    return torch.randint(0, n_labels, shape, generator=g)


def test_retrieval_one_hot_is_perfect_and_constant_is_chance():
    g = torch.Generator().manual_seed(0)
    lab = _labels(g)
    onehot = F.one_hot(lab, 5).permute(3, 0, 1, 2).float()
    # another "view": the same labels, features scaled and with a constant offset channel
    other = torch.cat([onehot * 3.0, torch.ones(1, *lab.shape)])
    assert retrieval_accuracy(torch.cat([onehot, torch.zeros(1, *lab.shape)]), other, lab, 8, g) == 1.0
    const = torch.ones(4, *lab.shape)
    assert retrieval_accuracy(const, const, lab, 8, g) == pytest.approx(1 / 5)
    assert retrieval_accuracy(torch.zeros(4, *lab.shape), torch.zeros(4, *lab.shape), lab, 8) == pytest.approx(1 / 5)
    # features that carry nothing about the label score near chance, not near 1
    noise = retrieval_accuracy(torch.randn(8, *lab.shape, generator=g), torch.randn(8, *lab.shape, generator=g), lab, 64, g)
    assert noise < 0.45
    with pytest.raises(ValueError, match="must be"):
        retrieval_accuracy(const, const[:, :-1], lab)


def test_background_cap_and_default_sampling_unchanged():
    g = torch.Generator().manual_seed(1)
    lab = torch.zeros(4000, dtype=torch.int64)
    lab[:400] = torch.randint(1, 4, (400,), generator=g)  # 90% background
    a = sample_voxels(lab, 100, torch.Generator().manual_seed(3))
    b = torch.randperm(4000, generator=torch.Generator().manual_seed(3))[:100]  # the behaviour before the knob
    assert torch.equal(a, b)
    assert torch.equal(sample_voxels(lab, 100, torch.Generator().manual_seed(3), bg_max=1.0), b)
    for balanced in (False, True):
        idx = sample_voxels(lab, 100, torch.Generator().manual_seed(4), balanced, bg_max=0.25)
        assert idx.numel() == 100 == idx.unique().numel()
        assert int((lab[idx] == 0).sum()) == 25
    few = lab.clone()
    few[10:400] = 0  # only 10 foreground voxels: all taken, background fills up
    idx = sample_voxels(few, 100, torch.Generator().manual_seed(4), bg_max=0.25)
    assert int((few[idx] != 0).sum()) == 10 and idx.numel() == 100


def test_train_config_knobs_validate_and_train(tmp_path):
    from synthvox.engine.config import EngineConfig
    from synthvox.train.config import ConfigError, load_train_config
    from synthvox.train.pretrain import build_pretrainer, pretrain

    with pytest.raises(ConfigError, match="anchor_bg_max"):
        load_train_config(anchor_bg_max=1.5)
    cfg = load_train_config(steps=2, widths=[4, 8], n_voxels=32, head_width=8, crop=None, source="engine",
                            channels_last=True, anchor_bg_max=0.3, warmup_steps=1, **{"augment.enabled": False})
    net = build_pretrainer(cfg, 2)
    conv = next(m for m in net.model.modules() if isinstance(m, torch.nn.Conv3d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert net.criterion.bg_max == 0.3
    s = pretrain(tmp_path / "r", cfg, None, engine_cfg=EngineConfig(size=16), log=lambda m: None)
    assert s["steps"] == 2 and (tmp_path / "r/checkpoints/step-000002/model.safetensors").is_file()


def test_probe_hook_leaves_the_model_alone():
    model = build_model(TINY, generator=torch.Generator().manual_seed(0)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hook = make_probe_hook(ProbeConfig(size=24, crop=16, samples=1, per_label=8, registration=False, pca=False))

    class Wrapped(torch.nn.Module):  # what DDP / the Pretrainer look like to the hook
        def __init__(self, m):
            super().__init__()
            self.module = m

    out = hook(Wrapped(model), 7)
    assert {"probe/retrieval/out", "probe/retrieval/mean", "probe/retrieval/chance", "probe/retrieval/enc0",
            "probe/retrieval/bottleneck"} <= set(out)
    assert all(0.0 <= out[k] <= 1.0 for k in out if k.startswith("probe/retrieval/"))
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert next(model.parameters()).is_contiguous()  # the probe's channels-last copy is not the model
    assert hook(model, 8)["probe/retrieval/out"] == out["probe/retrieval/out"]  # deterministic


def test_plot_log_draws_probe_keys(tmp_path):
    from synthvox.train.plot import plot_log, probe_series, read_log

    lines = [{"step": s, "loss": 5.0 - 0.1 * s, "taps": {"out": 5.0 - 0.1 * s}} for s in range(6)]
    lines += [{"step": 2, "val_loss": 4.8, "probe/retrieval/out": 0.1, "probe/retrieval/chance": 0.05},
              {"step": 5, "probe/retrieval/out": 0.2, "probe/retrieval/chance": 0.05, "probe/reg/dice_net": 0.3,
               "probe/seconds": 12.0}]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    train, val = read_log(tmp_path)
    assert len(train) == 6 and len(val) == 2
    series = probe_series(val)
    assert series["probe/retrieval/out"] == ([2, 5], [0.1, 0.2]) and "probe/seconds" not in series
    png = plot_log(tmp_path)
    assert png.read_bytes()[:4] == b"\x89PNG"


def _tiny_checkpoint(run: Path) -> Path:
    from synthvox.train.checkpoint import save_checkpoint

    model = build_model(TINY, generator=torch.Generator().manual_seed(1))
    return save_checkpoint(run, 3, model, {"step": 3}, {"taps": ["enc0", "out"]})


def test_cli_probe_writes_records_and_pca(tmp_path, mricron_dir):
    from click.testing import CliRunner

    from synthvox.cli.probe_cmds import probe
    from synthvox.downstream.results import read_records

    ckpt = _tiny_checkpoint(tmp_path / "run")
    r = CliRunner().invoke(probe, ["--ckpt", str(tmp_path / "run"), "--out", str(tmp_path / "p"), "--size", "32",
                                   "--crop", "24", "--samples", "1", "--per-label", "8", "--reg-spacing", "4"])
    assert r.exit_code == 0, r.output
    assert "random-init" in r.output and "retrieval/out" in r.output
    recs = {x["case"]: x for x in read_records([tmp_path / "p"])}
    assert set(recs) == {ckpt.name, "random-init"}
    m = recs[ckpt.name]["metrics"]
    assert 0 <= m["retrieval/out"] <= 1 and 0 <= m["reg/dice_net"] <= 1 and 0 < m["pca/var3"] <= 1
    assert m["reg/dice_before"] == recs["random-init"]["metrics"]["reg/dice_before"]
    assert recs[ckpt.name]["checkpoint"]["sha256"] and recs["random-init"]["checkpoint"]["sha256"] is None
    assert (tmp_path / "p" / recs[ckpt.name]["artifacts"]["pca"]).read_bytes()[:4] == b"\x89PNG"
    bad = CliRunner().invoke(probe, ["--ckpt", str(tmp_path / "nope"), "--out", str(tmp_path / "q")])
    assert bad.exit_code != 0 and "nope" in bad.output and "Traceback" not in bad.output
