"""UNet3D, the contrastive loss (against a plain reference) and the checkpoint contract."""
from __future__ import annotations

import json

import pytest
import torch
from torch.nn import functional as F

from synthvox.train.checkpoint import CheckpointError, load_model, load_state, resolve_checkpoint, save_checkpoint
from synthvox.train.loss import VoxelContrastiveLoss, downsample_labels, sample_voxels, supcon_loss
from synthvox.train.model import UNet3D, build_model, default_taps, tap_channels, tap_stride


def test_reference_unet_parameter_count_and_taps():
    m = UNet3D()
    n = sum(p.numel() for p in m.parameters())
    assert 5.8e6 < n < 6.0e6, n  # the reference: ~5.9M
    x = torch.zeros(1, 1, 16, 16, 16)
    m.eval()  # BatchNorm at a 1^3 bottleneck needs eval mode
    with torch.no_grad():
        out, taps = m.forward_with_taps(x, default_taps(4))
    assert out.shape == (1, 16, 16, 16, 16)
    assert set(taps) == {"enc3", "bottleneck", "dec3", "dec2", "dec1", "out"}
    for t, v in taps.items():
        assert v.shape[1] == tap_channels(m.config, t)
        assert v.shape[2] == 16 // tap_stride(4, t)


def test_small_unet_config_roundtrip_and_errors():
    m = UNet3D(widths=(4, 8, 16), norm="instance", out_channels=5)
    m2 = build_model(json.loads(json.dumps(m.config)))
    assert m2.config == m.config
    assert m(torch.zeros(2, 1, 8, 8, 8)).shape == (2, 5, 8, 8, 8)
    with pytest.raises(ValueError, match="divisible by 4"):
        m(torch.zeros(1, 1, 10, 8, 8))
    with pytest.raises(ValueError, match="norm"):
        UNet3D(norm="group")
    with pytest.raises(ValueError, match="unknown model config keys"):
        build_model({**m.config, "depth": 3})


def test_deterministic_init_from_generator_leaves_global_rng():
    before = torch.get_rng_state()
    a = build_model({"in_channels": 1, "out_channels": 2, "widths": [4, 8], "convs_per_level": 1, "norm": "none"}, torch.Generator().manual_seed(3))
    b = build_model(dict(a.config), torch.Generator().manual_seed(3))
    c = build_model(dict(a.config), torch.Generator().manual_seed(4))
    assert torch.equal(torch.get_rng_state(), before)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def _reference_supcon(z: torch.Tensor, labels: torch.Tensor, t: float) -> torch.Tensor:
    """The plain per-anchor definition, written with Python loops."""
    m = z.shape[0]
    s = z @ z.T / t
    losses = []
    for i in range(m):
        others = [k for k in range(m) if k != i]
        pos = [j for j in others if labels[j] == labels[i]]
        if not pos:
            continue
        lse = torch.logsumexp(s[i, others], 0)
        losses.append(torch.stack([lse - s[i, j] for j in pos]).mean())
    return torch.stack(losses).mean()


@pytest.mark.parametrize("chunk", [None, 7, 1024])
def test_supcon_matches_reference_loss_and_gradients(chunk):
    g = torch.Generator().manual_seed(0)
    raw = torch.randn(30, 6, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (30,), generator=g)
    labels[5] = 9  # an anchor without positives is skipped
    z1 = raw.clone().requires_grad_(True)
    z2 = raw.clone().requires_grad_(True)
    ours = supcon_loss(F.normalize(z1, dim=1), labels, 0.33, chunk)
    ref = _reference_supcon(F.normalize(z2, dim=1), labels, 0.33)
    ours.backward()
    ref.backward()
    assert torch.allclose(ours, ref, atol=1e-10)
    assert torch.allclose(z1.grad, z2.grad, atol=1e-10)


def test_loss_samples_same_positions_in_every_view_and_all_views():
    """V = 3 views: the tap loss equals the reference on hand-gathered points."""
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(3, 5, 4, 4, 4, generator=g, dtype=torch.float64)  # B=1, V=3
    labels = torch.randint(0, 3, (1, 8, 8, 8), generator=g)
    crit = VoxelContrastiveLoss({"t": 5}, {"t": 2}, n_voxels=10, chunk_rows=8).double()
    loss, per = crit({"t": feats}, labels, 3, torch.Generator().manual_seed(7))
    idx = sample_voxels(downsample_labels(labels, 2)[0].reshape(-1), 10, torch.Generator().manual_seed(7))
    assert len(set(idx.tolist())) == 10
    pts = feats.reshape(3, 5, -1)[:, :, idx].permute(0, 2, 1).reshape(30, 5)
    z = F.normalize(crit.heads["t"](pts), dim=1)
    lab = downsample_labels(labels, 2)[0].reshape(-1)[idx].repeat(3)
    assert torch.allclose(loss, _reference_supcon(z, lab, 0.33)) and torch.allclose(per["t"], loss)


