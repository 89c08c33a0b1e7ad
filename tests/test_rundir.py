"""train/rundir.py: a run directory holding a run is refused, moved aside or resumed with the same settings."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from synthvox.core.errors import SynthvoxError
from synthvox.train.checkpoint import save_checkpoint
from synthvox.train.model import build_model
from synthvox.train.rundir import (ResumeMismatchError, RunDirError, RunExistsError, RunLogError, clean_temporaries,
                                   parse_fields, prepare_run_dir, recorded_settings, repair_log, run_settings)

from tests.helpers.train import tiny_train_config


def _settings(**over):
    s = run_settings(tiny_train_config(), store_manifest_hash="m" * 16, engine_config_hash="e" * 16, world_size=1)
    s.update(over)
    return s


def _fake_run(run: Path, n_lines: int = 4) -> None:
    """A run as the trainer leaves it: config.json, log.jsonl, run.json (through prepare_run_dir), a checkpoint."""
    prepare_run_dir(run, resume=False, overwrite=False, settings=_settings())
    (run / "config.json").write_text("{}")
    (run / "log.jsonl").write_text("".join(json.dumps({"step": i, "loss": 1.0}) + "\n" for i in range(n_lines)))
    model = build_model({"in_channels": 1, "out_channels": 4, "widths": [4, 8], "convs_per_level": 1, "norm": "batch"},
                        generator=torch.Generator().manual_seed(0))
    save_checkpoint(run, 2, model, {"step": 2})


def test_fresh_run_records_settings(tmp_path):
    run = tmp_path / "run"
    prep = prepare_run_dir(run, resume=False, overwrite=False, settings=_settings())
    assert not prep.resumed and prep.moved_to is None and prep.notes == ()
    doc = json.loads((run / "run.json").read_text())
    assert doc["settings"] == _settings() and doc["history"][0]["event"] == "start"
    assert recorded_settings(run) == (_settings(), str(run / "run.json"))


def test_run_is_refused_without_resume_or_overwrite(tmp_path):
    run = tmp_path / "run"
    _fake_run(run)
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    with pytest.raises(RunExistsError) as e:
        prepare_run_dir(run, resume=False, overwrite=False, settings=_settings())
    msg = str(e.value)
    assert isinstance(e.value, SynthvoxError) and str(run) in msg and "--resume" in msg and "--overwrite" in msg
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before  # nothing touched
    assert len((run / "log.jsonl").read_text().splitlines()) == 4
    with pytest.raises(RunDirError, match="pass one"):
        prepare_run_dir(run, resume=True, overwrite=True, settings=_settings())


def test_overwrite_moves_the_old_run_aside(tmp_path):
    run = tmp_path / "run"
    _fake_run(run)
    old_log = (run / "log.jsonl").read_text()
    prep = prepare_run_dir(run, resume=False, overwrite=True, settings=_settings(lr=0.5))
    assert prep.moved_to is not None and prep.moved_to.name.startswith("run.old-") and prep.moved_to.is_dir()
    assert (prep.moved_to / "log.jsonl").read_text() == old_log and (prep.moved_to / "checkpoints" / "latest").is_file()
    assert str(prep.moved_to) in " ".join(prep.notes)
    assert sorted(p.name for p in run.iterdir()) == ["run.json"] and not prep.resumed
    # a second overwrite within the same second gets its own name
    (run / "log.jsonl").write_text("")
    prep2 = prepare_run_dir(run, resume=False, overwrite=True, settings=_settings())
    assert prep2.moved_to != prep.moved_to and prep.moved_to.is_dir() and prep2.moved_to.is_dir()


def test_resume_refuses_every_changed_setting(tmp_path):
    run = tmp_path / "run"
    _fake_run(run)
    new = _settings(lr=0.01, batch_size=2, store_manifest_hash="x" * 16, seed=7)
    with pytest.raises(ResumeMismatchError) as e:
        prepare_run_dir(run, resume=True, overwrite=False, settings=new)
    msg = str(e.value)
    for k in ("lr", "batch_size", "store_manifest_hash", "seed"):
        assert f"{k}: " in msg
    assert "0.003 -> 0.01" in msg and "1 -> 2" in msg and "--resume-with-changes batch_size,lr,seed,store_manifest_hash" in msg
    assert str(run) in msg and "run.json" in msg
    # allowing some is not enough
    with pytest.raises(ResumeMismatchError, match="--resume-with-changes seed,store_manifest_hash"):
        prepare_run_dir(run, resume=True, overwrite=False, settings=new, allow_changes=("lr", "batch-size"))
    with pytest.raises(RunDirError, match="unknown field"):
        prepare_run_dir(run, resume=True, overwrite=False, settings=new, allow_changes=("learning_rate",))


def test_resume_with_allowed_changes_records_them(tmp_path):
    run = tmp_path / "run"
    _fake_run(run)
    same = prepare_run_dir(run, resume=True, overwrite=False, settings=_settings())
    assert same.resumed and same.changes == {}
    new = _settings(lr=0.01, world_size=2)
    prep = prepare_run_dir(run, resume=True, overwrite=False, settings=new, allow_changes=parse_fields("lr,world-size"))
    assert prep.resumed and prep.changes == {"lr": (0.003, 0.01), "world_size": (1, 2)}
    assert any("lr 0.003 -> 0.01" in n for n in prep.notes)
    doc = json.loads((run / "run.json").read_text())
    assert doc["settings"] == new and [h["event"] for h in doc["history"]] == ["start", "resume", "resume"]
    assert doc["history"][-1]["changes"] == {"lr": [0.003, 0.01], "world_size": [1, 2]}
    # the next resume compares with the settings now in force
    prepare_run_dir(run, resume=True, overwrite=False, settings=new)
    with pytest.raises(ResumeMismatchError, match="lr: 0.01 -> 0.003"):
        prepare_run_dir(run, resume=True, overwrite=False, settings=_settings(world_size=2))


def test_resume_of_a_run_without_run_json_reads_its_checkpoint(tmp_path):
    run = tmp_path / "run"
    model = build_model({"in_channels": 1, "out_channels": 16, "widths": [4, 8, 16], "convs_per_level": 2, "norm": "batch"},
                        generator=torch.Generator().manual_seed(0))
    cfg = tiny_train_config()
    save_checkpoint(run, 2, model, {"step": 2}, {"store_manifest_hash": "m" * 16, "engine_config_hash": "e" * 16,
                                                "train_config": cfg.to_dict(), "world_size": 1, "source": "store"})
    (run / "log.jsonl").write_text(json.dumps({"step": 0}) + "\n")
    old, src = recorded_settings(run)
    assert src.endswith("record.json") and old == _settings()
    with pytest.raises(ResumeMismatchError, match="store_manifest_hash"):
        prepare_run_dir(run, resume=True, overwrite=False, settings=_settings(store_manifest_hash="z" * 16))
    prep = prepare_run_dir(run, resume=True, overwrite=False, settings=_settings())
    assert prep.resumed and (run / "run.json").is_file()


def test_resume_of_an_empty_dir_starts_fresh(tmp_path):
    prep = prepare_run_dir(tmp_path / "new", resume=True, overwrite=False, settings=_settings())
    assert not prep.resumed and "holds no run" in prep.notes[0]


def test_torn_last_log_line_is_dropped_on_resume(tmp_path):
    run = tmp_path / "run"
    _fake_run(run)
    log = run / "log.jsonl"
    log.write_text(log.read_text() + '{"step": 4, "lo')
    prep = prepare_run_dir(run, resume=True, overwrite=False, settings=_settings())
    assert any(str(log) in n and "torn" in n for n in prep.notes)
    assert [json.loads(ln)["step"] for ln in log.read_text().splitlines()] == [0, 1, 2, 3]
    assert log.read_text().endswith("\n")
    # a complete last line without its newline gets one; nothing dropped
    log.write_text(log.read_text() + '{"step": 4}')
    assert repair_log(log) is None and log.read_text().endswith('{"step": 4}\n')
    # a bad line in the middle is damage, not a torn write
    log.write_text('{"step": 0}\ngarbage\n{"step": 2}\n')
    with pytest.raises(RunLogError, match="line 2"):
        prepare_run_dir(run, resume=True, overwrite=False, settings=_settings())


def test_leftover_temporaries_are_removed_at_start(tmp_path):
    run = tmp_path / "run"
    _fake_run(run)
    ck = run / "checkpoints"
    leftovers = [ck / ".step-000004.1234-0123456789ab.tmp", ck / ".tmp-step-000006", ck / ".step-000002.old-99-0123abcd",
                 run / ".log.jsonl.77-abcdefabcdef.tmp"]
    for p in leftovers[:3]:
        p.mkdir()
        (p / "model.safetensors").write_bytes(b"x")
    leftovers[3].write_text("half")
    keep = [ck / "step-000002", ck / "latest", run / "log.jsonl", run / "config.json"]
    prep = prepare_run_dir(run, resume=True, overwrite=False, settings=_settings())
    assert not any(p.exists() for p in leftovers) and all(p.exists() for p in keep)
    assert any("removed 4 temporaries" in n for n in prep.notes)
    assert clean_temporaries(run) == []


def test_other_ranks_only_check(tmp_path):
    run = tmp_path / "run"
    _fake_run(run)
    (run / "log.jsonl").write_text('{"step": 0}\n{"ste')
    tmp = run / "checkpoints" / ".tmp-step-000009"
    tmp.mkdir()
    prep = prepare_run_dir(run, resume=True, overwrite=False, settings=_settings(), rank0=False)
    assert prep.resumed and tmp.exists() and (run / "log.jsonl").read_text().endswith('{"ste')
    with pytest.raises(ResumeMismatchError):
        prepare_run_dir(run, resume=True, overwrite=False, settings=_settings(seed=3), rank0=False)
    prepare_run_dir(run, resume=False, overwrite=True, settings=_settings(), rank0=False)
    assert (run / "log.jsonl").exists()  # only rank 0 moves the run
