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


def test_dry_run_on_an_existing_store_reads_its_settings_and_names_refusals(tmp_path):
    """Issue 15, item 7: the plan uses the store's task size and says what the real run would refuse."""
    out = str(tmp_path / "s")
    base = ["synth-shards", "--out", out, "--samples", "6", "--task-size", "3", "--size", "8", "--workers", "0", "--quiet"]
    assert CliRunner().invoke(main, base).exit_code == 0
    r = CliRunner().invoke(main, ["synth-shards", "--out", out, "--samples", "9", "--size", "8", "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "tasks 3 of 3 samples" in r.output and "resumes / grows" in r.output and "REFUSE" not in r.output
    r = CliRunner().invoke(main, ["synth-shards", "--out", out, "--samples", "9", "--size", "8", "--seed", "4",
                                  "--formats", "zarr", "--dry-run"])
    assert r.exit_code == 0 and "THE REAL RUN WOULD REFUSE IT" in r.output, r.output
    assert "seed: store has 0, this run has 4" in r.output and "formats: store has ['wds']" in r.output
    real = CliRunner().invoke(main, ["synth-shards", "--out", out, "--samples", "9", "--size", "8", "--seed", "4",
                                     "--formats", "zarr", "--workers", "0"])
    assert real.exit_code == 1 and "seed: store has 0, this run has 4" in real.output


def test_without_task_size_every_worker_gets_work_and_the_dashboard_is_printed(tmp_path):
    """Issue 15, item 6: 200 samples on 16 workers are not one task; the dashboard address is printed."""
    from synthvox.pipelines.layout import choose_task_size

    assert choose_task_size(200, 16) == 4 and choose_task_size(10_000_000, 16) == 256 and choose_task_size(3, 8) == 1
    r = CliRunner().invoke(main, ["synth-shards", "--out", str(tmp_path / "p"), "--samples", "200", "--size", "8",
                                  "--workers", "16", "--dry-run"])
    assert "tasks 50 of 4 samples" in r.output and "about 4 tasks for each of 16 workers" in r.output
    r = CliRunner().invoke(main, ["synth-shards", "--out", str(tmp_path / "s"), "--samples", "8", "--size", "8",
                                  "--workers", "2", "--dashboard-address", "127.0.0.1:0"])
    assert r.exit_code == 0, r.output
    assert "Dask dashboard: http://127.0.0.1:" in r.output and "--task-size not given: 1 samples per task" in r.output
    assert "done: 8/8 tasks" in r.output
