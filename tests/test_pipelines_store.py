"""Stores written in-process (workers=0): round trips, layout, resume, growth, refusals, faults, verify."""
from __future__ import annotations

import errno
import io
import json
import os
import re
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

import synthvox.pipelines.task as task_mod
from synthvox.core.atomic import WriteError
from synthvox.engine.config import EngineConfig
from synthvox.pipelines import ZarrReader, info, iter_wds_shard, open_store, synth_shards, verify
from synthvox.pipelines.manifest import StoreMismatch
from synthvox.pipelines.runner import PipelineError

from helpers.render import fake_render
from helpers.stores import file_stats, run_synth, tree_digest

CFG = EngineConfig(size=8)


@pytest.fixture
def render():
    """The renderer of the stores the engine writes (a failing engine fails these tests)."""
    return task_mod.render_numpy


@pytest.fixture
def fake(monkeypatch):
    """The stand-in renderer, which the tests pass as `renderer=` (fast; for layout and fault tests)."""
    monkeypatch.delenv("SYNTHVOX_FAULTS", raising=False)
    return fake_render


def _equal(a: dict, b: dict) -> None:
    assert a["index"] == b["index"]
    assert a["labels"].dtype == b["labels"].dtype and np.array_equal(a["labels"], b["labels"])
    assert a["views"].dtype == np.uint8 and np.array_equal(a["views"], b["views"])
    assert a["meta"] == json.loads(json.dumps(b["meta"]))


def test_round_trip_both_formats_equal_rendered_samples(tmp_path, render):
    out = tmp_path / "s"
    summary = synth_shards(out, 11, task_size=4, cfg=CFG, seed=3, formats="wds,zarr", workers=0, progress=False)
    assert summary["complete"] and summary["tasks"] == 3 and summary["failed"] == []
    st = open_store(out)
    assert st.num_samples == 11 and st.formats == ("wds", "zarr") and st.task_size == 4 and st.seed == 3
    assert st.task_ranges() == [(0, 4), (4, 8), (8, 11)]
    assert [p.name for p in st.wds_shards()] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert st.engine_config == CFG
    bank = task_mod._bank(None)
    seen = []
    zr = ZarrReader(out)
    assert len(zr) == 11
    for shard, (a, b) in zip(st.wds_shards(), st.task_ranges()):
        samples = list(iter_wds_shard(shard))
        assert [s["index"] for s in samples] == list(range(a, b))
        for s in samples:
            expected = render(CFG, 3, s["index"], bank)
            _equal(s, expected)
            _equal(zr[s["index"]], expected)
            seen.append(s["index"])
    assert seen == list(range(11))
    import pickle

    clone = pickle.loads(pickle.dumps(zr))  # what a spawned DataLoader worker gets: reopens lazily
    assert clone._arrays is None
    _equal(clone[5], zr[5])
    rng = zr.read_range(4, 8)
    assert rng["labels"].shape == (4, 8, 8, 8) and rng["views"].shape == (4, 2, 8, 8, 8)


def test_tar_has_fixed_metadata_and_names(tmp_path, fake):
    out = tmp_path / "s"
    synth_shards(out, 3, task_size=3, cfg=CFG, workers=0, progress=False, renderer=fake_render)
    with tarfile.open(out / "wds" / "shard-000000.tar") as tar:
        members = tar.getmembers()
    assert [m.name for m in members[:3]] == ["0000000000.labels.npy.zst", "0000000000.views.npy.zst", "0000000000.meta.json"]
    assert len(members) == 9
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" and m.mode == 0o644 for m in members)
    # the shard is readable by plain webdataset-style code too: the key has no dots
    assert {m.name.split(".", 1)[0] for m in members} == {"0000000000", "0000000001", "0000000002"}


def test_same_arguments_give_identical_bytes_and_rerun_is_a_noop(tmp_path, fake):
    a, b = tmp_path / "a", tmp_path / "b"
    synth_shards(a, 10, task_size=4, cfg=CFG, formats="wds,zarr", workers=0, progress=False, renderer=fake_render)
    synth_shards(b, 10, task_size=4, cfg=CFG, formats="wds,zarr", workers=0, progress=False, renderer=fake_render)
    assert tree_digest(a) == tree_digest(b)
    before = file_stats(a, "wds") | file_stats(a, "zarr")
    s = synth_shards(a, 10, task_size=4, cfg=CFG, formats="wds,zarr", workers=0, progress=False, renderer=fake_render)
    assert s["tasks_skipped"] == 3 and s["tasks_rendered"] == 0
    assert file_stats(a, "wds") | file_stats(a, "zarr") == before
    # another seed gives other bytes
    c = tmp_path / "c"
    synth_shards(c, 10, task_size=4, cfg=CFG, seed=1, formats="wds,zarr", workers=0, progress=False, renderer=fake_render)
    assert tree_digest(c)["wds/shard-000000.tar"] != tree_digest(a)["wds/shard-000000.tar"]


