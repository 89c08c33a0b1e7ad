"""Template bank, procedural shapes and NIfTI ingestion: round trips, determinism, bad input."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from synthvox.engine.templates import (BankError, BankWriter, IngestError, ingest, make_procedural_bank, open_bank,
                                       resolve_bank)
from synthvox.engine.templates import builtin as bank_mod
from synthvox.engine.templates.procedural import FAMILIES, MAX_SIDE, _rng_for


def _save(path: Path, data: np.ndarray, zooms=(1.0, 1.0, 1.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(data, np.diag([*zooms, 1.0]))
    img.header.set_zooms(tuple(zooms) + tuple([1.0] * (data.ndim - 3)))
    nib.save(img, str(path))
    return path


def _ball(shape, centre, r) -> np.ndarray:
    g = np.indices(shape).astype(float)
    return (sum((g[a] - centre[a]) ** 2 for a in range(3)) <= r * r).astype(np.uint8)


def _tight(m: np.ndarray) -> np.ndarray:
    idx = np.nonzero(m)
    return (m[tuple(slice(i.min(), i.max() + 1) for i in idx)] != 0).astype(np.uint8)


def _leftovers(parent: Path, name: str) -> list[str]:
    """Private temporaries of `name` (core.atomic.tmp_name: `.NAME.PID-RANDOM.tmp`)."""
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.") and p.name.endswith(".tmp")]


# --- the bank format --------------------------------------------------------------------------

def test_bank_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    masks = [np.ones((1, 1, 1), np.uint8)]
    for shape in [(3, 5, 7), (9, 2, 4), (17, 13, 11)]:
        m = (rng.random(shape) < 0.4).astype(np.uint8)
        m[0, 0, 0] = m[-1, -1, -1] = 1  # tight bounding box
        masks.append(m)
    with BankWriter(tmp_path / "b") as w:
        for k, m in enumerate(masks):
            w.add(m, name=f"s{k}", source=f"src{k % 2}", label=k + 10)
        w.commit()
    b = open_bank(tmp_path / "b")
    assert len(b) == len(masks)
    for k, m in enumerate(masks):
        got = b.get(k)
        assert got.dtype == np.uint8 and got.shape == m.shape == b.shape(k)
        np.testing.assert_array_equal(got, m)
        r = b.records[k]
        assert (r.name, r.source, r.label, r.voxels, r.shape) == (f"s{k}", f"src{k % 2}", k + 10, int(m.sum()), m.shape)
    np.testing.assert_array_equal(b.get(-1), masks[-1])
    with pytest.raises(IndexError, match="out of range"):
        b.get(len(masks))
    b.verify()
    # pickles by path (for worker processes)
    b2 = pickle.loads(pickle.dumps(b))
    np.testing.assert_array_equal(b2.get(3), masks[3])
    # the hash covers content, not path or names
    os.rename(tmp_path / "b", tmp_path / "moved")
    assert open_bank(tmp_path / "moved").content_hash == b.content_hash
    with BankWriter(tmp_path / "renamed") as w:
        for k, m in enumerate(masks):
            w.add(m, name=f"other{k}", source="x")
        w.commit()
    assert open_bank(tmp_path / "renamed").content_hash == b.content_hash
    with BankWriter(tmp_path / "changed") as w:
        for k, m in enumerate(masks):
            w.add(m if k != 2 else 1 - m, name=f"s{k}", source="x")  # crop of the complement differs
        w.commit()
    assert open_bank(tmp_path / "changed").content_hash != b.content_hash


def test_writer_crops_and_rejects_empty(tmp_path):
    m = np.zeros((10, 10, 10), np.uint8)
    m[2:5, 3, 4:9] = 1
    with BankWriter(tmp_path / "b") as w:
        w.add(m, name="a", source="s")
        with pytest.raises(ValueError, match="empty"):
            w.add(np.zeros((4, 4, 4), np.uint8), name="e", source="s")
        w.commit()
    b = open_bank(tmp_path / "b")
    assert b.shape(0) == (3, 1, 5) and b.get(0).all()


def test_corrupt_bank_detected(tmp_path):
    with BankWriter(tmp_path / "b") as w:
        w.add(np.ones((4, 4, 4), np.uint8), name="a", source="s")
        w.commit()
    data = tmp_path / "b" / "masks.bin"
    raw = bytearray(data.read_bytes())
    raw[0] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(BankError, match="content hash"):
        open_bank(tmp_path / "b").verify()
    data.write_bytes(bytes(raw[:-1]))
    with pytest.raises(BankError, match="inconsistent"):
        open_bank(tmp_path / "b")


def test_missing_and_incomplete_bank(tmp_path):
    with pytest.raises(BankError, match=r"nope.*does not exist.*synthvox templates procedural"):
        open_bank(tmp_path / "nope")
    with pytest.raises(BankError, match="does not exist"):
        resolve_bank(str(tmp_path / "nope"))
    half = tmp_path / "half"
    half.mkdir()
    (half / "masks.bin").write_bytes(b"\0" * 8)
    with pytest.raises(BankError, match=r"half is not a complete template bank"):
        open_bank(half)


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with BankWriter(tmp_path / "b") as w:
            w.add(np.ones((2, 2, 2), np.uint8), name="a", source="s")
            raise RuntimeError("boom")
    assert not (tmp_path / "b").exists() and _leftovers(tmp_path, "b") == []


def test_overwrite_and_refuse(tmp_path):
    make_procedural_bank(tmp_path / "b", 3, seed=1)
    with pytest.raises(BankError, match="already exists"):
        make_procedural_bank(tmp_path / "b", 3, seed=2)
    h1 = open_bank(tmp_path / "b").content_hash
    make_procedural_bank(tmp_path / "b", 3, seed=2, overwrite=True)
    assert open_bank(tmp_path / "b").content_hash != h1
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


# --- procedural shapes ---------------------------------------------------------------------------

def test_procedural_families_shapes():
    for name, (fn, _) in FAMILIES.items():
        for i in range(3):
            m = fn(_rng_for(7, i))
            assert m.dtype == np.uint8 and m.ndim == 3 and m.any(), name
            assert max(m.shape) <= MAX_SIDE + 2, (name, m.shape)
            assert set(np.unique(m)) <= {0, 1}


def test_procedural_bank_deterministic(tmp_path):
    a = make_procedural_bank(tmp_path / "a", 10, seed=3, workers=1)
    b = make_procedural_bank(tmp_path / "b", 10, seed=3, workers=2)
    c = make_procedural_bank(tmp_path / "c", 10, seed=4, workers=1)
    ba, bb, bc = open_bank(a), open_bank(b), open_bank(c)
    assert ba.content_hash == bb.content_hash != bc.content_hash
    for i in range(len(ba)):
        m = ba.get(i)
        np.testing.assert_array_equal(m, bb.get(i))
        # cropped tight: every face of the box touches the shape
        assert m[0].any() and m[-1].any() and m[:, 0].any() and m[:, -1].any() and m[:, :, 0].any() and m[:, :, -1].any()
    assert {r.source.split(":")[0] for r in ba.records} == {"procedural"}


def test_resolve_default_bank_cached_and_race_safe(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHVOX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(bank_mod, "DEFAULT_COUNT", 6)
    # two processes racing for the first build: both succeed with the same bank
    code = ("import sys; from synthvox.engine.templates import builtin as m; m.DEFAULT_COUNT = 6; "
            "b = m.resolve_bank(None); print(b.content_hash, len(b))")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1] and outs[0][1] == "6"
    b = resolve_bank(None)
    assert b.content_hash == outs[0][0] and b.path.parent == tmp_path / "cache" / "banks"
    assert resolve_bank(None) is b  # opened once per process
    assert [p.name for p in b.path.parent.iterdir() if not p.name.endswith(".lock")] == [b.path.name]


def test_concurrent_writers_first_rename_wins(tmp_path):
    w1, w2 = BankWriter(tmp_path / "b"), BankWriter(tmp_path / "b")
    w1.add(np.ones((2, 2, 2), np.uint8), name="first", source="s")
    w2.add(np.ones((3, 3, 3), np.uint8), name="second", source="s")
    w1.commit()
    with pytest.raises(FileExistsError, match="appeared while writing"):
        w2.commit()
    assert open_bank(tmp_path / "b").records[0].name == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


# --- ingestion -------------------------------------------------------------------------------------

def _subjects(root: Path) -> dict[str, np.ndarray]:
    shape = (20, 18, 16)
    masks = {
        "S1/segmentations/liver": _ball(shape, (8, 8, 8), 5),
        "S1/segmentations/rib_left_1": _ball(shape, (3, 3, 3), 2),
        "S1/segmentations/rib_left_2": _ball(shape, (15, 14, 12), 2),
        "S1/segmentations/empty": np.zeros(shape, np.uint8),
        "S2/segmentations/liver": _ball(shape, (10, 9, 7), 6),
    }
    for rel, m in masks.items():
        _save(root / f"{rel}.nii.gz", m)
    return masks


def test_ingest_segmentation_folders_with_merge(tmp_path):
    masks = _subjects(tmp_path / "ts")
    s = ingest([tmp_path / "ts"], tmp_path / "bank", merge=["rib_*=ribs"])
    b = open_bank(tmp_path / "bank")
    recs = list(b.records)
    assert [(r.name, r.source) for r in recs] == [
        ("liver", "ts/S1/segmentations/liver.nii.gz"), ("ribs", "ts/S1/segmentations/[2 merged]"),
        ("empty", "ts/S1/segmentations/empty.nii.gz")][:2] + [("liver", "ts/S2/segmentations/liver.nii.gz")]
    np.testing.assert_array_equal(b.get(0), _tight(masks["S1/segmentations/liver"]))
    ribs = masks["S1/segmentations/rib_left_1"] | masks["S1/segmentations/rib_left_2"]
    np.testing.assert_array_equal(b.get(1), _tight(ribs))
    np.testing.assert_array_equal(b.get(2), _tight(masks["S2/segmentations/liver"]))
    assert all(r.label == 1 for r in recs)
    assert s["templates"] == 3 and [(d["name"], d["reason"]) for d in s["dropped"]] == [("empty", "empty")]
    assert not (tmp_path / ".bank.ingest-work").exists()


def test_ingest_atlas_names_and_singleton_axis(tmp_path):
    lab = np.zeros((12, 10, 14), np.int16)
    lab[1:4, 2:5, 3:9] = 2
    lab[6:11, 1:9, 2:4] = 5
    lab[7, 7, 10:13] = 300
    _save(tmp_path / "atlas.nii.gz", lab[..., None])  # (X, Y, Z, 1)
    (tmp_path / "atlas.nii.txt").write_text("2 Foo 2001\n5 Bar 2002\nnot a line\n")
    ingest([tmp_path / "atlas.nii.gz"], tmp_path / "bank")
    b = open_bank(tmp_path / "bank")
    assert [(r.name, r.label, r.source) for r in b.records] == [
        ("Foo", 2, "atlas.nii.gz"), ("Bar", 5, "atlas.nii.gz"), ("atlas_label300", 300, "atlas.nii.gz")]
    assert b._label.dtype == np.int32
    for k, v in enumerate([2, 5, 300]):
        np.testing.assert_array_equal(b.get(k), _tight(lab == v))


def test_ingest_resampling(tmp_path):
    m = _ball((24, 24, 24), (12, 12, 12), 9)
    _save(tmp_path / "ts" / "m.nii.gz", m, zooms=(1.0, 1.0, 1.0))
    ingest([tmp_path / "ts"], tmp_path / "b2", spacing=2.0)
    ingest([tmp_path / "ts"], tmp_path / "b2n", spacing=2.0, interp="nearest")
    full = int(m.sum())
    for name in ("b2", "b2n"):
        b = open_bank(tmp_path / name)
        assert all(8 <= s <= 10 for s in b.shape(0)), b.shape(0)  # 19 mm across: ~9.5 voxels at 2 mm
        assert abs(b.records[0].voxels * 8 - full) / full < 0.2


def test_ingest_bad_inputs_name_the_file(tmp_path):
    four = _save(tmp_path / "four.nii.gz", np.ones((4, 4, 4, 2), np.uint8))
    with pytest.raises(IngestError, match=r"four\.nii\.gz: 4D"):
        ingest([four], tmp_path / "b")
    frac = _save(tmp_path / "frac.nii.gz", np.full((4, 4, 4), 1.5, np.float32))
    with pytest.raises(IngestError, match=r"frac\.nii\.gz: non-integral value 1\.5"):
        ingest([frac], tmp_path / "b")
    multi = _save(tmp_path / "seg" / "multi.nii.gz", np.arange(64, dtype=np.uint8).reshape(4, 4, 4) % 3)
    with pytest.raises(IngestError, match=r"multi\.nii\.gz: a structure mask holds 2 different labels"):
        ingest([tmp_path / "seg"], tmp_path / "b")
    with pytest.raises(IngestError, match=r"nothere does not exist"):
        ingest([tmp_path / "nothere"], tmp_path / "b")
    e1 = _save(tmp_path / "empties" / "a.nii.gz", np.zeros((4, 4, 4), np.uint8))
    _save(tmp_path / "empties" / "b.nii.gz", np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(IngestError, match=r"no templates: all 2 structures in .*empties were dropped"):
        ingest([e1.parent], tmp_path / "b")
    # nothing under the final name, no temporaries left
    assert not (tmp_path / "b").exists() and _leftovers(tmp_path, "b") == []


def test_ingest_resumes_after_failure(tmp_path):
    _subjects(tmp_path / "ts")
    bad = _save(tmp_path / "bad.nii.gz", np.ones((3, 3, 3, 3), np.uint8))
    with pytest.raises(IngestError, match="bad.nii.gz"):
        ingest([tmp_path / "ts", bad], tmp_path / "bank")
    assert not (tmp_path / "bank").exists()
    assert len(list((tmp_path / ".bank.ingest-work").iterdir())) == 5  # finished files kept for resume
    s = ingest([tmp_path / "ts"], tmp_path / "bank")
    assert s["resumed"] == 5 and s["templates"] == 4
    fresh = ingest([tmp_path / "ts"], tmp_path / "fresh", resume=False, workers=2)
    assert fresh["content_hash"] == s["content_hash"] and fresh["resumed"] == 0


def test_ingest_refuses_intensity_image(tmp_path):
    g = np.indices((16, 16, 16)).sum(0).astype(np.uint8)  # a smooth ramp: integral but no label map
    img = _save(tmp_path / "t1.nii.gz", g)
    with pytest.raises(IngestError, match=r"t1\.nii\.gz: looks like an intensity image"):
        ingest([img], tmp_path / "b")


def test_ingest_mricron_aal(mricron_dir, tmp_path):
    aal = Path(mricron_dir) / "aal.nii.gz"
    data = np.asarray(nib.load(str(aal)).dataobj)
    s = ingest([aal], tmp_path / "aal", merge={"Cerebelum_*": "cerebellum"})
    b = open_bank(tmp_path / "aal")
    names = [r.name for r in b.records]
    assert len(b) == 116 - 18 + 1 and s["dropped"] == []
    assert names[0] == "Precentral_L" and "cerebellum" in names and "Vermis_10" in names
    np.testing.assert_array_equal(b.get(0), _tight(data == 1))
    cb = names.index("cerebellum")
    np.testing.assert_array_equal(b.get(cb), _tight((data >= 91) & (data <= 108)))
    ingest([aal], tmp_path / "aal4", spacing=4.0)
    b4 = open_bank(tmp_path / "aal4")
    assert len(b4) == 116 and max(max(s) for s in (b4.shape(i) for i in range(len(b4)))) <= 30


# --- CLI ---------------------------------------------------------------------------------------------

def test_cli(tmp_path):
    from synthvox.cli.main import main

    r = CliRunner().invoke(main, ["templates", "procedural", "--count", "4", "--seed", "2", "--out", str(tmp_path / "b"), "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert "wrote 4 templates" in r.output
    r = CliRunner().invoke(main, ["templates", "info", str(tmp_path / "b"), "--json"])
    d = json.loads(r.output)
    assert d["count"] == 4 and d["content_hash"] == open_bank(tmp_path / "b").content_hash
    r = CliRunner().invoke(main, ["templates", "info", str(tmp_path / "missing")])
    assert r.exit_code == 1 and "missing does not exist" in r.output
    m = _save(tmp_path / "seg" / "x.nii.gz", _ball((8, 8, 8), (4, 4, 4), 2))
    r = CliRunner().invoke(main, ["templates", "ingest", str(m.parent), "--out", str(tmp_path / "ib"), "--merge", "x*=xs", "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert open_bank(tmp_path / "ib").records[0].name == "xs"
    r = CliRunner().invoke(main, ["templates", "ingest", str(m.parent), "--out", str(tmp_path / "ib"), "--merge", "nonsense"])
    assert r.exit_code == 1 and "already exists" in r.output
    r = CliRunner().invoke(main, ["templates", "ingest", str(m.parent), "--out", str(tmp_path / "ib2"), "--merge", "nonsense"])
    assert r.exit_code == 1 and "PATTERN=NAME" in r.output
