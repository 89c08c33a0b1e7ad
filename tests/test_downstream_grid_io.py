"""The grid_sample helper against scipy, world-correct resampling, NIfTI and displacement I/O."""
from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from synthvox.downstream.grid import resample_to_grid, sample_voxels, voxel_grid, warp_volume
from synthvox.downstream.io import load_displacement, load_labels, load_nifti, save_displacement, save_nifti


def _oblique(spacing, angle_deg, origin):
    a = math.radians(angle_deg)
    r = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    r = r @ np.array([[1, 0, 0], [0, math.cos(a / 2), -math.sin(a / 2)], [0, math.sin(a / 2), math.cos(a / 2)]])
    A = np.eye(4)
    A[:3, :3] = r * np.asarray(spacing)[None]
    A[:3, 3] = origin
    return A


def test_sample_voxels_matches_map_coordinates():
    rng = np.random.default_rng(0)
    vol = rng.random((7, 9, 11)).astype(np.float32)
    pts = rng.uniform(-0.5, [6.5, 8.5, 10.5], (5, 4, 3, 3)).astype(np.float32)   # some just outside
    ours = sample_voxels(torch.from_numpy(vol)[None, None], torch.from_numpy(pts)[None])[0, 0].numpy()
    ref = ndimage.map_coordinates(vol.astype(np.float64), pts.reshape(-1, 3).T, order=1, mode="constant", cval=0.0)
    inside = ((pts >= 0) & (pts <= np.array([6, 8, 10]))).all(-1).ravel()
    np.testing.assert_allclose(ours.ravel()[inside], ref[inside], atol=1e-5)
    # Integer positions give the voxel values exactly, in both modes.
    g = voxel_grid(vol.shape)[None]
    for mode in ("linear", "nearest"):
        np.testing.assert_allclose(sample_voxels(torch.from_numpy(vol)[None, None], g, mode)[0, 0].numpy(), vol, atol=1e-6)


def test_world_landmark_lands_where_map_coordinates_says():
    # Moving: anisotropic and oblique; fixed: another spacing and origin. A blob at world point p.
    A_m = _oblique((1.2, 0.9, 1.5), 25.0, (-20.0, -15.0, -10.0))
    A_f = _oblique((1.0, 1.0, 1.0), 0.0, (-14.0, -12.0, -8.0))
    shape_m, shape_f = (30, 36, 24), (28, 30, 26)
    p = np.array([-2.0, 3.0, 4.0])
    wm = np.einsum("ij,jxyz->ixyz", A_m[:3, :3], np.indices(shape_m).astype(float)) + A_m[:3, 3, None, None, None]
    moving = np.exp(-((wm - p[:, None, None, None]) ** 2).sum(0) / (2 * 3.0**2)).astype(np.float32)
    out = resample_to_grid(moving, A_m, shape_f, A_f)
    # Same values as map_coordinates at inv(A_m) @ A_f @ index.
    idx = np.indices(shape_f).reshape(3, -1)
    src = (np.linalg.inv(A_m) @ A_f @ np.vstack([idx, np.ones(idx.shape[1])]))[:3]
    ref = ndimage.map_coordinates(moving.astype(np.float64), src, order=1, mode="constant", cval=0.0).reshape(shape_f)
    inside = ((src >= 0) & (src <= np.array(shape_m)[:, None] - 1)).all(0).reshape(shape_f)
    assert inside.mean() > 0.3
    np.testing.assert_allclose(out[inside], ref[inside], atol=1e-5)
    # The blob's centroid lands at p in world coordinates (within 0.2 mm).
    c = np.array(ndimage.center_of_mass(out))
    assert np.linalg.norm((A_f @ np.append(c, 1))[:3] - p) < 0.2


def test_nearest_keeps_labels():
    lab = np.arange(60, dtype=np.int32).reshape(3, 4, 5) * 1000
    out = warp_volume(lab, voxel_grid(lab.shape) + 0.3, "nearest")
    assert out.dtype == np.int32 and set(np.unique(out)) <= set(np.unique(lab))
    np.testing.assert_array_equal(out, lab)


def test_nifti_roundtrip_scaling_nan_and_labels(tmp_path):
    A = _oblique((1.0, 2.0, 3.0), 10.0, (1.0, 2.0, 3.0))
    raw = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    img = nib.Nifti1Image(raw, A)
    img.header.set_slope_inter(2.0, -5.0)
    nib.save(img, tmp_path / "s.nii.gz")
    v = load_nifti(tmp_path / "s.nii.gz")
    np.testing.assert_allclose(v.data, raw * 2.0 - 5.0)
    np.testing.assert_allclose(v.affine, A, atol=1e-5)
    assert v.spacing == pytest.approx((1.0, 2.0, 3.0))
    x = np.ones((2, 3, 4, 1), np.float32)
    x[0, 0, 0] = np.nan
    save_nifti(x, A, tmp_path / "n.nii.gz")
    assert load_nifti(tmp_path / "n.nii.gz").data.shape == (2, 3, 4)   # trailing axis dropped, NaN kept
    assert np.isnan(load_nifti(tmp_path / "n.nii.gz").data[0, 0, 0])
    with pytest.raises(ValueError, match="integers"):
        load_labels(tmp_path / "n.nii.gz")
    assert not list(tmp_path.glob(".*"))   # no temporaries left behind


def test_displacement_itk_layout(tmp_path):
    A = _oblique((2.0, 2.0, 2.0), 0.0, (0.0, 0.0, 0.0))
    d = np.random.default_rng(0).normal(size=(4, 5, 6, 3)).astype(np.float32)
    save_displacement(d, A, tmp_path / "d.nii.gz")
    img = nib.load(tmp_path / "d.nii.gz")
    assert img.shape == (4, 5, 6, 1, 3)
    assert img.header.get_intent()[0] == "vector"
    assert "LPS" in img.header["descrip"].tobytes().decode()
    raw = np.asarray(img.dataobj)[:, :, :, 0, :]
    np.testing.assert_allclose(raw[..., :2], -d[..., :2])             # LPS components on disk
    back, aff = load_displacement(tmp_path / "d.nii.gz")
    np.testing.assert_allclose(back, d)
    np.testing.assert_allclose(aff, A)


def test_sample_voxels_many_channels_equals_per_channel():
    rng = np.random.default_rng(3)
    vol = torch.from_numpy(rng.random((1, 5, 6, 7, 8)).astype(np.float32))
    pts = torch.from_numpy(rng.uniform(0, 5, (1, 3, 4, 2, 3)).astype(np.float32))
    many = sample_voxels(vol, pts)
    for c in range(5):
        torch.testing.assert_close(many[:, c:c + 1], sample_voxels(vol[:, c:c + 1], pts))
