"""The trainer's front ends: one option definition, the console (header, progress, warm-up warning),
rank 0's summary and its weights hash, probes at validation, and refusals through `synthvox`."""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner

from synthvox.cli.main import main
from synthvox.cli.train_cmds import pretrain as cli_pretrain
from synthvox.train import options
from synthvox.train.runlog import Console, ConsoleConfig

from helpers.procs import run_ranks
from helpers.stores import make_store

TINY = ["--steps", "3", "--crop", "16", "--widths", "4,8,16", "--workers", "0", "--n-voxels", "16"]


@pytest.fixture(scope="module")
def store32(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("store") / "s32")


def _cli(args: list[str]):
    return CliRunner().invoke(main, args)


def _log(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip()]


def test_both_front_ends_share_one_option_definition_with_help_and_defaults():
    torchrun = options._torchrun_command
    names = lambda cmd: [p.name for p in cmd.params]  # noqa: E731
    assert names(cli_pretrain) == names(torchrun) and len(names(torchrun)) >= 30
    for p in torchrun.params:
        assert isinstance(p, click.Option) and p.help, p.name
        assert p.required or p.show_default, f"--{p.name} shows no default"
    text = CliRunner().invoke(main, ["pretrain", "--help"]).output
    assert "[default: (1000)]" in text and "--log-every-s" in text and "--skip-bad-shards" in text
    # the torchrun entry parses the same flags (and answers --help without starting anything)
    assert options.main(["--help"]) == 0


def test_header_progress_lines_every_log_every_and_the_jsonl_unchanged(store32, tmp_path):
    run = tmp_path / "r"
    r = _cli(["pretrain", "--store", str(store32), "--out", str(run), *TINY, "--steps", "5", "--log-every", "2",
              "--log-every-s", "0"])
    assert r.exit_code == 0, r.output
    out = r.output
    for field in (f"store {store32}", "steps 0->5", "device cpu", "world size 1", "parameters", "crop 16x16x16",
                  "batch 1 per rank", "lr 0.0002"):
        assert field in out, (field, out)
    progress = [ln for ln in out.splitlines() if ln.startswith("step ") and "/5 " in ln]
    assert [ln.split()[1] for ln in progress] == ["1/5", "2/5", "4/5", "5/5"], out
    assert all("samples/s" in ln and "ETA" in ln and "data" in ln and "loss" in ln for ln in progress)
    assert len([x for x in _log(run) if "loss" in x]) == 5  # one JSONL line per step, as before
    # 5 steps never leave the default warm-up of 100 steps: said at the start
    assert "shorter than the warm-up (100 steps)" in out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["steps"] == 5


