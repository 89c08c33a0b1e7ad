"""Normalisation, whole-volume vs sliding-window inference, PCA PNG, the features command."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from synthvox.downstream.features import extract_features, normalise_image, write_pca_png


class _PointNet(torch.nn.Module):
    """A stand-in network: 1x1x1 convs, so any tiling gives exactly the whole-volume result."""

    divisor = 16

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv3d(1, 4, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g))
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(n % 16 for n in x.shape[2:]):
            raise ValueError("input sides must be multiples of 16")
        return torch.tanh(self.conv(x))


def test_normalise_image_edge_cases():
    x = np.array([[[-5.0, 0.0], [5.0, np.nan]]], np.float32)
    y = normalise_image(x).numpy()
    np.testing.assert_allclose(y, [[[0.0, 0.5], [1.0, 0.0]]])          # NaN -> the minimum
    ct = np.array([[[-1000.0, -450.0], [0.0, 3000.0]]], np.float32)
    y = normalise_image(ct, {"kind": "minmax", "clip": [-450, 450]}).numpy()
    np.testing.assert_allclose(y, [[[0.0, 0.0], [0.5, 1.0]]])
    assert normalise_image(np.full((2, 2, 2), 7.0)).abs().sum() == 0   # constant -> zeros
    with pytest.raises(ValueError, match="zscore"):
        normalise_image(x, {"kind": "zscore"})


def test_whole_volume_and_sliding_window_agree():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(21, 35, 18)).astype(np.float32)
    net = _PointNet()
    whole = extract_features(net, img, None)
    tiled = extract_features(net, img, None, max_voxels=16**3)            # forces 16^3 windows
    assert whole.shape == (4, 21, 35, 18) and whole.dtype == torch.float32
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=1e-5)
    expect = torch.tanh(net.conv(normalise_image(img)[None, None]))[0]
    torch.testing.assert_close(whole, expect, atol=1e-6, rtol=1e-5)


def test_reference_network_features_and_pca_png(tmp_path):
    from synthvox.train.checkpoint import load_model

    model, rec = load_model("random")
    img = np.random.default_rng(1).random((20, 24, 17)).astype(np.float32)
    f = extract_features(model, img, rec["normalisation"])
    assert f.shape == (16, 20, 24, 17) and torch.isfinite(f).all()
    p = write_pca_png(img, f, tmp_path / "pca.png")
    assert p.stat().st_size > 1000


def test_features_command(tmp_path):
    import nibabel as nib

    from synthvox.cli.downstream_cmds import features
    from synthvox.cli.main import main

    A = np.diag([1.5, 1.5, 2.0, 1.0])
    A[:3, 3] = (3, 4, 5)
    nib.save(nib.Nifti1Image(np.random.default_rng(2).random((16, 18, 12)).astype(np.float32), A), tmp_path / "in.nii.gz")
    res = CliRunner().invoke(features, ["--ckpt", "random", str(tmp_path / "in.nii.gz"), str(tmp_path / "out.nii.gz"),
                                        "--dtype", "float16", "--pca-png", str(tmp_path / "p.png"), "--clip", "0", "0.5"])
    assert res.exit_code == 0, res.output
    assert "checkpoint: random" in res.output
    out = nib.load(tmp_path / "out.nii.gz")
    assert out.shape == (16, 18, 12, 16) and out.get_data_dtype() == np.int16   # 2 bytes, scaled
    assert np.isfinite(out.get_fdata()).all() and out.get_fdata().std() > 0
    np.testing.assert_allclose(out.affine, A)
    assert (tmp_path / "p.png").is_file()
    bad = CliRunner().invoke(main, ["features", "--ckpt", str(tmp_path / "nope"), str(tmp_path / "in.nii.gz"), str(tmp_path / "o.nii.gz")])
    assert bad.exit_code != 0 and "does not exist" in bad.output
