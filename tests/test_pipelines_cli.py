"""The pipelines commands through click (in-process, the engine at 8^3)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from synthvox.cli.main import main


@pytest.fixture(autouse=True)
def no_faults(monkeypatch):
    monkeypatch.delenv("SYNTHVOX_FAULTS", raising=False)


def test_synth_shards_info_verify_convert(tmp_path):
    out = str(tmp_path / "s")
    r = CliRunner().invoke(main, ["synth-shards", "--out", out, "--samples", "6", "--task-size", "4", "--size", "8",
                                  "--formats", "wds,zarr", "--workers", "0"])
    assert r.exit_code == 0, r.output
    assert "done: 2/2 tasks" in r.output and "progress: 6/6 samples" in r.output
    r = CliRunner().invoke(main, ["info", out, "--json"])
    d = json.loads(r.output)
    assert r.exit_code == 0 and d["samples"] == 6 and d["formats"] == ["wds", "zarr"]
    r = CliRunner().invoke(main, ["info", out])
    assert "config hash" in r.output and "complete" in r.output
    r = CliRunner().invoke(main, ["verify", out, "--rerender", "1"])
    assert r.exit_code == 0 and "OK" in r.output
    (tmp_path / "s" / "wds" / "shard-000001.tar").write_bytes(b"broken")
    r = CliRunner().invoke(main, ["verify", out, "--quick"])
    assert r.exit_code == 1 and "wds/shard-000001.tar" in r.output and "BAD" in r.output
    # our refusals, not click's: a message naming the store and the fix, no traceback
    r = CliRunner().invoke(main, ["convert", out, "--content", "full", "--out", str(tmp_path / "copy")])
    assert r.exit_code == 1 and "already holds content 'full'" in r.output and "copy the directory" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "copy").exists()
    r = CliRunner().invoke(main, ["convert", out, "--content", "labels", "--out", out])
    assert r.exit_code == 1 and "is the source store itself" in r.output


def test_synth_shards_refusals_are_clean_messages(tmp_path):
    out = str(tmp_path / "s")
    base = ["synth-shards", "--out", out, "--samples", "4", "--task-size", "2", "--size", "8", "--workers", "0", "--quiet"]
    assert CliRunner().invoke(main, base).exit_code == 0
    r = CliRunner().invoke(main, base[:-3] + ["--task-size", "4", "--workers", "0"])
    assert r.exit_code != 0 and "task_size" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, base + ["--formats", "tiff"])
    assert r.exit_code != 0 and "tiff" in r.output


def test_dry_run_prints_the_plan(tmp_path):
    r = CliRunner().invoke(main, ["synth-shards", "--out", str(tmp_path / "big"), "--samples", "10000000",
                                  "--size", "16", "--formats", "wds,zarr", "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "tasks 39,063 of 256" in r.output and "CPU-hours" in r.output and "free disk" in r.output
    assert not (tmp_path / "big").exists()
