"""Few-shot segmentation on tiny nnU-Net datasets: layout checks, splits, two training steps, records."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from synthvox.downstream.datasets import DatasetError, load_case, read_nnunet_dataset, write_nnunet_dataset
from synthvox.downstream.fewshot import draw_split, get_protocol, load_or_make_splits, lr_at, run_fewshot
from synthvox.downstream.fewshot.data import crop_shape, prepare_volume, sample_crops, to_original_grid
from synthvox.downstream.results import RESULT_SCHEMA, read_records

AFF = np.diag([1.0, 1.0, 1.0, 1.0])


def _case(rng: np.random.Generator, n: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A blob (label 1) and a box (label 2) of distinct brightness in noise."""
    z, y, x = np.mgrid[:n, :n, :n]
    c = rng.uniform(n * 0.35, n * 0.65, size=3)
    lab = np.zeros((n, n, n), np.int64)
    lab[(z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 < (n / 5) ** 2] = 1
    lab[2:6, 2:8, n - 7 : n - 2] = 2
    img = rng.normal(0.0, 0.1, lab.shape) + np.array([0.0, 1.0, 2.0])[lab]
    return img.astype(np.float32), lab, AFF


def _dataset(root: Path, n_train: int = 3, n_test: int = 2, n: int = 20):
    rng = np.random.default_rng(0)
    train = {f"tr{i}": _case(rng, n) for i in range(n_train)}
    test = {f"ts{i}": _case(rng, n) for i in range(n_test)}
    return write_nnunet_dataset(root, "Tiny", {0: "background", 1: "blob", 2: "box"}, train, test)


TINY_NET = {"in_channels": 1, "out_channels": 4, "widths": [4, 8], "convs_per_level": 1, "norm": "batch"}


def _tiny_ckpt(root: Path):
    """A saved tiny checkpoint named "tinynet" (resolved once into a Checkpoint)."""
    from synthvox.train.checkpoint import open_checkpoint, save_checkpoint
    from synthvox.train.model import build_model

    m = build_model(TINY_NET, generator=torch.Generator().manual_seed(3))
    return open_checkpoint(save_checkpoint(root, 1, m, {"step": 1}, {"name": "tinynet"}))


def _tiny_random():
    """A random init of the tiny architecture (trains from scratch like --ckpt random)."""
    from synthvox.train.checkpoint import Checkpoint

    return Checkpoint.random(TINY_NET)


# --- layout -------------------------------------------------------------------------------

def test_dataset_roundtrip(tmp_path):
    ds = _dataset(tmp_path / "d")
    assert [c.id for c in ds.train] == ["tr0", "tr1", "tr2"] and [c.id for c in ds.test] == ["ts0", "ts1"]
    assert ds.labels == {0: "background", 1: "blob", 2: "box"}
    img, lab, aff = load_case(ds, ds.train[0])
    assert img.shape == lab.shape == (20, 20, 20) and lab.dtype == np.int64
    assert set(np.unique(lab)) == {0, 1, 2}
    np.testing.assert_allclose(aff, AFF)


def test_missing_channel_suffix(tmp_path):
    ds = _dataset(tmp_path / "d")
    f = ds.train[0].image
    f.rename(f.with_name("tr0.nii.gz"))
    with pytest.raises(DatasetError, match=r"tr0\.nii\.gz lacks the channel suffix.*tr0_0000\.nii\.gz"):
        read_nnunet_dataset(tmp_path / "d")


def test_label_not_in_dataset_json(tmp_path):
    ds = _dataset(tmp_path / "d")
    meta = json.loads((tmp_path / "d" / "dataset.json").read_text())
    del meta["labels"]["box"]
    (tmp_path / "d" / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=r"labelsTr/tr0\.nii\.gz holds label values \[2\].*dataset\.json"):
        read_nnunet_dataset(tmp_path / "d", check_values=True)
    assert ds.train[0].label is not None


def test_mismatched_shapes(tmp_path):
    import nibabel as nib

    ds = _dataset(tmp_path / "d")
    nib.save(nib.Nifti1Image(np.zeros((20, 20, 19), np.uint8), AFF), str(ds.train[1].label))
    with pytest.raises(DatasetError, match=r"labelsTr/tr1\.nii\.gz has shape \(20, 20, 19\).*\(20, 20, 20\)"):
        read_nnunet_dataset(tmp_path / "d")


def test_missing_label_and_dataset_json(tmp_path):
    ds = _dataset(tmp_path / "d")
    ds.train[2].label.unlink()
    with pytest.raises(DatasetError, match=r"tr2_0000\.nii\.gz has no label file"):
        read_nnunet_dataset(tmp_path / "d")
    (tmp_path / "d" / "dataset.json").unlink()
    with pytest.raises(DatasetError, match="dataset.json is missing"):
        read_nnunet_dataset(tmp_path / "d")


# --- splits, protocol, crops ----------------------------------------------------------------

def test_splits_deterministic_nested_and_persisted(tmp_path):
    ids = [f"c{i}" for i in range(6)]
    a, b = draw_split(ids, 3, 1), draw_split(ids, 3, 1)
    assert a == b and len(a["train"]) == 3 and a["val"] not in a["train"]
    one = draw_split(ids, 1, 1)
    assert set(one["train"]) <= set(a["train"]) and one["val"] == a["val"]
    assert {tuple(draw_split(ids, 1, s)["train"]) for s in range(6)} != {tuple(one["train"])}
    assert draw_split(["x"], 1, 0) == {"shots": 1, "seed": 0, "train": ["x"], "val": None}
    p = tmp_path / "splits.json"
    s1 = load_or_make_splits(p, "D", ids, [1], [0, 1])
    # a hand edit survives: the file is the source of truth once written
    data = json.loads(p.read_text())
    data["splits"]["1shot-seed0"]["train"] = ["c5"]
    p.write_text(json.dumps(data))
    s2 = load_or_make_splits(p, "D", ids, [1, 3], [0, 1])
    assert s2["1shot-seed0"]["train"] == ["c5"] and s2["1shot-seed1"] == s1["1shot-seed1"]
    assert "3shot-seed0" in json.loads(p.read_text())["splits"]
    with pytest.raises(DatasetError, match="was made for labelled cases"):
        load_or_make_splits(p, "D", ids[:4], [1], [0])


def test_protocol_and_schedule():
    cpu = get_protocol("cpu")
    assert (cpu.crop, cpu.batch, cpu.spacing_mm) == (64, 2, 2.0) and cpu.steps <= 300
    ref = get_protocol("reference")
    assert (ref.crop, ref.batch, ref.steps) == (128, 4, 37500)
    assert get_protocol("cpu", steps=2).steps == 2
    assert lr_at(0, cpu) == pytest.approx(2e-4) and lr_at(cpu.steps, cpu) == pytest.approx(0.0)
    assert lr_at(cpu.steps // 2, cpu) == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="unknown few-shot protocol"):
        get_protocol("gpu")


def test_prepare_crops_and_back():
    rng = np.random.default_rng(0)
    img, lab, _ = _case(rng, 20)
    aff = np.diag([1.0, 1.0, 1.0, 1.0])
    p = prepare_volume(img, lab, aff, 2.0, {"kind": "minmax", "clip": None})
    assert p.image.shape == (10, 10, 10) and p.label.shape == (10, 10, 10)
    assert p.image.min() == pytest.approx(0.0) and p.image.max() == pytest.approx(1.0)
    back = to_original_grid(p.label, p)
    assert back.shape == lab.shape and (back == lab).mean() > 0.9
    cs = crop_shape((10, 40, 70), 64, 16)
    assert cs == (16, 48, 64)
    x, y = sample_crops([p], (16, 16, 16), 3, 1.0, np.random.default_rng(1))
    assert x.shape == (3, 1, 16, 16, 16) and y.dtype == torch.int64 and (y > 0).any()
    x2, _ = sample_crops([p], (16, 16, 16), 3, 1.0, np.random.default_rng(1))
    assert torch.equal(x, x2)


# --- the run --------------------------------------------------------------------------------

def test_fewshot_two_steps_writes_records_and_reuses(tmp_path):
    _dataset(tmp_path / "d")
    out = tmp_path / "out"
    state = torch.random.get_rng_state()
    ckpt_a = _tiny_ckpt(tmp_path / "run")
    recs = run_fewshot(tmp_path / "d", [ckpt_a, _tiny_random()], [1], 1, out, protocol="cpu", steps=2, log=None)
    assert torch.equal(state, torch.random.get_rng_state()), "global torch RNG was touched"
    assert len(recs) == 4  # 2 inits x 1 shot x 1 seed x 2 test cases
    on_disk = read_records([out / "records"])
    assert len(on_disk) == 4
    for r in on_disk:
        assert r["schema"] == RESULT_SCHEMA and r["task"] == "fewshot" and r["protocol"] == "cpu"
        assert r["device"] == "cpu" and r["labels"] == {"1": "blob", "2": "box"}
        assert set(r["metrics"]["dice"]) == {"1", "2"} and set(r["metrics"]["hd95"]) == {"1", "2"}
        assert all(0.0 <= v <= 1.0 for v in r["metrics"]["dice"].values() if v is not None)
        assert r["units"]["hd95"] == "mm" and r["extra"]["steps"] == 2 and r["extra"]["shots"] == 1
        assert r["extra"]["setting"] == "Tiny 1-shot" and r["case"].startswith("Tiny/ts")
        assert (Path(r["_path"]).parent / r["artifacts"]["overlay"]).is_file()
    methods = {(r["method"], r["checkpoint"]["name"]) for r in on_disk}
    assert methods == {("fewshot-pretrained", "tinynet"), ("fewshot-scratch", "random")}
    splits = json.loads((out / "splits.json").read_text())
    sp = splits["splits"]["1shot-seed0"]
    assert all(r["extra"]["support"] == sp["train"] and r["extra"]["validation"] == sp["val"] for r in on_disk)
    # a second call reuses the splits and skips finished runs
    mtimes = {r["_path"]: Path(r["_path"]).stat().st_mtime_ns for r in on_disk}
    again = run_fewshot(tmp_path / "d", [ckpt_a], [1], 1, out, protocol="cpu", steps=2, log=None)
    assert len(again) == 2 and all(Path(p).stat().st_mtime_ns == t for p, t in mtimes.items())
    assert json.loads((out / "splits.json").read_text()) == splits


def test_fewshot_learns_on_tiny_data(tmp_path):
    """Enough steps on an easy task beat chance clearly (the loop really trains)."""
    _dataset(tmp_path / "d", n_train=2, n_test=1, n=16)
    recs = run_fewshot(tmp_path / "d", [_tiny_random()], [1], [0], tmp_path / "o", protocol=get_protocol(
        "cpu", steps=80, spacing_mm=None, crop=16, val_every=40, batch=2, lr=1e-2), log=None, overlays=False)
    assert recs[0]["metrics"]["dice_mean"] > 0.7


def test_cli_fewshot_reference_unet(tmp_path):
    """The CLI on the real `random` network (reference UNet), two steps on a 16^3 dataset."""
    from click.testing import CliRunner

    from synthvox.cli.eval_cmds import fewshot
    from synthvox.cli.main import main

    _dataset(tmp_path / "d", n_train=2, n_test=1, n=16)
    args = ["--ckpt", "random", "--data", str(tmp_path / "d"), "--shots", "1", "--seeds", "1", "--steps", "2",
            "--out", str(tmp_path / "o")]
    res = CliRunner().invoke(fewshot, args)
    assert res.exit_code == 0, res.output
    assert "1 records" in res.output and "checkpoint: random" in res.output
    (rec,) = read_records([tmp_path / "o" / "records"])
    assert rec["checkpoint"] == {"name": "random", "sha256": None} and rec["extra"]["crop"] == [16, 16, 16]
    bad = CliRunner().invoke(fewshot, args[:6] + ["--shots", "0,x"] + args[8:])
    assert bad.exit_code != 0 and "comma-separated" in bad.output
    (tmp_path / "d" / "dataset.json").unlink()
    res = CliRunner().invoke(main, ["fewshot"] + args + ["--overwrite"])
    assert res.exit_code != 0 and "dataset.json is missing" in res.output


def test_eval_deformation_helpers():
    from synthvox.downstream.evaluate import halve, contrast_curve, rigid_offset, smooth_warp, warp_array

    rng = np.random.default_rng(0)
    d = smooth_warp((12, 14, 10), rng, std_vox=1.0)
    assert d.shape == (3, 12, 14, 10) and 0 < np.abs(d).max() < 6
    x = rng.normal(size=(12, 14, 10)).astype(np.float32)
    np.testing.assert_allclose(warp_array(x, np.zeros_like(d), False), x, atol=1e-6)
    lab = (x > 0).astype(np.int64)
    assert set(np.unique(warp_array(lab, d, True))) <= {0, 1}
    shift = rigid_offset((12, 14, 10), 0.0, (1.0, 0.0, 0.0))
    np.testing.assert_allclose(warp_array(x, shift, False)[:-1], x[1:], atol=1e-5)
    c = contrast_curve(x, rng)
    assert c.min() >= 0 and c.max() <= 1 and c[x == x.min()].item() == 0
    img, aff = halve(np.arange(4 * 4 * 4, dtype=np.float32).reshape(4, 4, 4), np.eye(4), False)
    assert img.shape == (2, 2, 2) and img[0, 0, 0] == pytest.approx(np.mean([0, 1, 4, 5, 16, 17, 20, 21]))
    np.testing.assert_allclose(aff[:3, 3], 0.5) and np.testing.assert_allclose(np.diag(aff)[:3], 2.0)
    lab = np.zeros((4, 4, 4), np.int64)
    lab[:2, :2, :2] = 3
    lab[0, 0, 0] = 5
    lab2, _ = halve(lab, np.eye(4), True)
    assert lab2[0, 0, 0] == 3 and lab2[1, 1, 1] == 0
