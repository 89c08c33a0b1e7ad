"""Issue 14 on the read side and the store's edges: each numbered case damages a store (or
stops a worker) and checks the message, the exit status and that nothing was trained or
written that should not be."""
from __future__ import annotations

import io
import json
import logging
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from synthvox.engine.config import EngineConfig
from synthvox.pipelines import verify
from synthvox.pipelines.errors import DamagedShard, IncompleteStore, ManifestError
from synthvox.pipelines.info import format_info, info
from synthvox.pipelines.layout import zarr_shard_key
from synthvox.pipelines.runner import synth_shards
from synthvox.pipelines.store import open_store
from synthvox.pipelines.zarr_io import ZarrReader
from synthvox.train.data import StoreSource, UnitStream, make_loader
from synthvox.train.pretrain import pretrain

from helpers.render import fake_render
from helpers.stores import make_store, run_cli, run_synth, tree_digest
from helpers.train import tiny_train_config

QUIET = lambda msg: None  # noqa: E731
FIX = "synthvox verify"


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """8 samples of 16^3 in 4 tasks of 2, both formats (the stand-in renderer)."""
    return make_store(tmp_path_factory.mktemp("tpl") / "s", samples=8, task_size=2, size=16)


@pytest.fixture
def store(template, tmp_path) -> Path:
    """A fresh copy of the template to damage."""
    return Path(shutil.copytree(template, tmp_path / "s"))


def _trained(run: Path) -> bool:
    return (run / "checkpoints").is_dir() and any((run / "checkpoints").glob("step-*"))


def _cli(args: list[str]):
    from click.testing import CliRunner

    from synthvox.cli.main import main

    return CliRunner().invoke(main, args)


def _flip(path: Path, offset_from_end: int) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


# -- 2: a deleted Zarr shard --------------------------------------------------------------

def test_2_a_deleted_zarr_shard_stops_the_trainer_before_any_step(store, tmp_path):
    shard = store / zarr_shard_key("labels", 1)
    shard.unlink()
    with pytest.raises(DamagedShard, match=rf"{shard}: missing; run `{FIX} {store}`"):
        StoreSource(store, "zarr")
    with pytest.raises(DamagedShard, match="missing"):
        ZarrReader(store)[2]  # a reader opened by itself: never fill values
    run = tmp_path / "run"
    r = _cli(["pretrain", "--store", str(store), "--out", str(run), "--format", "zarr", "--steps", "2",
              "--widths", "4,8,16", "--workers", "0", "--n-voxels", "16"])
    assert r.exit_code == 1 and str(shard) in r.output and FIX in r.output and "Traceback" not in r.output, r.output
    assert not _trained(run)


# -- 3: a deleted tar shard, a tar cut between two samples ---------------------------------

def test_3_a_deleted_or_shortened_tar_is_never_silently_fewer_samples(store, tmp_path):
    gone = store / "wds" / "shard-000002.tar"
    gone.unlink()
    with pytest.raises(DamagedShard, match=rf"shard-000002.tar: missing; run `{FIX}"):
        StoreSource(store, "wds")
    with pytest.raises(DamagedShard):
        pretrain(tmp_path / "r", tiny_train_config(steps=2, crop=None), store, log=QUIET)
    assert not _trained(tmp_path / "r")
    # a tar cut exactly after its first sample (a valid tar, one sample short)
    shard = store / "wds" / "shard-000001.tar"
    with tarfile.open(shard) as t:
        first = [(m, t.extractfile(m).read()) for m in t.getmembers() if m.name.startswith("0000000002.")]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for m, data in first:
            t.addfile(m, io.BytesIO(data))
    shard.write_bytes(buf.getvalue())
    with pytest.raises(DamagedShard, match="truncated or damaged"):
        open_store(store).usable_tasks("wds", allow_incomplete=True)
    # even where a record was made to agree with the short file, the reader counts the samples
    rec_file = next((store / "records").glob("block-*.jsonl"))
    lines = [json.loads(x) for x in rec_file.read_text().splitlines()]
    lines[1]["files"]["wds/shard-000001.tar"]["bytes"] = shard.stat().st_size
    rec_file.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    st = open_store(store)
    with pytest.raises(DamagedShard, match=r"holds samples \[2, 3\), expected \[2, 4\) \(truncated\)"):
        list(st.iter_wds_task(1))


