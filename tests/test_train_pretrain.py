"""The trainer on tiny stores: exact resume, two-process gloo DDP, SIGTERM, clear errors."""
from __future__ import annotations

import json
import os
import signal
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from synthvox.train.data import DataError
from synthvox.train.pretrain import lr_at, pretrain

from helpers.procs import FORK, child as _child, free_port as _free_port, reap as _reap, run_ranks
from helpers.stores import make_store
from helpers.train import tiny_train_config

QUIET = lambda msg: None  # noqa: E731


@pytest.fixture(scope="module")
def store32(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("store") / "s32")


def _log(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip()]


def _in_fork(fn, args, timeout: float):
    """Run fn(*args) in a forked process; (exitcode, result or error text). Never hangs past `timeout`."""
    q = FORK.Queue()
    p = FORK.Process(target=_child, args=(q, 0, fn) + tuple(args))
    p.start()
    try:
        _, kind, value = q.get(timeout=timeout)
    except Exception:
        pytest.fail(f"{fn.__name__} did not finish within {timeout} s (a hang)")
    finally:
        _reap([p])
    return kind, value


def test_lr_schedule():
    cfg = tiny_train_config(steps=10, warmup_steps=2, lr=1.0, min_lr_ratio=0.1)
    assert [round(lr_at(s, cfg), 3) for s in (0, 1, 2, 6, 10)] == [0.5, 1.0, 1.0, 0.55, 0.1]


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_is_bit_exact(store32, tmp_path, workers):
    """N steps straight == N/2, resume, N/2: the same weights bit for bit and the same samples."""
    cfg = tiny_train_config(steps=5, workers=workers)
    a = pretrain(tmp_path / "a", cfg, store32, log=QUIET)
    b1 = pretrain(tmp_path / "b", cfg, store32, stop_after=3, log=QUIET)  # odd split: tests the worker rotation
    b2 = pretrain(tmp_path / "b", cfg, store32, resume=True, log=QUIET)
    assert b1["steps"] == 3 and b2["start"] == 3 and b2["steps"] == 5
    assert a["weights_sha256"] == b2["weights_sha256"]
    ia = [r["indices"] for r in _log(tmp_path / "a")]
    ib = [r["indices"] for r in _log(tmp_path / "b")]
    assert ia == ib and len(ia) == 5
    from safetensors.torch import load_file

    wa = load_file(str(tmp_path / "a/checkpoints/step-000005/model.safetensors"))
    wb = load_file(str(tmp_path / "b/checkpoints/step-000005/model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # resuming with another worker count is refused unless --elastic
    other = 2 if workers == 0 else 0
    with pytest.raises(DataError, match="--elastic"):
        pretrain(tmp_path / "b", tiny_train_config(steps=7, workers=other), store32, resume=True, log=QUIET)
    c = pretrain(tmp_path / "b", tiny_train_config(steps=6, workers=other), store32, resume=True, elastic=True, log=QUIET)
    assert c["start"] == 5 and c["steps"] == 6


def test_zarr_source_and_validation(store32, tmp_path):
    cfg = tiny_train_config(steps=3, format="zarr", val_samples=4, val_every=2, workers=2)
    pretrain(tmp_path / "z", cfg, store32, log=QUIET)
    log = _log(tmp_path / "z")
    seen = {i for r in log if "indices" in r for rank in r["indices"] for i in rank}
    assert seen and max(seen) < 12  # the last 4 indices are held out
    vals = [r for r in log if "val_loss" in r]
    assert [r["step"] for r in vals] == [1, 2] and all(np.isfinite(r["val_loss"]) for r in vals)
    rec = json.loads((tmp_path / "z/checkpoints/step-000003/record.json").read_text())
    assert rec["store_manifest_hash"] and rec["engine_config_hash"] and rec["normalisation"]["kind"] == "minmax"


def _ddp_rank(rank: int, world: int, port: int, run: str, store: str, steps: int, workers: int) -> dict:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    cfg = tiny_train_config(steps=steps, workers=workers, ckpt_every=steps, dist_timeout_s=60, **{"augment.enabled": False})
    try:
        return pretrain(run, cfg, store, device="cpu", log=QUIET)
    finally:
        torch.distributed.destroy_process_group()


def _run_ddp(run: Path, store: Path, steps: int, workers: int, timeout: float) -> list[dict]:
    return run_ranks(_ddp_rank, 2, (str(run), str(store), steps, workers), timeout)


def _check_ddp(run: Path, res: list[dict], steps: int) -> list[dict]:
    assert res[0]["params_sha256"] == res[1]["params_sha256"]  # DDP keeps the replicas equal (model and heads)
    log = [r for r in _log(run) if "indices" in r]
    assert len(log) == steps and all(len(r["indices"]) == 2 for r in log)
    # one epoch = 8 shards x 2 samples split over 2 ranks: 8 steps of one sample per rank
    first = log[: min(8, steps)]
    r0 = [i for r in first for i in r["indices"][0]]
    r1 = [i for r in first for i in r["indices"][1]]
    assert not set(r0) & set(r1) and len(set(r0)) == len(r0)
    assert (run / "checkpoints" / "latest").read_text().strip() == f"step-{steps:06d}"
    return log


def test_ddp_two_processes_short(store32, tmp_path):
    """Two gloo ranks: disjoint samples, equal weights, one checkpoint by rank 0."""
    res = _run_ddp(tmp_path / "ddp", store32, steps=4, workers=0, timeout=120)
    _check_ddp(tmp_path / "ddp", res, 4)


@pytest.mark.slow
def test_ddp_two_processes_learns(store32, tmp_path):
    """40 steps on two ranks with two workers each: the loss falls below 0.9 x its start."""
    res = _run_ddp(tmp_path / "ddp", store32, steps=40, workers=2, timeout=600)
    log = _check_ddp(tmp_path / "ddp", res, 40)
    loss = [r["loss"] for r in log]
    assert np.mean(loss[-10:]) < 0.9 * np.mean(loss[:10]), loss


def test_sigterm_saves_once_and_exits(store32, tmp_path):
    run = tmp_path / "sig"
    q = FORK.Queue()

    def train():
        torch.set_num_threads(1)
        return pretrain(run, tiny_train_config(steps=10_000, ckpt_every=10_000), store32, log=QUIET)

    p = FORK.Process(target=_child, args=(q, 0, train))
    p.start()
    t0 = time.time()
    while not (run / "log.jsonl").exists() or len(_log(run)) < 2:
        if time.time() - t0 > 120 or not p.is_alive():
            _reap([p])
            pytest.fail("training did not start")
        time.sleep(0.2)
    os.kill(p.pid, signal.SIGTERM)
    try:
        _, kind, summary = q.get(timeout=30)  # the issue: exit cleanly within 30 s
    finally:
        _reap([p])
    assert kind == "ok" and p.exitcode == 0 and summary["stopped"], summary
    ckpts = sorted((run / "checkpoints").glob("step-*"))
    assert len(ckpts) == 1 and ckpts[0].name == f"step-{summary['steps']:06d}"
    assert len(_log(run)) == summary["steps"]


def test_clear_errors(store32, tmp_path):
    from synthvox.engine.schema import SchemaError

    with pytest.raises(ValueError, match="does not fit"):
        pretrain(tmp_path / "r", tiny_train_config(crop=64), store32, log=QUIET)
    with pytest.raises(DataError, match="at least 16"):
        pretrain(tmp_path / "r", tiny_train_config(workers=16), store32, log=QUIET)
    # another schema version
    other = tmp_path / "other"
    other.mkdir()
    for f in ("manifest.json",):
        m = json.loads((store32 / f).read_text())
        m["schema_version"] = 999
        (other / f).write_text(json.dumps(m))
    with pytest.raises(SchemaError, match="schema version 999"):
        pretrain(tmp_path / "r", tiny_train_config(), other, log=QUIET)


def test_corrupt_shard_is_a_clear_error_not_a_hang(tmp_path):
    store = make_store(tmp_path / "s", samples=4, task_size=1, size=16)
    shard = store / "wds" / "shard-000001.tar"
    shard.write_bytes(shard.read_bytes()[:3000])

    def run():
        torch.set_num_threads(1)
        return pretrain(tmp_path / "r", tiny_train_config(steps=8, workers=2, crop=None), store, log=QUIET)

    kind, value = _in_fork(run, (), timeout=120)
    assert kind == "err" and "shard-000001.tar" in value and "damaged" in value, value


def test_cli_pretrain_and_plot_log(store32, tmp_path):
    from click.testing import CliRunner

    from synthvox.cli.main import main
    from synthvox.cli.train_cmds import plot_log
    from synthvox.cli.train_cmds import pretrain as cmd

    run = tmp_path / "cli"
    r = CliRunner().invoke(cmd, ["--store", str(store32), "--out", str(run), "--steps", "2", "--crop", "16",
                                 "--widths", "4,8,16", "--workers", "0", "--n-voxels", "16"])
    assert r.exit_code == 0, r.output
    assert (run / "checkpoints" / "step-000002" / "model.safetensors").is_file()
    r = CliRunner().invoke(plot_log, [str(run)])
    assert r.exit_code == 0, r.output
    assert (run / "loss.png").read_bytes()[:4] == b"\x89PNG"
    # errors become messages in the group (cli/main.py), so the refusal goes through `synthvox`
    r = CliRunner().invoke(main, ["pretrain", "--store", str(store32), "--out", str(run), "--crop", "10", "--widths", "4,8,16"])
    assert r.exit_code != 0 and "divisible by 4" in r.output


def test_engine_source_renders_on_the_fly(tmp_path):
    from synthvox.engine.config import EngineConfig

    cfg = tiny_train_config(steps=2, source="engine", crop=None, val_samples=1, val_every=2)
    s = pretrain(tmp_path / "e", cfg, None, engine_cfg=EngineConfig(size=16), log=QUIET)
    log = _log(tmp_path / "e")
    assert s["steps"] == 2 and [r["indices"] for r in log if "indices" in r] == [[[0]], [[1]]]
    assert all(r["render_s"] > 0 for r in log if "indices" in r) and any("val_loss" in r for r in log)
    rec = json.loads((tmp_path / "e/checkpoints/step-000002/record.json").read_text())
    assert rec["engine_config_hash"] and rec["store_manifest_hash"] is None


def test_no_module_in_train_shadows_a_top_level_name():
    """train/pretrain.py run by path puts train/ first on sys.path."""
    import importlib.util
    import sys

    train_dir = Path(__file__).resolve().parents[1] / "train"
    names = [p.stem for p in train_dir.glob("*.py") if p.stem != "__init__"] + [p.name for p in train_dir.iterdir() if (p / "__init__.py").exists()]
    saved = list(sys.path)
    try:
        sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != train_dir]
        clashes = [n for n in names if importlib.util.find_spec(n) is not None]
    finally:
        sys.path[:] = saved
    assert not clashes, f"train/ modules shadow top-level names: {clashes}"
    assert not set(names) & set(sys.stdlib_module_names)


@pytest.mark.slow
def test_torchrun_by_path_two_processes(store32, tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc_per_node=2", "--master_port", str(_free_port()), "train/pretrain.py",
           "--store", str(store32), "--out", str(tmp_path / "tr"), "--steps", "2", "--crop", "16",
           "--widths", "4,8,16", "--workers", "0", "--n-voxels", "16", "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    log = _log(tmp_path / "tr")
    assert len(log) == 2 and all(len(x["indices"]) == 2 for x in log)
    assert (tmp_path / "tr/checkpoints/latest").read_text().strip() == "step-000002"
