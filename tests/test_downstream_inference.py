"""The fused inference forward (downstream/inference.py) computes what the UNet computes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from synthvox.downstream.features import extract_features
from synthvox.downstream.inference import fused_forward
from synthvox.train.model import build_model


def _model(norm: str = "batch", seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    model = build_model({"in_channels": 1, "out_channels": 5, "widths": [4, 8, 12], "convs_per_level": 2, "norm": norm},
                        generator=g)
    # Non-trivial running statistics and affine terms so the folding is exercised.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.5, 0.5, generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)
            m.weight.data.uniform_(0.5, 1.5, generator=g)
            m.bias.data.uniform_(-0.2, 0.2, generator=g)
    return model.eval()


@pytest.mark.parametrize("norm, onednn", [("batch", True), ("none", True), ("batch", False)])
def test_fused_forward_equals_the_model(norm, onednn, monkeypatch):
    if not onednn:  # the plain-torch path (GPUs, builds without oneDNN)
        monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    model = _model(norm)
    x = torch.rand(1, 1, 12, 16, 8, generator=torch.Generator().manual_seed(1))
    fwd = fused_forward(model)
    assert fwd is not None
    with torch.inference_mode():
        ref, got = model(x), fwd(x)
    assert got.shape == ref.shape
    scale = float(ref.abs().max())
    assert scale > 0
    assert float((got - ref).abs().max()) <= 1e-5 * scale


def test_fused_forward_declines_what_it_cannot_fold():
    assert fused_forward(_model("instance")) is None
    assert fused_forward(_model("batch").train()) is None
    assert fused_forward(torch.nn.Conv3d(1, 1, 3)) is None


def test_extract_features_unchanged_by_the_fused_path():
    model = _model("batch")
    img = np.random.default_rng(0).random((11, 13, 9)).astype(np.float32)
    got = extract_features(model, img)
    with torch.inference_mode():
        x = torch.nn.functional.pad(torch.from_numpy((img - img.min()) / (img.max() - img.min()))[None, None],
                                    (0, 3, 0, 3, 0, 1), mode="replicate")
        ref = model(x)[0, :, :11, :13, :9]
    assert got.shape == (5, 11, 13, 9)
    assert float((got - ref).abs().max()) <= 1e-5 * float(ref.abs().max())
    # Training-mode callers (pretraining) get their model back untouched.
    assert all(p.requires_grad for p in model.parameters())
