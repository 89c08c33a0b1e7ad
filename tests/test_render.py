"""render_sample / render_views / the render and preview commands, on tiny volumes."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from synthvox.cli.main import main as cli
from synthvox.engine.config import EngineConfig
from synthvox.engine.render import (render_labels, render_sample, render_views, render_views_from_meta,
                                    sample_to_numpy)
from synthvox.engine.schema import validate_sample

SIZE = 16


@pytest.fixture(scope="module")
def bank_path(tmp_path_factory) -> str:
    """A small procedural bank (24 templates), built once per module."""
    from synthvox.engine.templates import make_procedural_bank

    return str(make_procedural_bank(tmp_path_factory.mktemp("bank") / "bank", 24, 0))


@pytest.fixture(scope="module")
def cfg(bank_path) -> EngineConfig:
    return EngineConfig.from_dict({"size": SIZE, "bank": bank_path})


def digest(s: dict) -> str:
    n = sample_to_numpy(s)
    h = hashlib.sha256()
    for k in ("labels", "views"):
        h.update(str(n[k].dtype).encode() + str(n[k].shape).encode() + n[k].tobytes())
    h.update(json.dumps(n["meta"], sort_keys=True).encode())
    return h.hexdigest()


def test_sample_follows_the_schema(cfg):
    s = render_sample(cfg, 3, 5)
    validate_sample(s, cfg.max_labels)
    assert s["labels"].dtype == torch.uint8 and s["labels"].shape == (SIZE,) * 3
    assert s["views"].shape == (cfg.views, SIZE, SIZE, SIZE) and s["views"].dtype == torch.uint8
    assert s["index"] == 5
    meta = json.loads(json.dumps(s["meta"]))  # JSON-able
    assert meta["label_count"] == len(meta["present_labels"]) >= 1
    assert set(meta["present_labels"]) == set(torch.unique(s["labels"]).tolist()) - {0}
    assert len(meta["appearance"]) == len(meta["appearance_noise_seeds"]) == cfg.views
    assert meta["device_type"]["kind"] == "cpu"
    for v in range(cfg.views):  # every view uses the full range
        assert int(s["views"][v].min()) == 0 and int(s["views"][v].max()) == 255


def test_same_seed_index_same_bytes_with_1_or_2_threads_another_index_differs(cfg, bank_path):
    # 35^3: above torch's parallel grain, split off the SIMD width (see test_appearance)
    odd = EngineConfig.from_dict({"size": 35, "bank": bank_path})
    digests = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            digests.append((digest(render_sample(odd, 7, 2)), digest(render_sample(cfg, 7, 2))))
    finally:
        torch.set_num_threads(threads)
    assert digests[0] == digests[1]
    a = digests[0][1]
    assert digest(render_sample(cfg, 7, 3)) != a
    assert digest(render_sample(cfg, 8, 2)) != a


def test_same_bytes_in_another_process(cfg):
    code = textwrap.dedent(f"""
        import hashlib, json, torch
        torch.set_num_threads(1)
        from synthvox.engine.config import EngineConfig
        from synthvox.engine.render import render_sample, sample_to_numpy
        s = sample_to_numpy(render_sample(EngineConfig.from_dict({{"size": {SIZE}, "bank": {cfg.bank!r}}}), 7, 2))
        h = hashlib.sha256()
        for k in ("labels", "views"):
            h.update(str(s[k].dtype).encode() + str(s[k].shape).encode() + s[k].tobytes())
        h.update(json.dumps(s["meta"], sort_keys=True).encode())
        print(h.hexdigest())
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="123")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == digest(render_sample(cfg, 7, 2))


def test_views_share_labels_and_geometry_but_differ_in_intensity(cfg):
    s = render_sample(cfg, 1, 0)
    v = s["views"].float()
    assert not torch.equal(s["views"][0], s["views"][1])
    # geometry is shared: within each label region both views vary far less than across regions
    lab = s["labels"].long()
    ids = torch.unique(lab)
    for view in v:
        means = torch.stack([view[lab == i].mean() for i in ids])
        within = torch.stack([view[lab == i].std(unbiased=False) for i in ids if int((lab == i).sum()) > 8]).mean()
        assert float(means.std()) > float(within) * 0.5


