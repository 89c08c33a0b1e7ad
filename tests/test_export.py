"""Portable models: UNet3D scripts; `synthvox export` files run in a Python that never imports synthvox."""
from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from synthvox.cli.export_cmds import export
from synthvox.downstream.export import PortableFeatures
from synthvox.downstream.features import extract_features, normalise_image
from synthvox.train.checkpoint import load_model, save_checkpoint
from synthvox.train.model import build_model

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "exported_model.py"
TINY = {"in_channels": 1, "out_channels": 4, "widths": [4, 8, 16], "convs_per_level": 2, "norm": "batch"}

# Runs the example with synthvox and MONAI made unimportable, and proves neither was imported.
_ISOLATED = """
import importlib.abc, runpy, sys
BANNED = ("synthvox", "monai")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BANNED:
            raise ImportError(f"{name} imported by a program that must not need it")
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
assert not [m for m in sys.modules if m.split(".")[0] in BANNED]
"""


def _script(module: torch.nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 marks jit.script deprecated
        return torch.jit.script(module)


def _tiny_run(tmp_path: Path, clip: list[float] | None = None) -> Path:
    model = build_model(TINY, generator=torch.Generator().manual_seed(3))
    model.train()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode matters
        model(torch.rand(2, 1, 8, 8, 8) * 3 + 1)
    run = tmp_path / "run"
    rec = {"normalisation": {"kind": "minmax", "clip": clip}} if clip else None
    save_checkpoint(run, 5, model, {"step": torch.tensor(5)}, record=rec)
    return run


def test_unet_scripts_with_same_names_and_outputs():
    model = build_model(TINY, generator=torch.Generator().manual_seed(0)).eval()
    scripted = _script(model)
    assert list(scripted.state_dict()) == list(model.state_dict())
    assert "encoders.0.0.conv.weight" in model.state_dict()  # MONAI Convolution names, unchanged
    x = torch.rand(2, 1, 8, 12, 4)
    with torch.no_grad():
        assert torch.equal(scripted(x), model(x))
        out, taps = model.forward_with_taps(x, ["enc1", "out"])
    assert torch.equal(out, taps["out"]) and taps["enc1"].shape == (2, 8, 4, 6, 2)
    with pytest.raises(Exception, match="divisible by 4"):
        scripted(torch.rand(1, 1, 6, 8, 8))
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.rand(1, 1, 6, 8, 8))


def test_portable_module_matches_extract_features():
    model = build_model(TINY, generator=torch.Generator().manual_seed(1)).eval()
    rng = np.random.default_rng(0)
    img = (rng.normal(size=(9, 13, 6)) * 40 - 7).astype(np.float32)
    img[0, 0, 0] = np.nan
    for clip in (None, [-20.0, 30.0]):
        norm = {"kind": "minmax", "clip": clip}
        port = _script(PortableFeatures(model, clip))
        with torch.no_grad():
            got = port(torch.from_numpy(img)[None, None])[0]
            x = torch.from_numpy(np.stack([img, np.full_like(img, 5.0)]))[:, None]
            normed = port.normalise(x)
        ref = extract_features(model, img, norm)
        assert got.shape == ref.shape and torch.allclose(got, ref, atol=1e-5)
        assert torch.allclose(normed[0, 0], normalise_image(img, norm), atol=1e-6)
        assert torch.equal(normed[1], torch.zeros_like(normed[1]))  # constant volume -> zeros, per volume


def _exported_features(tmp_path: Path, fmt: str, suffix: str, clip: list[float] | None) -> tuple[np.ndarray, np.ndarray, str]:
    run = _tiny_run(tmp_path, clip)
    out = tmp_path / f"features{suffix}"
    res = CliRunner().invoke(export, ["--ckpt", str(run), "--format", fmt, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "checkpoint:" in res.output and out.is_file()
    img = (np.random.default_rng(2).normal(size=(10, 7, 13)) * 100 + 300).astype(np.float32)
    np.save(tmp_path / "img.npy", img)
    proc = subprocess.run([sys.executable, "-I", "-c", _ISOLATED, str(EXAMPLE), str(out), str(tmp_path / "img.npy"),
                           str(tmp_path / "feats.npy")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model, rec = load_model(run)
    ref = extract_features(model, img, rec["normalisation"]).numpy()
    return np.load(tmp_path / "feats.npy"), ref, proc.stdout


def test_torchscript_export_runs_without_synthvox(tmp_path):
    got, ref, stdout = _exported_features(tmp_path, "torchscript", ".pt", clip=[250.0, 400.0])
    assert got.shape == ref.shape == (4, 10, 7, 13)
    assert np.abs(got - ref).max() <= 1e-4
    assert "'clip': [250.0, 400.0]" in stdout and "step-000005" in stdout
    # refuses to overwrite; a bad checkpoint is a clean error naming it
    res = CliRunner().invoke(export, ["--ckpt", str(tmp_path / "run"), "--out", str(tmp_path / "features.pt")])
    assert res.exit_code != 0 and "--overwrite" in res.output
    res = CliRunner().invoke(export, ["--ckpt", str(tmp_path / "nope"), "--out", str(tmp_path / "x.pt")])
    assert res.exit_code != 0 and "nope" in res.output and "Traceback" not in res.output


def test_onnx_export_runs_without_synthvox(tmp_path):
    for mod in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(mod, reason=f"the onnx extra is not installed ({mod}): pip install -c constraints.txt '.[onnx]'")
    got, ref, stdout = _exported_features(tmp_path, "onnx", ".onnx", clip=None)
    assert got.shape == ref.shape and np.abs(got - ref).max() <= 1e-4
    assert "'clip': None" in stdout
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "features.onnx")).metadata_props}
    desc = json.loads(meta["synthvox"])
    assert desc["model"] == TINY and desc["normalisation"] == {"kind": "minmax", "clip": None}


def test_onnx_without_the_extra_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if the onnx extra were not installed
    run = _tiny_run(tmp_path)
    res = CliRunner().invoke(export, ["--ckpt", str(run), "--format", "onnx", "--out", str(tmp_path / "x.onnx")])
    assert res.exit_code != 0 and "synthvox[onnx]" in res.output and "Traceback" not in res.output
    assert not list(tmp_path.glob("*x.onnx*"))  # nothing half-written left behind
