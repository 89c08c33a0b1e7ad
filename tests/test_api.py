"""synthvox.api: datasets are deterministic and split exactly; the webdataset decoder; functions; the example runs."""
from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from synthvox.api import StoreDataset, SyntheticDataset, extract_features, load_model, register, wds_decoder
from synthvox.engine.config import EngineConfig
from synthvox.engine.render import render_sample, sample_to_numpy

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CFG = EngineConfig(size=8)
N, TASK = 10, 2


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    from synthvox.pipelines import synth_shards

    root = tmp_path_factory.mktemp("api-stores")
    for content in ("full", "labels"):
        synth_shards(root / content, N, task_size=TASK, cfg=CFG, seed=4, formats="wds,zarr", workers=0, progress=False,
                     content=content)
    return root


def test_synthetic_dataset_is_the_engine_by_index():
    ds = SyntheticDataset(5, CFG, seed=3, with_meta=True)
    ref = sample_to_numpy(render_sample(CFG, 3, 4))
    s = ds[4]
    assert set(s) == {"labels", "views", "index", "meta"} and s["index"] == 4
    assert s["labels"].dtype == np.uint8 and s["views"].shape == (2, 8, 8, 8) and s["views"].dtype == np.uint8
    assert np.array_equal(s["labels"], ref["labels"]) and np.array_equal(s["views"], ref["views"])
    assert s["meta"] == ref["meta"]
    assert np.array_equal(ds[-1]["views"], s["views"])
    assert not np.array_equal(SyntheticDataset(5, CFG, seed=4)[4]["views"], s["views"])
    assert np.array_equal(SyntheticDataset(3, CFG, seed=3, start=2)[2]["views"], s["views"])
    with pytest.raises(IndexError, match="out of range"):
        ds[5]
    # overrides by field name build the config; a bad one names the field
    assert SyntheticDataset(1, size=8).config == CFG
    with pytest.raises(ValueError, match="engine.size"):
        SyntheticDataset(1, size=2)
    # worker processes render the same bytes (default collate stacks them into tensors)
    plain = SyntheticDataset(4, CFG, seed=3)
    batches = list(DataLoader(plain, batch_size=2, num_workers=2))
    assert torch.equal(batches[1]["views"][1], torch.from_numpy(plain[3]["views"]))
    assert batches[1]["index"].tolist() == [2, 3]


@pytest.mark.parametrize("fmt,content", [("wds", "full"), ("zarr", "full"), ("wds", "labels")])
def test_store_dataset_splits_by_rank_and_worker(stores, fmt, content):
    ref = SyntheticDataset(N, CFG, seed=4)

    def epoch(e: int, world: int, workers: int) -> list[list[int]]:
        out = []
        for rank in range(world):
            ds = StoreDataset(stores / content, seed=0, format=fmt, rank=rank, world_size=world)
            ds.set_epoch(e)
            loader = DataLoader(ds, batch_size=None, num_workers=workers)
            got = list(loader)
            for s in got[:2]:
                assert np.array_equal(np.asarray(s["views"]), ref[int(s["index"])]["views"])
            out.append([int(s["index"]) for s in got])
        return out

    split = epoch(0, world=2, workers=2)
    flat = [i for r in split for i in r]
    assert sorted(flat) == list(range(N))  # every sample once per epoch, ranks disjoint
    assert all(split)  # both ranks get work
    assert epoch(0, world=2, workers=2) == split  # deterministic
    assert epoch(1, world=2, workers=2) != split  # a new epoch, a new order
    ordered = StoreDataset(stores / content, format=fmt, shuffle=False)
    assert [int(s["index"]) for s in ordered] == list(range(N)) and ordered.num_samples == N


def test_store_dataset_errors(tmp_path, stores):
    with pytest.raises(ValueError, match="rank 2"):
        list(StoreDataset(stores / "full", rank=2, world_size=2))
    with pytest.raises(Exception, match=str(tmp_path / "none")):
        StoreDataset(tmp_path / "none")


def test_wds_decoder_with_plain_webdataset(stores):
    import webdataset as wds

    ref = SyntheticDataset(N, CFG, seed=4)
    shards = sorted(str(p) for p in (stores / "full" / "wds").glob("shard-*.tar"))
    got = list(wds.WebDataset(shards, shardshuffle=False, empty_check=False).decode(wds_decoder))
    assert len(got) == N
    for s in got:
        i = int(s["__key__"])
        assert np.array_equal(s["views.npy.zst"], ref[i]["views"]) and np.array_equal(s["labels.npy.zst"], ref[i]["labels"])
        assert isinstance(s["meta.json"], dict)
    raw = next(iter(wds.WebDataset(shards[:1], shardshuffle=False, empty_check=False)))
    assert isinstance(raw["views.npy.zst"], bytes)  # what users saw without the decoder
    assert wds_decoder(".meta.json", b"{}") is None


def test_functions_features_and_register():
    model, record = load_model("random")
    img = np.random.default_rng(0).random((16, 16, 16)).astype(np.float32)
    feats = extract_features(model, img, record["normalisation"])
    assert feats.shape == (16, 16, 16, 16) and feats.dtype == torch.float32
    # registration of a shifted blob: the warped image is closer to the fixed one than the moving one
    g = np.indices((24, 24, 24)).astype(np.float32)
    blob = lambda c: np.exp(-((g - np.array(c)[:, None, None, None]) ** 2).sum(0) / 20)  # noqa: E731
    fixed, moving = blob((12, 12, 12)), blob((13, 12, 11))
    from synthvox.downstream.registration import RegistrationConfig

    res = register(fixed, moving, config=RegistrationConfig(features="mind", affine=False))
    assert res.disp_world.shape == (24, 24, 24, 3) and res.warped.shape == fixed.shape
    assert np.abs(res.warped - fixed).mean() < 0.7 * np.abs(moving - fixed).mean()
    with pytest.raises(ValueError, match="need a network"):
        register(fixed, moving, features="net")


def test_example_monai_training_loop_runs(capsys):
    mod = runpy.run_path(str(EXAMPLES / "train_monai.py"))
    mod["main"](["--size", "16", "--steps", "2", "--store-samples", "4"])
    out = capsys.readouterr().out
    assert "step 2/2: DiceCE loss" in out
    assert "StoreDataset: 4 samples over 2 ranks x 2 workers" in out and "decode to arrays" in out
