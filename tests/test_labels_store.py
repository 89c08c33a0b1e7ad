"""Labels-only stores: the views painted on load equal a full store's byte for byte, convert both
ways, verify, dry-run, content refusals, and training from a labels store (real engine, 24^3)."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from synthvox.cli.main import main
from synthvox.engine.config import EngineConfig
from synthvox.pipelines import (ZarrReader, convert, info, iter_wds_shard, open_store, plan, synth_shards, verify,
                                views_from_meta)
from synthvox.pipelines.codecs import seal_meta
from synthvox.pipelines.manifest import StoreMismatch

from helpers.stores import tree_digest
from helpers.train import tiny_train_config

CFG = EngineConfig(size=24)
SEED, N, TASK = 3, 5, 2
QUIET = lambda msg: None  # noqa: E731


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A full and a labels store of the same (config, seed, samples), both formats, rendered in-process."""
    root = tmp_path_factory.mktemp("labels")
    for content in ("full", "labels"):
        synth_shards(root / content, N, task_size=TASK, cfg=CFG, seed=SEED, formats="wds,zarr", workers=0,
                     progress=False, content=content)
    return root / "full", root / "labels"


def _wds(store: Path, render_views: bool = True) -> list[dict]:
    return [s for p in open_store(store).wds_shards() for s in iter_wds_shard(p, render_views=render_views)]


def _members(store: Path) -> dict[str, bytes]:
    out = {}
    for p in open_store(store).wds_shards():
        with tarfile.open(p) as tar:
            for m in tar.getmembers():
                out[m.name] = tar.extractfile(m).read()
    return out


def test_labels_store_reads_back_the_full_store_byte_for_byte(stores):
    full, lab = stores
    a, b = _wds(full), _wds(lab)
    assert [s["index"] for s in b] == list(range(N))
    zf, zl = ZarrReader(full), ZarrReader(lab)
    for i, (sf, sl) in enumerate(zip(a, b)):
        for s in (sl, zl[i]):  # the tar reader and the Zarr reader paint the same views
            assert s["views"].dtype == np.uint8 and s["views"].shape == (CFG.views,) + (CFG.size,) * 3
            assert np.array_equal(s["views"], sf["views"]) and np.array_equal(s["labels"], sf["labels"])
            assert s["meta"] == sf["meta"]
        assert np.array_equal(zf[i]["views"], sf["views"])
        assert sf["views"].std() > 0  # real images, not a constant
    assert np.array_equal(zl.read_range(1, 4)["views"], np.stack([s["views"] for s in a[1:4]]))
    # without rendering: labels and meta only; the painter on a torch device gives the same bytes
    raw = _wds(lab, render_views=False)
    assert all("views" not in s for s in raw)
    t = views_from_meta(raw[2], device="cpu", numpy=False)["views"]
    assert isinstance(t, torch.Tensor) and np.array_equal(t.numpy(), a[2]["views"])


def test_labels_store_is_the_full_store_without_its_views(stores):
    full, lab = stores
    mf, ml = _members(full), _members(lab)
    assert set(ml) == {k for k in mf if not k.endswith(".views.npy.zst")}
    assert all(ml[k] == mf[k] for k in ml)  # labels and meta members: the same bytes
    assert not (lab / "zarr" / "views").exists() and (lab / "zarr" / "labels").is_dir()
    m = open_store(lab).manifest
    assert m.content == "labels" and set(m.codecs["wds"]) == {"labels"}
    dl, df = info(lab), info(full)
    assert dl["content"] == "labels"
    for f in ("wds", "zarr"):
        assert dl["bytes_per_sample"][f] < 0.6 * df["bytes_per_sample"][f]  # ~40x at 128^3 (benchmarks/bench_labels_store.py)
    assert "views rendered on load" in CliRunner().invoke(main, ["info", str(lab)]).output


def test_labels_task_paints_no_view(tmp_path, monkeypatch):
    import synthvox.engine.render as render_mod

    def boom(*a, **k):
        raise AssertionError("a labels task painted a view")

    monkeypatch.setattr(render_mod, "_paint", boom)
    s = synth_shards(tmp_path / "s", 2, task_size=2, cfg=EngineConfig(size=16), workers=0, progress=False,
                     content="labels")
    assert s["complete"]


def test_verify_a_labels_store_and_catch_a_changed_seed(stores, tmp_path):
    import shutil

    full, lab = stores
    r = verify(lab, rerender=3)
    assert r["ok"], r["problems"]
    assert r["comparison"] == ["labels exact, views painted here from the stored meta exact (labels store)"]
    bad = tmp_path / "bad"
    shutil.copytree(lab, bad)
    meta_file = bad / "zarr-meta" / "task-000001.jsonl"
    lines = meta_file.read_text().splitlines()
    d = json.loads(lines[0])
    seed = d["meta"]["appearance_noise_seeds"][0]
    d["meta"]["appearance_noise_seeds"][0] = seed + 1 if str(seed + 1)[-1] != "0" else seed - 1  # same length
    lines[0] = json.dumps(d, sort_keys=True, separators=(",", ":"))
    meta_file.write_text("\n".join(lines) + "\n")
    # the meta's own checksum sees the changed seed, even in a quick check (issue 14, item 6)
    r = verify(bad, quick=True)
    assert not r["ok"] and any("checksum" in p["problem"] and p["file"] == "zarr-meta/task-000001.jsonl"
                               for p in r["problems"]), r["problems"]
    r = verify(bad)
    assert "zarr-meta/task-000001.jsonl" in r["bad_files"]
    # a meta whose checksum was recomputed (written so, not damaged): the re-render still sees other views
    d["meta"] = seal_meta({k: v for k, v in d["meta"].items() if k != "meta_sha256"})
    lines[0] = json.dumps(d, sort_keys=True, separators=(",", ":"))
    meta_file.write_text("\n".join(lines) + "\n")
    r = verify(bad, quick=True, rerender=N)
    assert not r["ok"] and any("views differ" in p["problem"] and p["task"] == 1 for p in r["problems"]), r["problems"]