def test_render_views_and_from_meta_equal_render_sample(cfg):
    s = render_sample(cfg, 4, 9)
    labels, meta = render_labels(cfg, 4, 9)
    assert torch.equal(labels, s["labels"])
    assert meta["ensemble"] == s["meta"]["ensemble"]
    assert torch.equal(render_views(labels, cfg, 4, 9), s["views"])
    stored = json.loads(json.dumps(s["meta"]))  # as a labels-only store keeps it
    assert torch.equal(render_views_from_meta(s["labels"].clone(), stored), s["views"])
    assert torch.equal(render_views_from_meta(sample_to_numpy(s)["labels"], stored), s["views"])  # numpy labels too
    with pytest.raises(ValueError, match="appearance"):
        render_views_from_meta(labels, meta)  # labels meta has no view parameters


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8])
def test_intensity_steps_never_touch_labels(cfg, dtype, monkeypatch):
    import synthvox.engine.render as render_mod

    labels, _ = render_labels(cfg, 2, 2)
    labels = labels.to(dtype)
    before = labels.clone()
    seen = []
    real = render_mod.apply_appearance

    def spy(idx, *args, **kwargs):
        seen.append(idx.data_ptr() == labels.data_ptr())
        return real(idx, *args, **kwargs)

    monkeypatch.setattr(render_mod, "apply_appearance", spy)
    views = render_views(labels, cfg, 2, 2)
    # int32/int64 labels reach every appearance step as the caller's own tensor (no copy): the
    # path on which a step writing into its input would corrupt them
    assert seen == [dtype != torch.uint8] * cfg.views
    assert torch.equal(labels, before)
    assert torch.equal(views, render_views(before.to(torch.uint8), cfg, 2, 2))


def test_label_dtype_follows_max_labels(bank_path):
    big = EngineConfig.from_dict({"size": 8, "bank": bank_path, "ensemble": {"shapes": [300, 300]}})
    s = render_sample(big, 0, 0)
    assert s["labels"].dtype == torch.uint16 and big.max_labels == 302   # shapes, mask interior, envelope
    assert sample_to_numpy(s)["labels"].dtype == np.uint16
    assert len(s["meta"]["appearance"][0]["gmm"]["means"]) == 303  # one intensity per possible id


# -- CLI ------------------------------------------------------------------------------------------

def test_cli_render_writes_the_sample(cfg, bank_path, tmp_path):
    out = tmp_path / "s.npz"
    r = CliRunner().invoke(cli, ["render", "--seed", "3", "--index", "5", "--size", str(SIZE), "--bank", bank_path,
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    with np.load(out) as z:
        s = sample_to_numpy(render_sample(cfg, 3, 5))
        assert np.array_equal(z["labels"], s["labels"]) and np.array_equal(z["views"], s["views"])
        assert int(z["index"]) == 5 and json.loads(str(z["meta"]))["label_count"] == s["meta"]["label_count"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]  # no temporaries left


def test_cli_preview_writes_pngs(bank_path, tmp_path):
    import matplotlib.image

    r = CliRunner().invoke(cli, ["preview", "--n", "2", "--size", str(SIZE), "--bank", bank_path, "--out", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    pngs = sorted((tmp_path / "p").iterdir())
    assert [p.name for p in pngs] == ["sample-000000.png", "sample-000001.png"]
    img = matplotlib.image.imread(pngs[0])
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200 and float(img.std()) > 0.05


@pytest.mark.parametrize("yaml_text,expect", [
    ("engine:\n  appearance:\n    bogus: 1\n", "appearance.bogus"),
    ("engine:\n  appearance:\n    gamma: [2.0, 0.5]\n", "min 2.0 > max 0.5"),
    ("engine:\n  ensemble:\n    shapes: [30, 20]\n", "ensemble.shapes"),
    ("engine:\n  sizee: 32\n", "engine.sizee"),
])
def test_cli_bad_config_is_a_clear_error(tmp_path, yaml_text, expect):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml_text)
    out = tmp_path / "s.npz"
    r = CliRunner().invoke(cli, ["render", "--size", "8", "--config", str(cfg_file), "--out", str(out)])
    assert r.exit_code != 0 and expect in r.output, r.output
    assert not out.exists() and list(tmp_path.iterdir()) == [cfg_file]


def test_cli_missing_bank_is_a_clear_error(tmp_path):
    r = CliRunner().invoke(cli, ["render", "--size", "8", "--bank", str(tmp_path / "nope"), "--out", str(tmp_path / "s.npz")])
    assert r.exit_code != 0 and "nope" in r.output, r.output
    assert not (tmp_path / "s.npz").exists()