# -- 4: a store whose synth-shards was killed ----------------------------------------------

def test_4_an_incomplete_store_is_refused_unless_allowed_and_the_stream_does_not_shift(tmp_path, caplog):
    out = tmp_path / "s"
    p = run_synth(out, 16, 2, formats="wds,zarr", faults="kill-client:done=3")
    assert p.returncode == 87, p.stderr[-2000:]
    with pytest.raises(IncompleteStore, match=r"incomplete: 5 of 8 tasks have no record.*--allow-incomplete"):
        StoreSource(out, "wds")
    with pytest.raises(IncompleteStore):
        pretrain(tmp_path / "r", tiny_train_config(steps=2, crop=None), out, log=QUIET)
    assert not _trained(tmp_path / "r")
    for fmt in ("wds", "zarr"):
        with caplog.at_level(logging.WARNING, logger="synthvox.pipelines"):
            src = StoreSource(out, fmt, allow_incomplete=True)
        assert "using the 3 finished of 8 tasks (--allow-incomplete)" in caplog.text
        assert src.tasks == [0, 1, 2]
        items = [next(it) for it in [iter(UnitStream(src, seed=3, rank=0, world=1, workers=1))] for _ in range(12)]
        assert {i["index"] for i in items} <= set(range(6))  # the finished tasks' samples only
        # finish the store, then resume after 6 items: the same unit list, so no sample of this
        # epoch comes again; with tasks= (the first run's), exactly the straight run's samples
        straight, pos = items, items[5]["pos"]
    p = run_synth(out, 16, 2, formats="wds,zarr")
    assert p.returncode == 0, p.stderr[-2000:]
    for fmt in ("wds", "zarr"):
        src0 = StoreSource(out, fmt, tasks=[0, 1, 2])
        first = [next(it) for it in [iter(UnitStream(src0, seed=3, rank=0, world=1, workers=1))] for _ in range(6)]
        resumed = iter(UnitStream(StoreSource(out, fmt, tasks=[0, 1, 2]), 3, 0, 1, 1, positions=[first[-1]["pos"][1:]]))
        straight = [next(it) for it in [iter(UnitStream(src0, seed=3, rank=0, world=1, workers=1))] for _ in range(12)]
        assert [next(resumed)["index"] for _ in range(6)] == [s["index"] for s in straight[6:]]
        grown = iter(UnitStream(StoreSource(out, fmt), 3, 0, 1, 1, positions=[first[-1]["pos"][1:]]))
        epoch0 = [s for s in (next(grown) for _ in range(10)) if s["pos"][1] == 0]
        assert not {s["index"] for s in epoch0} & {s["index"] for s in first}


# -- 6: a labels store's meta carries a checksum --------------------------------------------

def test_6_a_flipped_seed_in_a_labels_store_is_seen_by_readers_and_verify_quick(tmp_path):
    out = tmp_path / "lab"
    synth_shards(out, 4, task_size=2, cfg=EngineConfig(size=8), workers=0, progress=False, content="labels",
                 formats="wds")
    shard = out / "wds" / "shard-000001.tar"
    data = shard.read_bytes()
    key = b'"appearance_noise_seeds":['
    at = data.index(key) + len(key)
    digit = data[at:at + 1]
    shard.write_bytes(data[:at] + (b"1" if digit != b"1" else b"2") + data[at + 1:])  # same size
    src = StoreSource(out, "wds")  # sizes match: opens
    with pytest.raises(DamagedShard, match=r"shard-000001.tar: .*checksum"):
        list(src.read_unit(src.units[1]))
    r = verify(out, quick=True)
    assert not r["ok"] and any("checksum" in p["problem"] for p in r["problems"]), r["problems"]
    r = _cli(["verify", "--quick", str(out)])
    assert r.exit_code == 1 and "shard-000001.tar" in r.output and "checksum" in r.output


# -- 8: the skeleton is written atomically or repaired on rerun -----------------------------

