"""The typed Checkpoint (resolved once, passed around) and the weight check (issue 14: no hash, no load)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import synthvox.train.checkpoint as ckpt_mod
from synthvox.cli.main import main
from synthvox.downstream.datasets import write_nnunet_dataset
from synthvox.downstream.fewshot import run_fewshot
from synthvox.train.checkpoint import Checkpoint, CheckpointError, load_weights, open_checkpoint, save_checkpoint
from synthvox.train.model import build_model, size_divisor

TINY = {"in_channels": 1, "out_channels": 4, "widths": [4, 8], "convs_per_level": 1, "norm": "batch"}


def _ckpt(run: Path, *, hashed: bool = True) -> Path:
    ck = save_checkpoint(run, 1, build_model(TINY, generator=torch.Generator().manual_seed(0)), {"step": 1})
    if not hashed:
        rj = ck / "record.json"
        rec = json.loads(rj.read_text())
        del rec["sha256"]
        rj.write_text(json.dumps(rec))
    return ck


def _image(path: Path) -> Path:
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((10, 12, 8)).astype(np.float32), np.eye(4)), str(path))
    return path


def _dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)

    def case():
        lab = np.zeros((12, 12, 12), np.int64)
        lab[3:8, 3:8, 3:8] = 1
        return (rng.normal(0, 0.1, lab.shape) + lab).astype(np.float32), lab, np.eye(4)

    write_nnunet_dataset(root, "Tiny", {0: "background", 1: "box"}, {f"tr{i}": case() for i in range(3)}, {"ts0": case()})
    return root


def test_checkpoint_is_typed_and_frozen(tmp_path):
    _ckpt(tmp_path / "run")
    ck = open_checkpoint(tmp_path / "run")
    assert ck.path == tmp_path / "run" / "checkpoints" / "step-000001" and not ck.is_random
    assert ck.name == "step-000001" and ck.tag == "step-000001" and ck.divisor == 2 and ck.sha256
    assert ck.info() == {"name": "step-000001", "sha256": ck.sha256} and ck.normalisation["kind"] == "minmax"
    assert size_divisor(ck.build()) == ck.divisor
    with pytest.raises(dataclasses.FrozenInstanceError):
        ck.path = None  # type: ignore[misc]
    with pytest.raises(TypeError):
        ck.record["name"] = "x"  # type: ignore[index]
    rnd = open_checkpoint("random")
    assert rnd.is_random and rnd.name == "random" and rnd.sha256 is None and rnd.divisor == 16
    assert open_checkpoint(ck) is ck
    # a random init of any architecture: the same weights every time
    a, b = Checkpoint.random(TINY).build(), Checkpoint.random(TINY).build()
    assert a.config["widths"] == [4, 8] and all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(ValueError, match="no `divisor`"):
        size_divisor(torch.nn.Conv3d(1, 1, 1))


def test_one_resolution_one_record_read_one_hash(tmp_path, monkeypatch):
    """A few-shot grid of 2 shots x 2 seeds reads record.json once and hashes the weights once."""
    run = tmp_path / "run"
    _ckpt(run)
    reads, hashes = [], []
    real_read, real_hash = ckpt_mod.load_record, ckpt_mod.file_sha256
    monkeypatch.setattr(ckpt_mod, "load_record", lambda p: reads.append(p) or real_read(p))
    monkeypatch.setattr(ckpt_mod, "file_sha256", lambda p: hashes.append(p) or real_hash(p))
    recs = run_fewshot(_dataset(tmp_path / "d"), [str(run), "random"], [1, 2], 2, tmp_path / "o", protocol="cpu",
                       steps=1, log=None, overlays=False)
    assert len(recs) == 8 and len(reads) == 1 and len(hashes) == 1
    assert {r["checkpoint"]["name"] for r in recs} == {"step-000001", "random"}
    # the weights are still checked: a changed file is refused
    w = run / "checkpoints" / "step-000001" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(CheckpointError, match="does not match the sha256"):
        open_checkpoint(run).build()


def test_unhashed_checkpoint_is_refused_by_the_loader(tmp_path):
    ck = _ckpt(tmp_path / "run", hashed=False)
    with pytest.raises(CheckpointError, match="no weights hash") as e:
        open_checkpoint(ck)
    assert str(ck / "record.json") in str(e.value) and "--no-verify-weights" in str(e.value)
    with pytest.raises(CheckpointError, match="no weights hash"):
        load_weights(ck, build_model(TINY))
    load_weights(ck, build_model(TINY), check_hash=False)
    model = open_checkpoint(ck, verify_weights=False).build()
    assert model.config["widths"] == [4, 8]


@pytest.mark.parametrize("cmd", ["features", "export", "probe", "fewshot", "eval", "register", "register-batch"])
def test_cli_refuses_unhashed_checkpoint(tmp_path, cmd):
    ck = _ckpt(tmp_path / "run", hashed=False)
    img = _image(tmp_path / "img.nii.gz")
    (tmp_path / "pairs.json").write_text("[]")
    args = {
        "features": ["features", str(img), str(tmp_path / "f.nii.gz")],
        "export": ["export", "--out", str(tmp_path / "m.pt")],
        "probe": ["probe", "--out", str(tmp_path / "p")],
        "fewshot": ["fewshot", "--data", str(_dataset(tmp_path / "d")), "--out", str(tmp_path / "fs")],
        "eval": ["eval", "--out", str(tmp_path / "ev")],
        "register": ["register", "--fixed", str(img), "--moving", str(img), "--features", "net", "--out", str(tmp_path / "r")],
        "register-batch": ["register-batch", str(tmp_path / "pairs.json"), "--features", "net", "--out", str(tmp_path / "rb")],
    }[cmd] + ["--ckpt", str(ck)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1, r.output
    assert "no weights hash" in r.output and "record.json" in r.output and "--no-verify-weights" in r.output
    assert "Traceback" not in r.output
    assert not any((tmp_path / n).exists() for n in ("f.nii.gz", "m.pt", "p", "fs", "ev", "r", "rb"))


def test_cli_no_verify_weights_loads_it(tmp_path):
    ck = _ckpt(tmp_path / "run", hashed=False)
    img = _image(tmp_path / "img.nii.gz")
    r = CliRunner().invoke(main, ["features", str(img), str(tmp_path / "f.nii.gz"), "--ckpt", str(ck), "--no-verify-weights"])
    assert r.exit_code == 0, r.output
    assert "not verified" in r.output and nib.load(str(tmp_path / "f.nii.gz")).shape == (10, 12, 8, 4)
    r = CliRunner().invoke(main, ["export", "--ckpt", str(ck), "--out", str(tmp_path / "m.pt"), "--no-verify-weights"])
    assert r.exit_code == 0, r.output
    assert torch.jit.load(str(tmp_path / "m.pt"))(torch.rand(1, 1, 6, 6, 6)).shape == (1, 4, 6, 6, 6)


def test_bundle_of_a_checkpoint_loads_and_checks_its_weights(tmp_path):
    from synthvox.train.bundle import export_bundle

    ck = _ckpt(tmp_path / "run")
    out = export_bundle(tmp_path / "run", tmp_path / "bundle")
    b = open_checkpoint(out)
    assert b.name == "bundled-step-000001" and b.record["weights_dtype"] == "float16" and b.sha256
    ref = open_checkpoint(ck).build().state_dict()
    got = b.build().state_dict()
    assert all(torch.allclose(ref[k].float(), got[k].float(), atol=1e-3) for k in ref)
    with pytest.raises(CheckpointError, match="not 'random'"):
        export_bundle("random", tmp_path / "b2")
    w = ck / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(CheckpointError, match="does not match the sha256"):
        export_bundle(ck, tmp_path / "b3")
    assert not (tmp_path / "b3").exists()
