"""Metrics on hand-computed cases, and agreement with MONAI where the definitions agree."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from synthvox.downstream.metrics import (dice_per_label, folding_fraction, hd95, hd95_per_label, jacobian_determinant,
                                         macro_dice, sdlogj)


def test_dice_hand_computed_and_absent_labels():
    ref = np.zeros((4, 4, 4), int)
    pred = np.zeros((4, 4, 4), int)
    ref[0, 0, :2] = 1                 # |R1| = 2
    pred[0, 0, :4] = 1                # |P1| = 4, overlap 2 -> 2*2/6
    pred[3, 3, 3] = 3                 # label 3 only in pred -> 0
    d = dice_per_label(pred, ref, labels=[1, 2, 3])
    assert d[1] == pytest.approx(4 / 6)
    assert math.isnan(d[2])           # absent from both: reported as NaN, not scored
    assert d[3] == 0.0
    assert macro_dice(d) == pytest.approx((4 / 6 + 0) / 2)
    assert math.isnan(macro_dice({5: float("nan")}))
    assert dice_per_label(ref, ref) == {1: 1.0}


def test_dice_agrees_with_monai():
    from monai.metrics import compute_dice

    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 4, (10, 11, 12)), rng.integers(0, 4, (10, 11, 12))
    ours = dice_per_label(a, b, labels=[1, 2, 3])
    oh = lambda x: torch.nn.functional.one_hot(torch.from_numpy(x), 4).permute(3, 0, 1, 2)[None].float()
    theirs = compute_dice(oh(a), oh(b), include_background=False)[0].numpy()
    np.testing.assert_allclose([ours[i] for i in (1, 2, 3)], theirs, rtol=1e-6)


def test_hd95_hand_computed_and_edge_cases():
    a = np.zeros((6, 6, 8), bool)
    b = np.zeros_like(a)
    a[2, 2, 2] = True
    b[2, 2, 5] = True
    assert hd95(a, b, spacing=(1.0, 1.0, 2.0)) == pytest.approx(6.0)   # 3 voxels x 2 mm
    assert math.isnan(hd95(np.zeros_like(a), np.zeros_like(a)))
    assert math.isinf(hd95(a, np.zeros_like(a)))
    assert hd95(a, a) == 0.0
    lab = a.astype(int) + 2 * b
    assert hd95_per_label(lab, lab, (1, 1, 2)) == {1: 0.0, 2: 0.0}


def test_hd95_agrees_with_monai():
    from monai.metrics import compute_hausdorff_distance
    from scipy import ndimage

    rng = np.random.default_rng(1)
    a = ndimage.gaussian_filter(rng.random((20, 22, 18)), 2) > 0.5
    b = ndimage.gaussian_filter(rng.random((20, 22, 18)), 2) > 0.5
    sp = (1.0, 1.5, 2.0)
    theirs = compute_hausdorff_distance(torch.from_numpy(a)[None, None].float(), torch.from_numpy(b)[None, None].float(),
                                        percentile=95, spacing=sp)
    assert hd95(a, b, sp) == pytest.approx(float(theirs), rel=1e-4)


def _grid(shape):
    return np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"))


def test_jacobian_identity_linear_and_units():
    shape = (6, 7, 8)
    assert np.allclose(jacobian_determinant(np.zeros((3,) + shape)), 1.0)
    g = _grid(shape)
    u = np.zeros((3,) + shape)
    u[0] = 0.5 * g[0]                  # stretch axis 0 by 1.5
    assert np.allclose(jacobian_determinant(u), 1.5)
    # Same field in mm on a 2 mm grid: u = 0.5 mm per voxel = 0.25 per mm.
    assert np.allclose(jacobian_determinant(u, spacing=(2.0, 1.0, 1.0)), 1.25)
    # A rotation about axis 2 preserves volume.
    c, s = math.cos(0.3), math.sin(0.3)
    r = np.zeros((3,) + shape)
    r[0] = c * g[0] - s * g[1] - g[0]
    r[1] = s * g[0] + c * g[1] - g[1]
    assert np.allclose(jacobian_determinant(r), 1.0)


def test_folding_and_sdlogj():
    shape = (5, 5, 5)
    g = _grid(shape)
    u = np.zeros((3,) + shape)
    u[0] = -2.0 * g[0]                 # x -> -x: det = -1 everywhere
    det = jacobian_determinant(u)
    assert folding_fraction(det) == 1.0
    assert math.isnan(sdlogj(det))     # no positive determinant
    det = np.ones(shape)
    det[0] = np.e                      # log det: 1 on 25 voxels, 0 on 100
    assert sdlogj(det) == pytest.approx(np.std([1.0] * 25 + [0.0] * 100))
    det[1] = 0.0                       # zero counts as folded, and is left out of SDlogJ
    assert folding_fraction(det) == pytest.approx(25 / 125)
    mask = np.zeros(shape, bool)
    mask[2:] = True
    assert folding_fraction(det, mask) == 0.0 and sdlogj(det, mask) == 0.0