def test_8_a_skeleton_cut_by_a_full_disk_is_repaired_by_the_rerun(tmp_path, monkeypatch):
    import errno

    import synthvox.pipelines.zarr_io as zio

    clean = make_store(tmp_path / "clean", samples=4, task_size=2, size=8)
    out = tmp_path / "s"
    real = zio.write_bytes
    calls = []

    def full_disk(path, data):
        calls.append(path)
        if len(calls) == 2:  # the group's metadata is written, the first array's is not
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(zio, "write_bytes", full_disk)
    with pytest.raises(OSError, match="No space left"):
        make_store(out, samples=4, task_size=2, size=8)
    monkeypatch.setattr(zio, "write_bytes", real)
    assert (out / "zarr" / "zarr.json").is_file() and not (out / "zarr" / "labels" / "zarr.json").exists()
    make_store(out, samples=4, task_size=2, size=8)  # the same command: repairs, then renders
    assert tree_digest(out) == tree_digest(clean)
    # a torn metadata file (written by an older, non-atomic writer) is repaired as well
    meta = out / "zarr" / "views" / "zarr.json"
    meta.write_bytes(meta.read_bytes()[:40])
    make_store(out, samples=4, task_size=2, size=8)
    assert tree_digest(out) == tree_digest(clean)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no scratch directory left


# -- 9: a Zarr shard of empty label maps ----------------------------------------------------

def empty_labels_render(cfg, seed, index, bank):
    """The stand-in renderer with empty label maps for samples 2 and 3 (one whole Zarr shard)."""
    s = fake_render(cfg, seed, index, bank)
    if index in (2, 3):
        s["labels"] = np.zeros_like(s["labels"])
    return s


def test_9_a_shard_of_empty_label_maps_is_written_like_any_other(tmp_path):
    out = tmp_path / "s"
    s = synth_shards(out, 6, task_size=2, cfg=EngineConfig(size=8), workers=0, formats="zarr", progress=False,
                     renderer=empty_labels_render)
    assert s["complete"]
    assert (out / zarr_shard_key("labels", 1)).is_file()
    r = ZarrReader(out)
    assert not r[2]["labels"].any() and r[4]["labels"].any()
    assert verify(out)["ok"]


# -- 11: a damaged tar member or Zarr chunk during training ----------------------------------

def test_11_a_damaged_member_stops_training_naming_the_file_or_is_skipped_and_counted(store, tmp_path, caplog):
    shard = store / "wds" / "shard-000001.tar"
    data = bytearray(shard.read_bytes())
    at = data.index(b"0000000002.labels.npy.zst") + 512 + 40  # inside the member's zstd payload
    data[at] ^= 0xFF
    shard.write_bytes(bytes(data))
    run = tmp_path / "run"
    with pytest.raises(DamagedShard, match=rf"shard-000001.tar: damaged.*{FIX}"):
        pretrain(run, tiny_train_config(steps=8, crop=None), store, log=QUIET)
    # through loader workers: the same error, in the main process, without the worker's traceback
    src = StoreSource(store, "wds")
    batches = iter(make_loader(UnitStream(src, 0, 0, 1, 2), batch_size=1, workers=2))
    with pytest.raises(DamagedShard) as e:
        for _ in range(8):
            next(batches)
    assert "shard-000001.tar" in str(e.value) and "Traceback" not in str(e.value)
    # --skip-bad-shards: skipped loudly and counted in the batches
    src = StoreSource(store, "wds", skip_bad_shards=True)
    with caplog.at_level(logging.WARNING, logger="synthvox.train"):
        batches = list(b for _, b in zip(range(12), make_loader(UnitStream(src, 0, 0, 1, 1), 1, 0)))
    skipped = [f for b in batches for f in b["bad_shards"]]
    assert skipped and all(f.endswith("shard-000001.tar") for f in skipped)
    assert "skipping a damaged shard (--skip-bad-shards)" in caplog.text
    assert 2 not in {i for b in batches for i in b["index"]}  # the damaged sample was never served


