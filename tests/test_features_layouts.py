"""`features --layout channels|vector|nnunet`: headers that viewers, ITK and nnU-Net read as intended."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from synthvox.downstream.features import nnunet_paths, save_features

A = np.diag([1.5, 1.5, 2.0, 1.0])
A[:3, 3] = (3, 4, 5)


def _feats(c: int = 5) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(c, 6, 7, 4)).astype(np.float32)


def test_channels_layout_is_not_time(tmp_path):
    f = _feats()
    (p,) = save_features(f, A, tmp_path / "f.nii.gz", "channels")
    img = nib.load(p)
    h = img.header
    assert img.shape == (6, 7, 4, 5)
    np.testing.assert_allclose(np.asarray(img.dataobj), f.transpose(1, 2, 3, 0))
    assert h.get_xyzt_units() == ("mm", "unknown")
    assert h.get_zooms() == (1.5, 1.5, 2.0, 0.0)  # no time step on the channel axis
    assert h.get_intent()[2] == "channels"
    np.testing.assert_allclose(img.affine, A)


def test_vector_layout_is_itk_5d(tmp_path):
    f = _feats()
    (p,) = save_features(f, A, tmp_path / "f.nii.gz", "vector")
    img = nib.load(p)
    assert img.shape == (6, 7, 4, 1, 5) and img.header["dim"][0] == 5
    assert img.header.get_intent()[0] == "vector"
    np.testing.assert_allclose(np.asarray(img.dataobj)[:, :, :, 0, :], f.transpose(1, 2, 3, 0))


def test_vector_layout_reads_as_components_in_simpleitk(tmp_path):
    sitk = pytest.importorskip("SimpleITK", reason="SimpleITK is not installed (pip install SimpleITK to run this check)")
    f = _feats()
    (p,) = save_features(f, A, tmp_path / "f.nii.gz", "vector")
    im = sitk.ReadImage(str(p))
    assert im.GetDimension() == 3 and im.GetNumberOfComponentsPerPixel() == 5
    assert im.GetSize() == (6, 7, 4) and im.GetSpacing() == (1.5, 1.5, 2.0)
    arr = sitk.GetArrayFromImage(im)  # (Z, Y, X, C)
    np.testing.assert_allclose(arr, f.transpose(3, 2, 1, 0))


def test_nnunet_layout_writes_one_file_per_channel(tmp_path):
    f = _feats(12)
    paths = save_features(f, A, tmp_path / "imagesTr" / "case01.nii.gz", "nnunet")
    assert [p.name for p in paths] == [f"case01_{c:04d}.nii.gz" for c in range(12)]
    for c, p in enumerate(paths):
        img = nib.load(p)
        assert img.shape == (6, 7, 4)
        np.testing.assert_allclose(np.asarray(img.dataobj), f[c])
        np.testing.assert_allclose(img.affine, A)
    assert nnunet_paths(tmp_path / "x" / "case02", 2)[1].name == "case02_0001.nii.gz"
    with pytest.raises(ValueError, match="case name"):
        nnunet_paths(tmp_path / ".nii.gz", 2)
    with pytest.raises(ValueError, match="layout"):
        save_features(f, A, tmp_path / "f.nii.gz", "time")


def test_features_command_layouts(tmp_path):
    from synthvox.cli.downstream_cmds import features

    nib.save(nib.Nifti1Image(np.random.default_rng(2).random((16, 16, 16)).astype(np.float32), A), tmp_path / "in.nii.gz")
    res = CliRunner().invoke(features, ["--ckpt", "random", "--layout", "nnunet", str(tmp_path / "in.nii.gz"),
                                        str(tmp_path / "nn" / "case7")])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "nn").iterdir()) == [f"case7_{c:04d}.nii.gz" for c in range(16)]
    assert "(16 files)" in res.output
    res = CliRunner().invoke(features, ["--ckpt", "random", "--layout", "vector", str(tmp_path / "in.nii.gz"),
                                        str(tmp_path / "v.nii.gz")])
    assert res.exit_code == 0 and nib.load(tmp_path / "v.nii.gz").shape == (16, 16, 16, 1, 16)
    help_text = CliRunner().invoke(features, ["--help"]).output
    assert "ITK" in help_text and "nnU-Net" in help_text and "not time" in help_text