def test_convert_both_ways_equals_a_direct_render(stores, tmp_path):
    full, lab = stores
    s = convert(lab, tmp_path / "full", "full", workers=0, progress=False)
    assert s["complete"] and s["tasks_rendered"] == 3
    assert tree_digest(tmp_path / "full") == tree_digest(full)  # every file, the manifest included
    r = CliRunner().invoke(main, ["convert", str(full), "--content", "labels", "--out", str(tmp_path / "lab"),
                                  "--workers", "0", "--quiet"])
    assert r.exit_code == 0, r.output
    assert tree_digest(tmp_path / "lab") == tree_digest(lab)
    assert verify(tmp_path / "full", rerender=2)["ok"] and verify(tmp_path / "lab", rerender=2)["ok"]
    # rerun: nothing left to do
    assert convert(lab, tmp_path / "full", "full", workers=0, progress=False)["tasks_rendered"] == 0
    with pytest.raises(ValueError, match="already holds content 'labels'"):
        convert(lab, tmp_path / "x", "labels", workers=0, progress=False)
    with pytest.raises(ValueError, match="source store itself"):
        convert(lab, lab, "full", workers=0, progress=False)
    r = CliRunner().invoke(main, ["convert", str(lab), "--content", "full", "--out", str(tmp_path / "lab")])
    assert r.exit_code != 0 and "content" in r.output and "Traceback" not in r.output


def test_resume_with_other_content_is_refused(stores):
    full, lab = stores
    with pytest.raises(StoreMismatch, match=r"content: store has 'labels', this run has 'full'.*convert"):
        synth_shards(lab, N, cfg=CFG, seed=SEED, formats="wds,zarr", workers=0, progress=False, content="full")
    r = CliRunner().invoke(main, ["synth-shards", "--out", str(full), "--samples", str(N), "--size", "24", "--seed",
                                  str(SEED), "--formats", "wds,zarr", "--workers", "0", "--content", "labels"])
    assert r.exit_code != 0 and "content" in r.output and "Traceback" not in r.output


def test_dry_run_knows_labels_content(tmp_path):
    cfg = EngineConfig(size=16)
    pf = plan(tmp_path / "p", 1000, 8, cfg, ("wds",), content="full")
    pl = plan(tmp_path / "p", 1000, 8, cfg, ("wds",), content="labels")
    assert pl["content"] == "labels" and pl["raw_bytes_per_sample"] == 16 ** 3
    assert pl["bytes_per_sample"]["wds"] < pf["bytes_per_sample"]["wds"]
    r = CliRunner().invoke(main, ["synth-shards", "--out", str(tmp_path / "q"), "--samples", "1000000", "--size", "16",
                                  "--content", "labels", "--dry-run"])
    assert r.exit_code == 0 and "content labels" in r.output and not (tmp_path / "q").exists()


@pytest.mark.parametrize("workers", [0, 2])
def test_training_from_a_labels_store_equals_training_from_the_full_store(stores, tmp_path, workers):
    from synthvox.train.pretrain import pretrain

    full, lab = stores
    cfg = tiny_train_config(steps=2, warmup_steps=1, workers=workers, val_samples=1 if workers == 0 else 0, val_every=2)
    a = pretrain(tmp_path / "f", cfg, full, log=QUIET)
    b = pretrain(tmp_path / "l", cfg, lab, log=QUIET)
    assert a["steps"] == b["steps"] == 2 and a["weights_sha256"] == b["weights_sha256"]
    la, lb = ([json.loads(x) for x in (tmp_path / d / "log.jsonl").read_text().splitlines()] for d in ("f", "l"))
    steps = [r for r in lb if "indices" in r]
    assert [r["indices"] for r in steps] == [r["indices"] for r in la if "indices" in r]
    assert all(r["render_s"] > 0 for r in steps) and all("render_s" not in r for r in la)
    if workers == 0:
        assert [r["val_loss"] for r in lb if "val_loss" in r] == [r["val_loss"] for r in la if "val_loss" in r]


def test_device_path_paints_the_same_batch(stores):
    """render_views='device': the loader yields labels + meta, views_on_device paints them (CPU here)."""
    from synthvox.train.data import StoreSource, UnitStream, collate, views_on_device

    full, lab = stores
    batches = []
    for store, where in ((full, "loader"), (lab, "device")):
        src = StoreSource(store, "zarr", render_views=where)
        it = iter(UnitStream(src, seed=0, rank=0, world=1, workers=1))
        batches.append(collate([next(it) for _ in range(3)]))
    bf, bl = batches
    assert "views" not in bl and len(bl["meta"]) == 3 and bl["render_s"] == 0.0
    bl = views_on_device(bl, torch.device("cpu"))
    assert bl["index"] == bf["index"] and bl["render_s"] > 0
    assert bl["views"].dtype == torch.uint8 and torch.equal(bl["views"], bf["views"])
