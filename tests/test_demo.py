"""The miniature demo end to end: bank, store, two training steps, features, one registration,
a 1-shot segmentation and the report; checks the outputs, not just the exit code."""
from __future__ import annotations

import json
from html.parser import HTMLParser

import nibabel as nib
import numpy as np
import pytest

from synthvox.cli.demo import run_demo
from synthvox.downstream.results import read_records
from synthvox.pipelines.store import open_store
from synthvox.train.checkpoint import load_record


def test_miniature_demo_end_to_end(tmp_path):
    try:
        import nilearn  # noqa: F401
    except ImportError:
        pytest.skip("nilearn (the offline MNI152 files) is not installed: pip install synthvox[data]")
    lines: list[str] = []
    res = run_demo(tmp_path / "demo", quick=True, echo=lines.append)
    out = tmp_path / "demo"

    # the store: complete, both formats
    st = open_store(out / "store")
    assert st.num_samples == 8 and set(st.formats) == {"wds", "zarr"}
    # training wrote a checkpoint that records what it was trained on
    rec = load_record(out / "run" / "checkpoints" / (out / "run" / "checkpoints" / "latest").read_text().strip())
    assert rec["step"] == 2 and rec["engine_config_hash"]
    # features: one vector per voxel of the real volume, with its affine
    feat, img = nib.load(str(res["outputs"]["features"])), nib.load(str(out / "data" / "fixed.nii.gz"))
    assert feat.shape[:3] == img.shape and np.allclose(feat.affine, img.affine)
    assert np.isfinite(np.asarray(feat.dataobj)).all()
    # registration and few-shot wrote records of the one schema; registration kept its world frame
    records = read_records([out / "registration", out / "fewshot"])
    tasks = {r["task"] for r in records}
    assert {"registration", "fewshot"} <= tasks
    reg = next(r for r in records if r["task"] == "registration")
    assert 0.0 <= reg["metrics"]["dice_macro_after"] <= 1.0 and reg["metrics"]["folding_fraction"] < 0.05
    disp = nib.load(str(out / "registration" / "disp.nii.gz"))
    assert disp.shape == img.shape + (1, 3) and np.allclose(disp.affine, img.affine)
    # the report parses and names every record's case
    html = (out / "report" / "report.html").read_text()
    HTMLParser().feed(html)
    for r in records:
        assert r["case"] in html
    # the demo said where things are and how long each stage took
    assert any("open first" in l for l in lines)
    assert set(json.loads((out / "demo.json").read_text())["times"]) == set(res["times"])
