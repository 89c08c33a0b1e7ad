"""The Dask runner on a real 2-worker LocalCluster (shared by this module's tests)."""
from __future__ import annotations

from pathlib import Path

import pytest

from synthvox.engine.config import EngineConfig
from synthvox.pipelines import synth_shards, verify
from synthvox.pipelines.runner import PipelineError, check_workers, local_cluster

from helpers.stores import file_stats, run_cli, run_synth, tree_digest

CFG = EngineConfig(size=8)


@pytest.fixture(scope="module")
def client():
    from distributed import Client

    cluster = local_cluster(2)
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture
def local_render(monkeypatch):
    monkeypatch.delenv("SYNTHVOX_FAULTS", raising=False)


def test_two_dask_workers_give_the_same_bytes_as_in_process(tmp_path, client, local_render):
    a, b = tmp_path / "inproc", tmp_path / "dask"
    synth_shards(a, 14, task_size=4, cfg=CFG, seed=5, formats="wds,zarr", workers=0, progress=False)
    s = synth_shards(b, 14, task_size=4, cfg=CFG, seed=5, formats="wds,zarr", client=client, progress=False)
    assert s["complete"] and s["tasks_rendered"] == 4
    assert tree_digest(a) == tree_digest(b)
    assert len(tree_digest(a)) > 10
    # rerun through Dask: nothing to do, nothing rewritten
    before = file_stats(b, "wds")
    s = synth_shards(b, 14, task_size=4, cfg=CFG, seed=5, formats="wds,zarr", client=client, progress=False)
    assert s["tasks_rendered"] == 0 and file_stats(b, "wds") == before
    # verification on the cluster
    assert verify(b, client=client, rerender=2)["ok"]


def test_a_worker_dying_inside_a_task_is_survived_and_failures_listed(tmp_path, client, local_render, monkeypatch):
    ref, out = tmp_path / "ref", tmp_path / "s"
    synth_shards(ref, 16, task_size=4, cfg=CFG, formats="wds", workers=0, progress=False)
    monkeypatch.setenv("SYNTHVOX_FAULTS", "die:task=1:attempt=0;fail:task=2")
    with pytest.raises(PipelineError, match="task 2") as e:
        synth_shards(out, 16, task_size=4, cfg=CFG, formats="wds", client=client, max_failures=1, progress=False)
    s = e.value.summary
    assert [f["task"] for f in s["failed"]] == [2] and s["tasks_done"] == 3  # task 1 survived its worker's death
    logs = "".join(p.read_text() for p in (out / "logs").iterdir())
    assert '"task": 1' in logs and '"attempt": 1' in logs  # task 1 finished on its second attempt
    monkeypatch.delenv("SYNTHVOX_FAULTS")
    s = synth_shards(out, 16, task_size=4, cfg=CFG, formats="wds", client=client, progress=False)
    assert s["complete"] and s["tasks_rendered"] == 1
    assert verify(out)["ok"]
    assert tree_digest(out) == tree_digest(ref)


def test_worker_check_names_an_unwritable_store(client, tmp_path):
    check_workers(client, tmp_path)  # fine
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PipelineError, match="cannot write"):
        check_workers(client, blocker)


@pytest.mark.slow
def test_cli_with_its_own_cluster_killed_client_resumes(tmp_path):
    out, ref = tmp_path / "s", tmp_path / "ref"
    p = run_synth(out, 16, 2, workers=2, fake=False, faults="kill-client:done=3")
    assert p.returncode == 87, p.stderr
    done = [n for n in (out / "wds").iterdir() if not n.name.startswith(".")]
    assert len(done) >= 3
    before = {n.name: n.stat().st_ino for n in done}
    p = run_cli(["synth-shards", "--out", str(out), "--samples", "16", "--task-size", "2", "--size", "8", "--workers", "2"])
    assert p.returncode == 0, p.stderr
    assert all((out / "wds" / n).stat().st_ino == ino for n, ino in before.items())
    p = run_cli(["synth-shards", "--out", str(ref), "--samples", "16", "--task-size", "2", "--size", "8", "--workers", "0", "--quiet"])
    assert p.returncode == 0, p.stderr
    assert tree_digest(out) == tree_digest(ref)
    p = run_cli(["verify", str(out), "--rerender", "2"])
    assert p.returncode == 0 and "OK" in p.stdout, p.stdout + p.stderr


def test_a_stopped_worker_is_overtaken_by_the_task_timeout_same_bytes(tmp_path, local_render, monkeypatch):
    """Issue 14, item 7: a worker SIGSTOPped mid-task (fault `stop`) does not hang the run: past
    --task-timeout its tasks go to the other worker, the progress line shows the stall, and the
    store equals an undisturbed one."""
    import io
    import os
    import signal

    from distributed import Client

    ref, out = tmp_path / "ref", tmp_path / "s"
    synth_shards(ref, 12, task_size=3, cfg=CFG, formats="wds,zarr", workers=0, progress=False)
    cluster = local_cluster(2, dashboard_address="127.0.0.1:0")
    c = Client(cluster)
    pids = c.run(os.getpid)
    monkeypatch.setenv("SYNTHVOX_FAULTS", "stop:task=1:attempt=0")
    stream = io.StringIO()
    try:
        s = synth_shards(out, 12, task_size=3, cfg=CFG, formats="wds,zarr", client=c, task_timeout=3, stream=stream)
    finally:
        for pid in pids.values():
            os.kill(pid, signal.SIGCONT)  # the stopped worker may go on (it writes the same bytes)
        c.close()
        cluster.close()
    text = stream.getvalue()
    assert s["complete"] and 1 in s["stalled_tasks"], text
    assert "task 1: no result after" in text and "resubmitted to another worker" in text
    assert "stalled (resubmitted)" in text  # the progress line shows it
    assert tree_digest(out) == tree_digest(ref)
    assert verify(out)["ok"]