def test_growing_appends_tasks_and_equals_a_fresh_store(tmp_path, fake):
    a, b = tmp_path / "a", tmp_path / "b"
    synth_shards(a, 6, task_size=4, cfg=CFG, formats="wds,zarr", workers=0, progress=False, renderer=fake_render)
    kept = file_stats(a, "wds")["wds/shard-000000.tar"]
    # task size: the store's
    s = synth_shards(a, 13, cfg=CFG, formats="wds,zarr", workers=0, progress=False, renderer=fake_render)
    assert s["tasks_skipped"] == 1 and s["tasks_rendered"] == 3  # the short last task is redone
    assert file_stats(a, "wds")["wds/shard-000000.tar"] == kept
    synth_shards(b, 13, task_size=4, cfg=CFG, formats="wds,zarr", workers=0, progress=False, renderer=fake_render)
    assert tree_digest(a) == tree_digest(b)
    assert open_store(a).num_samples == 13 and len(ZarrReader(a)) == 13


@pytest.mark.parametrize("change, needle", [
    ({"task_size": 5}, "task_size"),
    ({"seed": 9}, "seed"),
    ({"cfg": EngineConfig(size=16)}, "engine_config_hash"),
    ({"formats": "wds,zarr"}, "formats"),
    ({"samples": 4}, "only grows"),
])
def test_mismatched_store_is_refused_with_a_message(tmp_path, fake, change, needle):
    out = tmp_path / "s"
    synth_shards(out, 8, task_size=4, cfg=CFG, workers=0, progress=False, renderer=fake_render)
    kw = {"task_size": 4, "cfg": CFG, "seed": 0, "formats": "wds", "samples": 8} | change
    samples = kw.pop("samples")
    with pytest.raises(StoreMismatch, match=needle) as e:
        synth_shards(out, samples, workers=0, progress=False, renderer=fake_render, **kw)
    assert "manifest.json" in str(e.value)


def test_other_schema_version_is_refused_naming_the_path(tmp_path, fake):
    from synthvox.engine.schema import SchemaError

    out = tmp_path / "s"
    synth_shards(out, 2, task_size=2, cfg=CFG, workers=0, progress=False, renderer=fake_render)
    m = json.loads((out / "manifest.json").read_text())
    m["schema_version"] = 999
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(SchemaError, match="manifest.json"):
        open_store(out)