def test_sampling_all_voxels_when_fewer_and_balanced():
    g = torch.Generator().manual_seed(0)
    assert torch.equal(sample_voxels(torch.zeros(8), 512, g), torch.arange(8))
    lab = torch.zeros(1000, dtype=torch.int64)
    lab[:10] = 1  # a rare label
    idx = sample_voxels(lab, 100, g, balanced=True)
    assert len(set(idx.tolist())) == 100
    assert (lab[idx] == 1).sum() >= 8  # ~all 10 rare voxels are drawn; uniform would draw ~1
    assert (lab[sample_voxels(lab, 100, g)] == 1).sum() < 8


def test_loss_never_builds_nnc_and_tap_weights():
    crit = VoxelContrastiveLoss({"a": 3, "b": 3}, {"a": 1, "b": 1}, n_voxels=16, tap_weights=[1.0, 0.0])
    feats = {"a": torch.randn(2, 3, 4, 4, 4), "b": torch.randn(2, 3, 4, 4, 4)}
    labels = torch.randint(0, 2, (1, 4, 4, 4))
    total, per = crit(feats, labels, 2, torch.Generator().manual_seed(0))
    assert torch.allclose(total, per["a"])
    with pytest.raises(ValueError, match="one weight per tap"):
        VoxelContrastiveLoss({"a": 3}, {"a": 1}, tap_weights=[1.0, 2.0])


# ---------------------------------------------------------------- checkpoints


def _tiny() -> UNet3D:
    return build_model({"in_channels": 1, "out_channels": 4, "widths": [4, 8], "convs_per_level": 1, "norm": "batch"}, torch.Generator().manual_seed(0))


def test_checkpoint_layout_keep_latest_and_load(tmp_path):
    m = _tiny()
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, m, {"step": step, "rng": torch.Generator().get_state(), "pos": {"epoch": [0, 1]}},
                        {"engine_config_hash": "e" * 8, "store_manifest_hash": "s" * 8}, keep=2)
    ck = tmp_path / "checkpoints"
    assert sorted(p.name for p in ck.iterdir()) == ["latest", "step-000003", "step-000004"]
    assert (ck / "latest").read_text().strip() == "step-000004"
    rec = json.loads((ck / "step-000004" / "record.json").read_text())
    assert rec["normalisation"] == {"kind": "minmax", "clip": None} and rec["step"] == 4
    assert rec["engine_config_hash"] == "e" * 8 and rec["model"] == m.config and rec["schema_version"] == 1
    state = torch.load(ck / "step-000004" / "state.pt", weights_only=True)
    assert state["pos"] == {"epoch": [0, 1]} and load_state(ck / "step-000004")["step"] == 4
    m2, rec2 = load_model(tmp_path)
    assert rec2["sha256"] == rec["sha256"] and resolve_checkpoint(tmp_path) == ck / "step-000004"
    sd, sd2 = m.state_dict(), m2.state_dict()
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)
    assert not any(p.name.startswith(".") for p in ck.iterdir())


def test_bundled_checkpoint_loads_from_its_record():
    model, rec = load_model("bundled")
    assert rec["name"].startswith("bundled") and rec["step"] > 0 and rec["weights_dtype"] == "float16"
    assert next(model.parameters()).dtype == torch.float32  # fp16 on disk, float32 in use


def test_checkpoint_errors(tmp_path, monkeypatch):
    import synthvox.train.checkpoint as ckpt_mod

    m = _tiny()
    ck = save_checkpoint(tmp_path, 1, m, {})
    (tmp_path / "no-bundle").mkdir()
    monkeypatch.setattr(ckpt_mod, "BUNDLED_DIR", tmp_path / "no-bundle")
    with pytest.raises(CheckpointError, match="bundled"):
        load_model("bundled")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="neither a checkpoint dir"):
        load_model(tmp_path / "empty")
    other = UNet3D(widths=(4, 8, 16))
    from synthvox.train.checkpoint import load_weights
    with pytest.raises(CheckpointError, match="holds a model with config"):
        load_weights(ck, other)
    w = ck / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(ck)


def test_random_spec_is_deterministic_and_leaves_global_rng():
    before = torch.get_rng_state()
    a, rec = load_model("random")
    b, _ = load_model("random")
    assert torch.equal(torch.get_rng_state(), before)
    assert rec["name"] == "random" and rec["sha256"] is None and rec["normalisation"]["kind"] == "minmax"
    assert torch.equal(a.head.weight, b.head.weight) and not a.training