def test_no_warm_up_warning_when_the_run_is_long_enough(store32, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train: {warmup_steps: 2}\n")
    r = _cli(["pretrain", "--store", str(store32), "--out", str(tmp_path / "r"), "--config", str(cfg), *TINY])
    assert r.exit_code == 0 and "(warm-up 2 steps)" in r.output and "shorter than the warm-up" not in r.output, r.output


def test_live_bar_on_a_terminal(monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr("sys.stdout", buf)
    lines: list[str] = []
    con = Console(lines.append, ConsoleConfig(live=True), total=4, start=0)
    for s in range(4):
        con.step(s, loss=1.5, lr=1e-3, samples_per_s=2.0, data_wait=0.25, dt=0.5)
    con.say("saved somewhere")
    con.close()
    text = buf.getvalue()
    assert text.count("\r[") == 4 and "step 4/4 (100%)" in text and "ETA 0:00" in text and "data 25%" in text
    assert "[" + "#" * 24 + "]" in text and lines == ["saved somewhere"]  # messages clear the bar, not lines


def _summary_rank(rank: int, world: int, port: int, run: str, store: str) -> tuple[dict, list[str]]:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    said: list[str] = []
    cfg = run + ".yaml"
    if rank == 0:
        Path(cfg).write_text("train: {dist_timeout_s: 60}\n")
    kw = dict(store=store, out=run, steps=2, crop=16, widths=[4, 8, 16], workers=0, n_voxels=16, device="cpu",
              resume=False, elastic=False, allow_incomplete=False, skip_bad_shards=False, log_every=1, log_every_s=0)
    try:
        summary = options.run_options(kw, log=said.append)
    finally:
        torch.distributed.destroy_process_group()
    return summary, said


def test_under_torchrun_rank_0_alone_prints_the_summary_and_its_hash_is_the_files(store32, tmp_path):
    run = tmp_path / "ddp"
    (s0, said0), (s1, said1) = run_ranks(_summary_rank, 2, (str(run), str(store32)), timeout=120)
    assert said1 == [] and said0, said1          # rank 1 prints nothing, not even its summary
    printed = json.loads(said0[-1])
    assert printed["rank"] == 0 and printed["world_size"] == 2
    weights = run / "checkpoints" / "step-000002" / "model.safetensors"
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()  # what `sha256sum model.safetensors` prints
    assert printed["weights_sha256"] == s0["weights_sha256"] == s1["weights_sha256"] == sha


def test_probes_are_logged_at_every_validation_and_plotted(tmp_path):
    run = tmp_path / "p"
    r = _cli(["pretrain", "--source", "engine", "--size", "16", "--out", str(run), "--steps", "4", "--widths", "4,8",
              "--n-voxels", "16", "--val-every", "2", "--val-samples", "1", "--probes", "--probe-size", "16",
              "--probe-samples", "1", "--no-probe-real"])
    assert r.exit_code == 0, r.output
    val = [x for x in _log(run) if "val_loss" in x]
    assert [x["step"] for x in val] == [1, 3]
    for x in val:
        assert 0.0 <= x["probe/retrieval/mean"] <= 1.0 and 0.0 < x["probe/retrieval/chance"] <= 1.0, x
    assert "probe/retrieval/mean" in r.output and "probes on" in r.output
    from synthvox.train.plot import probe_series, read_log

    assert [s for s, _ in [probe_series(read_log(run)[1])["probe/retrieval/mean"]]] == [[1, 3]]
    r = _cli(["plot-log", str(run)])
    assert r.exit_code == 0 and (run / "loss.png").read_bytes()[:4] == b"\x89PNG", r.output


def test_probes_under_the_bare_torchrun_entry_say_where_they_run(tmp_path, capsys):
    code = options.main(["--source", "engine", "--size", "16", "--out", str(tmp_path / "p"), "--probes"])
    assert code == 2 and "-m synthvox.cli.main pretrain --probes" in capsys.readouterr().err


def test_widths_that_are_not_integers_name_the_value(store32, tmp_path):
    r = _cli(["pretrain", "--store", str(store32), "--out", str(tmp_path / "r"), "--widths", "4,x"])
    assert r.exit_code == 2 and "'4,x'" in r.output and "--widths" in r.output, r.output
    assert "invalid literal" not in r.output and not (tmp_path / "r").exists()


def test_an_out_that_cannot_be_written_is_named(store32, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = _cli(["pretrain", "--store", str(store32), "--out", str(blocker / "run"), *TINY])
    assert r.exit_code == 1 and f"cannot create the run directory {blocker / 'run'}" in r.output, r.output
    assert "Traceback" not in r.output and "pass --out a writable directory" in r.output
    # a read-only disk (simulated: the tests may run as root, whom permissions do not stop)
    def read_only(self, *a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    r = _cli(["pretrain", "--store", str(store32), "--out", str(tmp_path / "ro"), *TINY])
    assert r.exit_code == 1 and f"cannot create the run directory {tmp_path / 'ro'}: Read-only file system" in r.output


def _drop_records(store: Path, tasks: set[int]) -> None:
    for f in (store / "records").glob("block-*.jsonl"):
        keep = [ln for ln in f.read_text().splitlines() if json.loads(ln)["task"] not in tasks]
        f.write_text("".join(ln + "\n" for ln in keep))


def test_allow_incomplete_through_the_cli(tmp_path):
    store = make_store(tmp_path / "s")
    _drop_records(store, {5, 6, 7})
    args = ["pretrain", "--store", str(store), *TINY]
    r = _cli(args + ["--out", str(tmp_path / "a")])
    assert r.exit_code == 1 and "--allow-incomplete" in r.output and "3 of 8 tasks" in r.output, r.output
    r = _cli(args + ["--out", str(tmp_path / "b"), "--allow-incomplete", "--steps", "6"])
    assert r.exit_code == 0, r.output
    assert "5 of 8 tasks (--allow-incomplete: the finished ones)" in r.output
    seen = {i for x in _log(tmp_path / "b") if "indices" in x for i in x["indices"][0]}
    assert seen and max(seen) < 10  # tasks 0-4 only
    state = torch.load(tmp_path / "b/checkpoints/step-000006/state.pt", weights_only=True)
    assert state["stream"]["tasks"] == [0, 1, 2, 3, 4]  # a resume reads the same tasks


def test_skip_bad_shards_through_the_cli_is_counted_in_the_log(tmp_path):
    store = make_store(tmp_path / "s")
    shard = store / "wds" / "shard-000001.tar"
    data = bytearray(shard.read_bytes())
    at = data.index(b"0000000002.labels.npy.zst") + 512 + 40  # inside the member's zstd payload
    data[at] ^= 0xFF
    shard.write_bytes(bytes(data))
    args = ["pretrain", "--store", str(store), *TINY, "--steps", "10"]
    r = _cli(args + ["--out", str(tmp_path / "a")])
    assert r.exit_code == 1 and "shard-000001.tar" in r.output and "Traceback" not in r.output, r.output
    r = _cli(args + ["--out", str(tmp_path / "b"), "--skip-bad-shards"])
    assert r.exit_code == 0, r.output
    log = [x for x in _log(tmp_path / "b") if "loss" in x]
    assert sum(x.get("skipped_shards", 0) for x in log) >= 1
    assert 2 not in {i for x in log for i in x["indices"][0]}
    assert "skipped shards 1" in r.output


# -- run directories (train/rundir.py wired into the trainer's start) ---------------------------

def test_a_run_directory_holding_a_run_is_refused_kept_or_moved_aside(store32, tmp_path):
    run = tmp_path / "r"
    base = ["pretrain", "--store", str(store32), "--out", str(run), *TINY]
    assert _cli(base).exit_code == 0
    log_before = (run / "log.jsonl").read_bytes()
    r = _cli(base)
    assert r.exit_code == 1 and f"{run} already holds a run" in r.output and "--resume" in r.output and "--overwrite" in r.output
    assert "Traceback" not in r.output and (run / "log.jsonl").read_bytes() == log_before  # nothing touched
    r = _cli(base + ["--overwrite", "--steps", "2"])
    assert r.exit_code == 0 and "--overwrite: the old run" in r.output, r.output
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("r.old-")]
    assert len(aside) == 1 and (aside[0] / "log.jsonl").read_bytes() == log_before
    assert (aside[0] / "checkpoints" / "step-000003" / "model.safetensors").is_file()
    assert len([x for x in _log(run) if "loss" in x]) == 2 and (run / "checkpoints/latest").read_text().strip() == "step-000002"


def test_resume_refuses_changed_settings_unless_allowed(store32, tmp_path):
    run = tmp_path / "r"
    base = ["pretrain", "--store", str(store32), "--out", str(run), *TINY]
    assert _cli(base + ["--stop-after", "2"]).exit_code == 0
    r = _cli(base + ["--resume", "--lr", "0.001", "--seed", "5"])
    assert r.exit_code == 1 and "lr: 0.0002 -> 0.001" in r.output and "seed: 0 -> 5" in r.output, r.output
    assert "--resume-with-changes lr,seed" in r.output and (run / "checkpoints/latest").read_text().strip() == "step-000002"
    r = _cli(base + ["--resume", "--lr", "0.001", "--resume-with-changes", "nonsense"])
    assert r.exit_code == 1 and "nonsense: unknown field" in r.output and "batch_size" in r.output, r.output
    r = _cli(base + ["--resume", "--lr", "0.001", "--resume-with-changes", "lr"])
    assert r.exit_code == 0 and "--resume-with-changes: lr 0.0002 -> 0.001" in r.output, r.output
    assert (run / "checkpoints/latest").read_text().strip() == "step-000003"
    assert json.loads((run / "run.json").read_text())["history"][-1]["changes"] == {"lr": [0.0002, 0.001]}


def test_resume_drops_a_torn_log_line_and_cleans_temporaries(store32, tmp_path):
    run = tmp_path / "r"
    base = ["pretrain", "--store", str(store32), "--out", str(run), *TINY]
    assert _cli(base + ["--stop-after", "2"]).exit_code == 0
    with (run / "log.jsonl").open("a") as f:
        f.write('{"step": 2, "loss": 3.1, "ta')  # a kill during the write
    (run / "checkpoints" / ".tmp-step-000009").mkdir()
    r = _cli(base + ["--resume"])
    assert r.exit_code == 0, r.output
    assert f"dropped a torn last line of {run / 'log.jsonl'}" in r.output and "removed 1 temporaries" in r.output
    assert not (run / "checkpoints" / ".tmp-step-000009").exists()
    assert [x["step"] for x in _log(run) if "loss" in x] == [0, 1, 2]