def test_deterministic_failure_is_reported_not_retried_forever(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("SYNTHVOX_FAULTS", "fail:task=1")
    out = tmp_path / "s"
    with pytest.raises(PipelineError, match="task 1") as e:
        synth_shards(out, 12, task_size=4, cfg=CFG, workers=0, max_failures=1, progress=False, renderer=fake_render)
    s = e.value.summary
    assert [f["task"] for f in s["failed"]] == [1] and s["tasks_done"] == 2 and not s["complete"]
    assert "samples [4, 8)" in str(e.value)
    assert not open_store(out).complete
    # fixed: rerunning finishes the store, rendering only the failed task
    monkeypatch.delenv("SYNTHVOX_FAULTS")
    s2 = synth_shards(out, 12, task_size=4, cfg=CFG, workers=0, progress=False, renderer=fake_render)
    assert s2["tasks_rendered"] == 1 and s2["complete"]


def test_too_many_failures_stop_the_run(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("SYNTHVOX_FAULTS", "fail:task=0;fail:task=1")
    with pytest.raises(PipelineError, match="max-failures 0") as e:
        synth_shards(tmp_path / "s", 16, task_size=4, cfg=CFG, workers=0, progress=False, renderer=fake_render)
    assert e.value.summary["tasks_done"] == 0  # stopped at the first failure


def test_full_disk_gives_a_clear_error_and_no_half_file(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("SYNTHVOX_FAULTS", "enospc:task=1")
    out = tmp_path / "s"
    with pytest.raises(PipelineError) as e:
        synth_shards(out, 12, task_size=4, cfg=CFG, formats="wds,zarr", workers=0, progress=False, renderer=fake_render)
    msg = str(e.value)
    assert "disk is full" in msg and "shard-000001.tar" in msg and "rerun" in msg
    assert not (out / "wds" / "shard-000001.tar").exists()
    assert not any(n.endswith(".tmp") for n in os.listdir(out / "wds"))
    assert sorted(os.listdir(out / "wds")) == ["shard-000000.tar"]  # the run stopped at once


def test_store_path_not_writable(tmp_path, fake):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError, match="not writable|cannot write|Not a directory"):
        synth_shards(blocker / "store", 4, task_size=2, cfg=CFG, workers=0, progress=False, renderer=fake_render)
    if os.geteuid() != 0:  # root ignores permission bits
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            with pytest.raises(WriteError, match="not writable"):
                synth_shards(ro / "store", 4, task_size=2, cfg=CFG, workers=0, progress=False, renderer=fake_render)
        finally:
            ro.chmod(0o755)


def test_verify_names_a_truncated_tar_and_a_flipped_zarr_chunk(tmp_path, fake):
    out = tmp_path / "s"
    synth_shards(out, 12, task_size=4, cfg=CFG, formats="wds,zarr", workers=0, progress=False, renderer=fake_render)
    ok = verify(out, rerender=3, renderer=fake_render)
    assert ok["ok"] and ok["decoded"] == 12 and ok["rerendered"] == 3
    assert ok["comparison"] == ["exact (same device type)"]
    tar = out / "wds" / "shard-000001.tar"
    tar.write_bytes(tar.read_bytes()[:-3000])
    chunk = out / "zarr" / "views" / "c" / "2" / "0" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[100] ^= 0xFF
    chunk.write_bytes(bytes(data))
    r = verify(out)
    assert not r["ok"]
    assert r["bad_files"] == ["wds/shard-000001.tar", "zarr/views/c/2/0/0/0/0"]
    quick = verify(out, quick=True)  # sizes only: the truncation shows, the flipped byte may not
    assert "wds/shard-000001.tar" in quick["bad_files"]
    # resume with --reverify re-renders both and the store verifies again
    s = synth_shards(out, 12, task_size=4, cfg=CFG, formats="wds,zarr", workers=0, progress=False, renderer=fake_render,
                     reverify=True)
    assert s["tasks_rendered"] == 2
    assert verify(out)["ok"]


def test_verify_rerender_detects_content_that_does_not_match_the_config(tmp_path, fake, monkeypatch):
    out = tmp_path / "s"
    synth_shards(out, 4, task_size=4, cfg=CFG, workers=0, progress=False, renderer=fake_render)

    def other(cfg, seed, index, bank):
        s = fake_render(cfg, seed, index, bank)
        s["views"] = s["views"] // 2
        return s

    r = verify(out, rerender=2, renderer=other)
    assert not r["ok"] and "views differ" in r["problems"][0]["problem"]


def test_killed_client_resumes_without_rewriting_complete_shards(tmp_path, fake):
    out, ref = tmp_path / "s", tmp_path / "ref"
    # workers=0: the injected death kills the client process itself, in the middle of task 3
    p = run_synth(out, 20, 4, formats="wds,zarr", faults="die:task=3")
    assert p.returncode == 86, p.stderr
    names = sorted(os.listdir(out / "wds"))
    assert [n for n in names if not n.startswith(".")] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert any(n.startswith(".shard-000003.tar") and n.endswith(".tmp") for n in names)  # the half-written one is hidden
    before = {k: v for k, v in (file_stats(out, "wds") | file_stats(out, "zarr")).items() if ".tmp" not in k}
    p = run_synth(out, 20, 4, formats="wds,zarr")
    assert p.returncode == 0, p.stderr
    assert "'tasks_skipped': 3" in p.stdout
    after = file_stats(out, "wds") | file_stats(out, "zarr")
    for k, v in before.items():
        if "/c/" in k or k.endswith(".tar"):
            assert after[k] == v, f"{k} was rewritten"
    synth_shards(ref, 20, task_size=4, cfg=CFG, formats="wds,zarr", workers=0, progress=False, renderer=fake_render)
    assert tree_digest(out) == tree_digest(ref)  # temporaries gone, bytes equal to an uninterrupted run


def test_info_summarises_the_store(tmp_path, fake):
    out = tmp_path / "s"
    synth_shards(out, 6, task_size=4, cfg=CFG, formats="wds,zarr", workers=0, progress=False, renderer=fake_render)
    d = info(out)
    assert d["samples"] == 6 and d["tasks"] == 2 and d["complete"] and d["formats"] == ["wds", "zarr"]
    assert d["bytes_per_sample"]["wds"] > 0 and d["bytes_per_sample"]["zarr"] > 0
    assert d["device_types"][0]["tasks"] == 2 and d["device_types"][0]["device_type"]["kind"] == "cpu"
    assert len(d["engine_config_hash"]) == 64


def test_dry_run_for_ten_million_samples_is_fast(tmp_path):
    from synthvox.pipelines.plan import format_plan, plan

    t0 = time.perf_counter()
    p = plan(tmp_path / "big", 10_000_000, 256, EngineConfig(), ("wds", "zarr"), calibrate=False)
    assert time.perf_counter() - t0 < 1.0
    assert p["tasks"] == 39_063 and p["last_task_samples"] == 10_000_000 - 39_062 * 256
    assert "39,063" in format_plan(p)


def test_shards_stream_through_webdataset_with_decode_wds_sample(tmp_path, fake):
    import webdataset as wds

    from synthvox.pipelines import decode_wds_sample

    out = tmp_path / "s"
    synth_shards(out, 7, task_size=3, cfg=CFG, workers=0, progress=False, renderer=fake_render)
    urls = [str(p) for p in open_store(out).wds_shards()]
    ds = wds.WebDataset(urls, shardshuffle=False, nodesplitter=wds.split_by_node).map(decode_wds_sample)
    got = list(ds)
    assert [s["index"] for s in got] == list(range(7))
    for s in got:
        _equal(s, fake_render(CFG, 0, s["index"], None))


def test_progress_lines_and_tty_bar():
    from synthvox.pipelines.progress import Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    log = io.StringIO()
    p = Progress(100, done=10, stream=log, interval=0.0)
    p.update(30)
    p.update(failures=1, force=True)
    p.close()
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("progress: 40/100 samples (40.0%)") and "samples/s" in lines[0] and "ETA" in lines[0]
    assert "1 failed" in lines[-1]
    tty = Tty()
    p = Progress(10, stream=tty)
    p.update(5, force=True)
    p.close()
    assert tty.getvalue().startswith("\r[###############---------------] 5/10") and tty.getvalue().endswith("\n")


def test_full_disk_in_a_zarr_only_store_names_the_shard(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("SYNTHVOX_FAULTS", "enospc:task=0")
    out = tmp_path / "s"
    with pytest.raises(PipelineError, match=r"disk is full") as e:
        synth_shards(out, 4, task_size=4, cfg=CFG, formats="zarr", workers=0, progress=False, renderer=fake_render)
    assert "zarr/labels/c/0/0/0/0" in str(e.value)
    assert not (out / "zarr" / "labels" / "c").exists()
    assert [n for n in os.listdir(out / "zarr") if n.startswith(".tmp")] == []


def test_second_client_on_a_store_is_refused_naming_the_first(tmp_path: Path, render):
    """While one client holds the store, another stops at once (it would clean the first one's
    temporaries); once the first is gone the same command runs and resumes."""
    from synthvox.pipelines.lock import StoreBusy, store_lock

    store = tmp_path / "s"
    store.mkdir()
    with store_lock(store) as lock_path:
        assert str(os.getpid()) in lock_path.read_text()
        with pytest.raises(StoreBusy, match=rf"in use by another synth-shards client \(pid {os.getpid()} on "):
            synth_shards(store, 2, task_size=1, cfg=CFG, workers=0, progress=False)
        assert not (store / "records").exists() or not any((store / "records").iterdir())
    s = synth_shards(store, 2, task_size=1, cfg=CFG, workers=0, progress=False)
    assert s["complete"] and s["tasks_rendered"] == 2


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def slow_render(cfg, seed, index, bank):
    """The stand-in renderer, a little slower (so a task spans several progress updates)."""
    time.sleep(0.25)
    return fake_render(cfg, seed, index, bank)


def test_progress_moves_within_a_task(tmp_path):
    """Issue 15, item 6: a one-task run shows samples done before the task ends."""
    stream = _Tty()
    synth_shards(tmp_path / "s", 6, task_size=6, cfg=CFG, workers=0, stream=stream, renderer=slow_render)
    seen = {int(m) for m in re.findall(r"\] (\d+)/6 samples", stream.getvalue())}
    assert {2, 3, 4} & seen and 6 in seen, stream.getvalue()
