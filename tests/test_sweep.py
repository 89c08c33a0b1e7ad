"""`synthvox sweep`: the grid file, a two-point run on tiny settings (Dask, subprocess trainings), reuse."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from synthvox.downstream.sweep import SweepError, load_sweep
from synthvox.downstream.sweep.run import cpu_at

TINY = """
name: tiny
base:
  engine: {size: 16}
  train: {steps: 4, crop: 16, widths: [4, 8, 16], n_voxels: 32, source: engine, head_width: 16, warmup_steps: 1,
          augment: {enabled: false}}
axes:
  train.temperature: [0.1, 0.33]
checkpoints: [2, 4]
probe: {size: 32, crop: 24, samples: 1, per_label: 8, registration: false, pca: false}
"""


def test_grid_points_and_clear_errors(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(TINY.replace("axes:", "points:\n  - {train.anchor_bg_max: 0.5, threads: 2}\naxes:"))
    spec = load_sweep(f)
    pts = spec.points()
    assert [p.overrides for p in pts] == [{"train.temperature": 0.1}, {"train.temperature": 0.33},
                                          {"train.anchor_bg_max": 0.5, "threads": 2}]
    assert pts[0].train["ckpt_every"] == 2 and pts[0].train["keep"] >= 2 and pts[2].threads == 2
    for bad, msg in [("train.tempature: [0.1]", "tempature"), ("model.width: [1]", "train.<field>"),
                     ("train.temperature: []", "non-empty"), ("engine.size: [3]", "engine.size")]:
        f.write_text(TINY.replace("train.temperature: [0.1, 0.33]", bad))
        with pytest.raises(SweepError, match=msg):
            load_sweep(f)
    f.write_text(TINY.replace("checkpoints: [2, 4]", "checkpoints: [2, 8]"))
    with pytest.raises(SweepError, match="beyond train.steps"):
        load_sweep(f)
    f.write_text(TINY.replace("checkpoints: [2, 4]", "checkpoints: [7, 40]").replace("steps: 4", "steps: 40"))
    with pytest.raises(SweepError, match="common divisor"):  # gcd 1: 40 saves for 2 probed steps
        load_sweep(f)
    f.write_text(TINY.replace("train.temperature: [0.1, 0.33]", "train.temperature: [0.1]\n  threads: [1]")
                 .replace("engine: {size: 16}", "engine: {size: 16}\n  model: {}"))
    with pytest.raises(SweepError, match="base must be"):
        load_sweep(f)
    f.write_text(TINY + "source: store\n")
    with pytest.raises(SweepError, match="unknown keys"):
        load_sweep(f)


def test_cpu_interpolation():
    s = [(10.0, 1.0), (12.0, 3.0), (14.0, 3.5)]
    assert cpu_at(s, 11.0) == pytest.approx(2.0) and cpu_at(s, 5.0) == 1.0 and cpu_at(s, 99.0) == 3.5


def test_two_point_sweep_writes_table_and_plot(tmp_path):
    from click.testing import CliRunner

    from synthvox.cli.probe_cmds import sweep

    f = tmp_path / "tiny.yaml"
    f.write_text(TINY)
    out = tmp_path / "out"
    r = CliRunner().invoke(sweep, [str(f), "--out", str(out)])
    assert r.exit_code == 0, r.output
    table = json.loads((out / "table.json").read_text())
    assert len(table["summary"]) == 2 and not table["failures"]
    steps = sorted((row["point"], row["step"]) for row in table["rows"])
    assert [s for _, s in steps] == [0, 2, 4, 0, 2, 4]  # random init, then each checkpoint
    for row in table["rows"]:
        assert 0 <= row["retrieval/out"] <= 1 and row["cpu_min"] >= 0
    ck = [row for row in table["rows"] if row["step"] > 0]
    assert all(row["cpu_min"] > 0 and row["loss"] is not None for row in ck)
    md = (out / "table.md").read_text()
    assert "p00-temperature=0.1" in md and "p01-temperature=0.33" in md
    assert (out / "table.csv").read_text().count("\n") == 7
    assert (out / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert Path(out / "points" / table["summary"][0]["point"] / "run" / "log.jsonl").is_file()
    again = CliRunner().invoke(sweep, [str(f), "--out", str(out)])  # finished points are reused, not retrained
    assert again.exit_code == 0 and again.output.count("reused") == 2, again.output