def test_11_a_damaged_zarr_chunk_is_named_and_verify_quick_sees_it(store, tmp_path):
    shard = store / zarr_shard_key("views", 2)
    _flip(shard, 200)  # inside the last chunk's payload, before the shard index
    with pytest.raises(DamagedShard, match=rf"{shard}: views of sample 5 does not decode.*{FIX}"):
        [ZarrReader(store)[i] for i in range(8)]
    with pytest.raises(DamagedShard, match=str(shard)):
        pretrain(tmp_path / "r", tiny_train_config(steps=12, crop=None, format="zarr"), store, log=QUIET)
    r = verify(store, quick=True)
    assert not r["ok"] and zarr_shard_key("views", 2) in r["bad_files"], r["problems"]
    src = StoreSource(store, "zarr", skip_bad_shards=True)
    items = [next(it) for it in [iter(UnitStream(src, 0, 0, 1, 1))] for _ in range(10)]
    assert 5 not in {i["index"] for i in items} and any(i["bad_shards"] for i in items)


# -- 12: a damaged manifest -------------------------------------------------------------------

@pytest.mark.parametrize("content, needle", [
    (b"\x89\xff\x00garbage", "is not UTF-8 text"),
    (b"[1, 2, 3]", "holds a JSON list, not an object"),
    (b'{"a": 1}', "unknown key"),
    (None, "no 'samples'"),
    ("task_size", "task_size = 0, expected an integer >= 1"),
])
def test_12_a_damaged_manifest_is_a_message_naming_the_file(store, content, needle):
    path = store / "manifest.json"
    m = json.loads(path.read_text())
    if content is None:
        del m["samples"]
        content = json.dumps(m).encode()
    elif content == "task_size":
        m["task_size"] = 0
        content = json.dumps(m).encode()
    path.write_bytes(content)
    with pytest.raises(ManifestError, match=needle) as e:
        open_store(store)
    assert str(path) in str(e.value)
    for args in (["info", str(store)], ["verify", "--quick", str(store)]):
        r = _cli(args)
        assert r.exit_code == 1 and str(path) in r.output and needle.split(",")[0] in r.output, r.output
        assert "Traceback" not in r.output


# -- 13: a missing --bank -----------------------------------------------------------------------

def test_13_a_missing_bank_is_a_message_and_writes_nothing(tmp_path):
    out = tmp_path / "s"
    r = _cli(["synth-shards", "--out", str(out), "--samples", "2", "--bank", str(tmp_path / "nobank"), "--workers", "0",
              "--size", "8"])
    assert r.exit_code == 1 and "nobank does not exist" in r.output and "Traceback" not in r.output
    assert not out.exists()


# -- 14: a truncated .nii.gz --------------------------------------------------------------------

def test_14_a_truncated_nifti_is_a_message_naming_the_file(tmp_path, mricron_dir):
    bad = tmp_path / "cut.nii.gz"
    bad.write_bytes((Path(mricron_dir) / "aal.nii.gz").read_bytes()[:20000])
    names = tmp_path / "cut.nii.txt"
    names.write_text((Path(mricron_dir) / "aal.nii.txt").read_text())
    for args in (["features", str(bad), str(tmp_path / "f.nii.gz"), "--ckpt", "random"],
                 ["register", "--fixed", str(bad), "--moving", str(bad), "--out", str(tmp_path / "reg"), "--ckpt", "random"],
                 ["templates", "ingest", str(bad), "--out", str(tmp_path / "bank"), "--workers", "1"]):
        r = run_cli(args)
        assert r.returncode == 1, r.stderr[-2000:]
        assert "cut.nii.gz" in r.stderr and "truncated or corrupt" in r.stderr and "Aborted" not in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "f.nii.gz").exists() and not (tmp_path / "bank").exists()


# -- 15: info and missing records; an unreachable scheduler --------------------------------------

def test_15_info_reports_missing_records(store):
    next((store / "records").glob("block-*.jsonl")).unlink()
    d = info(store)
    assert not d["complete"] and d["missing_records"] == [0, 1, 2, 3]
    assert "4 records are missing" in format_info(d) and "rerun the same synth-shards" in format_info(d)
    with pytest.raises(IncompleteStore):
        StoreSource(store)


def test_15_an_unreachable_scheduler_fails_before_the_skeleton(tmp_path, monkeypatch):
    import synthvox.pipelines.cluster as cluster

    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", "1s")
    out = tmp_path / "s"
    r = _cli(["synth-shards", "--out", str(out), "--samples", "2", "--scheduler", "tcp://127.0.0.1:1", "--size", "8"])
    assert r.exit_code == 1 and "cannot reach the Dask scheduler at tcp://127.0.0.1:1" in r.output, r.output
    assert not out.exists()
