"""Registration: a known smooth warp is recovered; world-correctness across spacings and an
oblique affine; outputs per the Coordinates/Results contracts; checkpoint errors; no network
needed for --features mind."""
from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy import ndimage

from synthvox.downstream.grid import resample_to_grid, voxel_grid, warp_volume
from synthvox.downstream.io import Volume, load_displacement
from synthvox.downstream.metrics import dice_per_label, folding_fraction, jacobian_determinant, macro_dice
from synthvox.downstream.registration import RegistrationConfig, register_volumes

N = 40


def _pair(n: int = N, seed: int = 0, max_disp: float = 5.0):
    """Blobs (8 labels, background 0) and a copy pulled through a smooth known field."""
    rng = np.random.default_rng(seed)
    g = np.indices((n,) * 3).transpose(1, 2, 3, 0).astype(np.float32)
    lab = np.zeros((n,) * 3, np.int32)
    for label in range(1, 9):
        c, r = rng.uniform(n * 0.25, n * 0.75, 3), rng.uniform(n * 0.1, n * 0.22, 3)
        lab[(((g - c) / r) ** 2).sum(-1) < 1] = label
    vals = np.concatenate([[0.0], rng.uniform(0.2, 1.0, 8)])
    img = ndimage.gaussian_filter(vals[lab].astype(np.float32), 0.7)
    coarse = rng.normal(size=(3, 4, 4, 4))
    d = np.stack([ndimage.zoom(x, n / 4, order=3) for x in coarse])
    d = (d / np.abs(d).max() * max_disp).astype(np.float32)
    coords = torch.from_numpy(g + d.transpose(1, 2, 3, 0))
    return img, lab, warp_volume(img, coords), warp_volume(lab, coords, "nearest")


def _oblique(spacing, angle_deg, origin):
    a = math.radians(angle_deg)
    r = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    A = np.eye(4)
    A[:3, :3] = r * np.asarray(spacing)[None]
    A[:3, 3] = origin
    return A


@pytest.fixture(scope="module")
def pair():
    return _pair()


def test_known_warp_recovered_with_inverted_contrast(pair):
    img, lab, mimg, mlab = pair
    A = np.eye(4)
    res = register_volumes(Volume(img, A), Volume(1.0 - mimg, A), RegistrationConfig(features="mind"))
    before = macro_dice(dice_per_label(mlab, lab))
    after = macro_dice(dice_per_label(res.warp(mlab, "nearest"), lab))
    det = jacobian_determinant(res.disp_voxels)
    assert after >= before + 0.10, (before, after)
    assert folding_fraction(det) < 0.001
    assert set(res.seconds) >= {"features", "affine", "convex", "adam"}


def test_world_correct_across_spacing_and_oblique_affine(pair):
    """The moving image resampled to 1.3 mm on a grid rotated by 20 degrees registers to the
    same world-space result: warped labels agree (Dice >= 0.8 between the runs; each is ~0.86
    to the truth), the world displacements differ by < 1 mm (median inside the labels; 0.4
    measured) and the Dice to the truth differs by < 0.05."""
    img, lab, mimg, mlab = pair
    A = np.eye(4)
    cfg = RegistrationConfig(features="intensity")
    ref = register_volumes(Volume(img, A), Volume(mimg, A), cfg)
    A2 = _oblique((1.3, 1.3, 1.3), 20.0, (-4.0, -2.0, -3.0))
    shape2 = (40, 40, 34)
    m2 = resample_to_grid(mimg, A, shape2, A2)
    l2 = resample_to_grid(mlab, A, shape2, A2, "nearest")
    # The resampled copy must cover the anatomy, else this test says nothing.
    assert abs(int((l2 > 0).sum()) * 1.3**3 - int((mlab > 0).sum())) < 0.1 * int((mlab > 0).sum())
    out = register_volumes(Volume(img, A), Volume(m2, A2), cfg)
    w_ref, w_out = ref.warp(mlab, "nearest"), out.warp(l2, "nearest")
    agree = macro_dice(dice_per_label(w_out, w_ref))
    assert agree >= 0.8, agree
    fg = lab > 0
    diff = np.linalg.norm(ref.disp_world - out.disp_world, axis=-1)[fg]
    assert np.median(diff) < 1.0, np.median(diff)
    d_ref, d_out = macro_dice(dice_per_label(w_ref, lab)), macro_dice(dice_per_label(w_out, lab))
    assert abs(d_ref - d_out) < 0.05, (d_ref, d_out)
    # The oblique run actually did something beyond the header alignment.
    assert d_out > macro_dice(dice_per_label(resample_to_grid(l2, A2, lab.shape, A, "nearest"), lab)) + 0.05


def _write(tmp, name, data, A=np.eye(4)):
    nib.save(nib.Nifti1Image(np.asarray(data), A), tmp / name)
    return str(tmp / name)


def test_register_command_mind_needs_no_checkpoint_and_writes_contract(tmp_path):
    from synthvox.cli.downstream_cmds import register
    from synthvox.downstream.results import read_records

    img, lab, mimg, mlab = _pair(n=32, seed=1, max_disp=3.0)
    A_f = np.diag([2.0, 2.0, 2.0, 1.0])
    A_f[:3, 3] = (-30, -30, -30)
    f, fl = _write(tmp_path, "f.nii.gz", img, A_f), _write(tmp_path, "fl.nii.gz", lab.astype(np.int16), A_f)
    m, ml = _write(tmp_path, "m.nii.gz", 1 - mimg, A_f), _write(tmp_path, "ml.nii.gz", mlab.astype(np.int16), A_f)
    out = tmp_path / "out"
    # Default --ckpt is "bundled": mind must not even load it.
    r = CliRunner().invoke(register, ["--fixed", f, "--moving", m, "--fixed-labels", fl, "--moving-labels", ml,
                                      "--features", "mind", "--l2r", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "no checkpoint needed" in r.output
    for name in ("disp.nii.gz", "disp_l2r.nii.gz", "warped.nii.gz", "warped_labels.nii.gz", "metrics.json", "overview.png"):
        assert (out / name).is_file(), name
    (rec,) = read_records([out / "metrics.json"])
    assert rec["task"] == "registration" and rec["method"] == "mind" and rec["checkpoint"] is None
    assert rec["units"]["hd95_after"] == "mm" and rec["units"]["seconds_total"] == "s"
    assert rec["metrics"]["dice_macro_after"] > rec["metrics"]["dice_macro_before"]
    assert set(rec["metrics"]["dice_after"]) == {str(i) for i in range(1, 9)}
    # The written field is a pull-back in world mm: sampling the moving image at
    # inv(A_m) (A_f i + u) reproduces warped.nii.gz.
    disp, aff = load_displacement(out / "disp.nii.gz")
    np.testing.assert_allclose(aff, A_f)
    g = np.indices(img.shape).reshape(3, -1)
    world = A_f[:3, :3] @ g + A_f[:3, 3:] + disp.reshape(-1, 3).T
    src = np.linalg.inv(A_f)[:3, :3] @ world + np.linalg.inv(A_f)[:3, 3:]
    mov = nib.load(m).get_fdata()
    pulled = ndimage.map_coordinates(mov, src, order=1, mode="nearest").reshape(img.shape)
    warped = nib.load(out / "warped.nii.gz").get_fdata()
    inner = (slice(2, -2),) * 3
    np.testing.assert_allclose(pulled[inner], warped[inner], atol=1e-3)
    l2r = nib.load(out / "disp_l2r.nii.gz").get_fdata()
    np.testing.assert_allclose(l2r * 2.0, disp * np.array([1, 1, 1]), atol=1e-3)   # same grid: voxels x 2 mm


def test_register_batch_relative_paths(tmp_path):
    from synthvox.cli.downstream_cmds import register_batch
    from synthvox.cli.main import main

    img, lab, mimg, mlab = _pair(n=24, seed=2, max_disp=2.0)
    d = tmp_path / "data"
    d.mkdir()
    _write(d, "f.nii.gz", img), _write(d, "m.nii.gz", mimg), _write(d, "fl.nii.gz", lab.astype(np.int16))
    _write(d, "ml.nii.gz", mlab.astype(np.int16))
    (d / "pairs.json").write_text(json.dumps({"pairs": [{"fixed": "f.nii.gz", "moving": "m.nii.gz", "fixed_labels": "fl.nii.gz",
                                                          "moving_labels": "ml.nii.gz", "case": "p0"}]}))
    r = CliRunner().invoke(register_batch, [str(d / "pairs.json"), "--features", "intensity", "--no-png", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "o" / "p0" / "metrics.json").read_text())
    assert rec["case"] == "p0" and rec["extra"]["direction"] == "moving -> fixed"
    (d / "bad.json").write_text(json.dumps([{"fixed": "f.nii.gz"}]))
    r = CliRunner().invoke(main, ["register-batch", str(d / "bad.json"), "--features", "mind", "--out", str(tmp_path / "o2")])
    assert r.exit_code != 0 and "needs keys 'fixed' and 'moving'" in r.output


def test_checkpoint_errors_are_clear(tmp_path):
    from synthvox.downstream.network import CheckpointLoadError, load_network
    from synthvox.train.checkpoint import save_checkpoint
    from synthvox.train.model import build_model

    small = build_model({"in_channels": 1, "out_channels": 4, "widths": [4, 8], "convs_per_level": 1, "norm": "batch"},
                        generator=torch.Generator().manual_seed(0))
    ck = save_checkpoint(tmp_path / "run", 1, small, {"step": torch.tensor(1)})
    model, rec = load_network(str(tmp_path / "run"), echo=None)
    assert model.config["widths"] == [4, 8]
    # Another model config than the weights.
    rj = ck / "record.json"
    r = json.loads(rj.read_text())
    r["model"]["widths"] = [8, 16]
    rj.write_text(json.dumps(r))
    with pytest.raises(CheckpointLoadError, match="does not fit"):
        load_network(str(ck), echo=None)
    # A corrupt weights file.
    r["model"]["widths"] = [4, 8]
    rj.write_text(json.dumps(r))
    (ck / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointLoadError, match="corrupt"):
        load_network(str(ck), echo=None)
    # A corrupt record.
    rj.write_text("{ nope")
    with pytest.raises(CheckpointLoadError, match=str(ck.name)):
        load_network(str(ck), echo=None)


@pytest.mark.slow
def test_colin27_known_warp_mind(mricron_dir):
    """Real anatomy: Colin27 at 2 mm against itself through a smooth 8 mm field, inverted contrast."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.bench_registration import colin_pair
    from synthvox.downstream.registration import registration_metrics

    fixed, flab, moving, mlab, _ = colin_pair()
    res = register_volumes(fixed, moving, RegistrationConfig(features="mind"))
    m, _, _ = registration_metrics(flab, mlab, res.warp(mlab, "nearest"), fixed.spacing, res.disp_voxels, hd=False)
    assert m["dice_macro_after"] >= m["dice_macro_before"] + 0.08, m
    assert m["folding_fraction"] < 0.001


def test_cost_volume_equals_direct_ssd_per_offset():
    """The matrix-product cost volume equals |f(x) - m(x + o)|^2 / C per offset (moving edge-
    replicated), box-filtered over 3x3x3 cells (edge-replicated) and normalised to mean 1."""
    import torch.nn.functional as F

    from synthvox.downstream.registration.convex import cost_volume

    g = torch.Generator().manual_seed(0)
    f, m = torch.randn(1, 5, 6, 7, 8, generator=g), torch.randn(1, 5, 6, 7, 8, generator=g)
    r = 2
    mp = F.pad(m, (r,) * 6, mode="replicate")[0]
    cost, offs = cost_volume(f, m, r)
    assert cost.shape == (6 * 7 * 8, 125) and offs.shape == (125, 3)
    direct = torch.stack([((f[0] - mp[:, r + a: r + a + 6, r + b: r + b + 7, r + c: r + c + 8]) ** 2).mean(0)
                          for a, b, c in offs.long().tolist()])
    box = F.avg_pool3d(F.pad(direct[None], (1,) * 6, mode="replicate"), 3, stride=1)[0]
    ref = box.reshape(125, -1).T
    torch.testing.assert_close(cost, ref / ref.mean(), rtol=1e-4, atol=1e-5)
    # The zero offset of identical features costs least everywhere inside.
    c0, _ = cost_volume(f, f, r)
    assert (c0.argmin(1) == 62).float().mean() > 0.9


def test_pooled_features_match_full_resolution_and_levels():
    from synthvox.downstream.registration.fields import pool
    from synthvox.downstream.registration.pipeline import _pad, compute_features, pooled_features

    img = _pair(n=20, seed=3)[0]
    cfg = RegistrationConfig(features="mind")
    full = compute_features(img, cfg, None, None)
    got, var = pooled_features(img, cfg, None, None, multiple=8, level=2)
    torch.testing.assert_close(got, pool(_pad(full, 8), 2), rtol=1e-5, atol=1e-6)
    assert var == pytest.approx(float(full.var(dim=(2, 3, 4)).mean()), rel=1e-5)
    # Level 4: MIND on the image pooled by 2 (radius and dilation halved), same grid and range.
    assert cfg.mind_level_for(4) == 2 and cfg.mind_level_for(2) == 1
    coarse, _ = pooled_features(img, cfg, None, None, multiple=8, level=4)
    assert coarse.shape == (1, 12, 6, 6, 6) and float(coarse.min()) > 0 and float(coarse.max()) <= 1
    assert RegistrationConfig().affine_level_for((160, 192, 160)) == 8   # a power of two
    assert RegistrationConfig().adam_level_for((160, 192, 160)) == 4


def test_stage_threads_are_restored(pair):
    img, lab, mimg, mlab = pair
    before = torch.get_num_threads()
    cfg = RegistrationConfig(features="intensity", opt_threads=2, adam_iters=2, affine_iters=2)
    res = register_volumes(Volume(img, np.eye(4)), Volume(mimg, np.eye(4)), cfg)
    assert torch.get_num_threads() == before
    assert set(res.cpu_seconds) == set(res.seconds) and all(v >= 0 for v in res.cpu_seconds.values())


def test_principal_channels_keep_the_squared_difference():
    """Features of rank 3 in 6 channels: 3 principal channels, the channel-mean squared
    difference unchanged (the projection is orthonormal, scaled by sqrt(k / C)); energy 1: as is."""
    from synthvox.downstream.registration.instance import principal_channels

    g = torch.Generator().manual_seed(0)
    basis = torch.randn(6, 3, generator=g)
    f = (basis @ torch.randn(3, 500, generator=g)).reshape(1, 6, 5, 10, 10)
    m = (basis @ torch.randn(3, 500, generator=g)).reshape(1, 6, 5, 10, 10)
    pf, pm = principal_channels(f, m, 0.999)
    assert pf.shape == (1, 3, 5, 10, 10) and pm.shape == pf.shape
    torch.testing.assert_close(((pf - pm) ** 2).mean(1), ((f - m) ** 2).mean(1), rtol=1e-4, atol=1e-5)
    same = principal_channels(f, m, 1.0)
    assert same[0] is f and same[1] is m


# --- issue #17: large warps, gross headers, diffeomorphic output, determinism, user errors ----

def _dice_after(res, mlab, lab):
    return macro_dice(dice_per_label(res.warp(mlab, "nearest"), lab))


@pytest.fixture(scope="module")
def pair10():
    return _pair(n=56, seed=4, max_disp=10.0)


def test_ten_voxel_warp_recovered(pair10):
    img, lab, mimg, mlab = pair10
    A = np.eye(4)
    res = register_volumes(Volume(img, A), Volume(1.0 - mimg, A), RegistrationConfig(features="mind"))
    before, after = macro_dice(dice_per_label(mlab, lab)), _dice_after(res, mlab, lab)
    assert after >= before + 0.15, (before, after)
    assert folding_fraction(jacobian_determinant(res.disp_voxels)) < 0.005


def test_diffeomorphic_has_no_folding_on_a_hard_pair():
    """A 16-voxel warp of a 56^3 volume with a weaker regulariser: the displacement run folds
    (0.08% measured), the velocity run does not."""
    img, lab, mimg, mlab = _pair(n=56, seed=4, max_disp=16.0)
    A = np.eye(4)
    cfg = RegistrationConfig(features="mind", diffeomorphic=True, lambda_reg=0.5)
    res = register_volumes(Volume(img, A), Volume(1.0 - mimg, A), cfg)
    plain = register_volumes(Volume(img, A), Volume(1.0 - mimg, A), RegistrationConfig(features="mind", lambda_reg=0.5))
    assert folding_fraction(jacobian_determinant(plain.disp_voxels)) > 0
    assert folding_fraction(jacobian_determinant(res.disp_voxels)) == 0.0
    assert res.info["diffeomorphic"] is True
    assert _dice_after(res, mlab, lab) > macro_dice(dice_per_label(mlab, lab)) + 0.1


def test_gross_header_offset_recovered(pair):
    """The moving header moved by 12 cm and rotated by 20 degrees: the automatic start leaves
    the header (no overlap) and the result matches the plain pair's."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.peer_pairs import rigid_world

    img, lab, mimg, mlab = pair
    A = np.eye(4)
    cfg = RegistrationConfig(features="mind")
    ref = register_volumes(Volume(img, A), Volume(1.0 - mimg, A), cfg)
    M = rigid_world(20.0, (1.0, 0.0, 0.0), (80.0, -60.0, 60.0), np.full(3, (N - 1) / 2.0))
    res = register_volumes(Volume(img, A), Volume(1.0 - mimg, M @ A), cfg)
    assert res.info["init"]["kind"] in ("com", "moments") and res.info["init"]["header_foreground_dice"] < 0.1
    assert res.info["init"]["translation_mm"] > 80
    assert _dice_after(res, mlab, lab) >= _dice_after(ref, mlab, lab) - 0.03
    hdr = register_volumes(Volume(img, A), Volume(1.0 - mimg, M @ A), RegistrationConfig(features="mind", init="header"))
    assert _dice_after(hdr, mlab, lab) < 0.2


def test_same_call_gives_the_same_field_bit_for_bit(pair, tmp_path):
    """Twice in this process and once in a fresh one (2 torch threads): identical bytes."""
    import subprocess
    import sys

    img, lab, mimg, mlab = pair
    np.save(tmp_path / "f.npy", img)
    np.save(tmp_path / "m.npy", 1.0 - mimg)
    code = ("import sys, numpy as np, torch\ntorch.set_num_threads(2)\n"
            "from synthvox.downstream.io import Volume\n"
            "from synthvox.downstream.registration import RegistrationConfig, register_volumes\n"
            f"d = r'{tmp_path}'\n"
            "r = register_volumes(Volume(np.load(d + '/f.npy'), np.eye(4)), Volume(np.load(d + '/m.npy'), np.eye(4)),"
            " RegistrationConfig(features='mind'))\n"
            "np.save(d + '/c.npy', r.coords)\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runs = [register_volumes(Volume(img, np.eye(4)), Volume(1.0 - mimg, np.eye(4)), RegistrationConfig(features="mind"))
                for _ in range(2)]
    finally:
        torch.set_num_threads(old)
    assert runs[0].coords.tobytes() == runs[1].coords.tobytes()
    assert runs[0].coords.tobytes() == np.load(tmp_path / "c.npy").tobytes()


@pytest.mark.parametrize("kw, kept", [({"affine_min_gain": 0.0}, True), ({"affine_min_gain": 1.0}, False),
                                      ({"affine": False}, False)])
def test_same_call_same_field_with_and_without_the_affine_kept(pair, kw, kept):
    """Bit-for-bit repeatable whichever way the affine decision goes (kept, fitted and dropped,
    not run), for the field, the warped image and the affine."""
    img, lab, mimg, mlab = pair
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runs = [register_volumes(Volume(img, np.eye(4)), Volume(1.0 - mimg, np.eye(4)),
                                 RegistrationConfig(features="mind", **kw)) for _ in range(2)]
    finally:
        torch.set_num_threads(old)
    assert runs[0].info["affine"]["kept"] is kept
    if kept:
        assert not np.array_equal(runs[0].affine_voxels, np.eye(4))
    for name in ("coords", "disp_world", "disp_voxels", "warped", "affine_voxels"):
        assert getattr(runs[0], name).tobytes() == getattr(runs[1], name).tobytes(), name


def test_labels_need_their_partner_and_case_id(tmp_path):
    from synthvox.cli.downstream_cmds import register
    from synthvox.downstream.registration.run import case_id

    img, lab, mimg, mlab = _pair(n=24, seed=5, max_disp=2.0)
    d = tmp_path / "subj01"
    d.mkdir()
    f, m = _write(d, "fixed.nii.gz", img), _write(d, "moving.nii.gz", mimg)
    fl = _write(d, "fl.nii.gz", lab.astype(np.int16))
    from synthvox.cli.main import main

    r = CliRunner().invoke(main, ["register", "--fixed", f, "--moving", m, "--fixed-labels", fl, "--features", "mind",
                                  "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "--fixed-labels was given without --moving-labels" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "o").exists()
    assert case_id(f, m) == "subj01-moving_to_subj01-fixed"
    assert case_id("/x/a/t1_sub2.nii.gz", "/x/b/t1_sub7.nii") == "t1_sub7_to_t1_sub2"
    r = CliRunner().invoke(register, ["--fixed", f, "--moving", m, "--features", "mind", "--no-png", "--name", "case7",
                                      "--init", "com", "--out", str(tmp_path / "o2")])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[-1].startswith("case7:")
    rec = json.loads((tmp_path / "o2" / "metrics.json").read_text())
    assert rec["case"] == "case7" and rec["extra"]["init"]["kind"] == "com"
    assert rec["extra"]["affine"]["ran"] is True and "kept" in rec["extra"]["affine"]
    assert rec["extra"]["deformable"].startswith("displacement")


def test_simpleitk_snippet_of_the_readme_reproduces_warped(tmp_path):
    """The README's SimpleITK lines applied to disp.nii.gz give synthvox's warped image."""
    sitk = pytest.importorskip("SimpleITK")
    from synthvox.cli.downstream_cmds import register

    img, lab, mimg, mlab = _pair(n=32, seed=6, max_disp=3.0)
    A = _oblique((2.0, 2.0, 2.0), 10.0, (-30.0, -20.0, -25.0))
    f, m = _write(tmp_path, "f.nii.gz", img, A), _write(tmp_path, "m.nii.gz", mimg, A)
    out = tmp_path / "reg"
    r = CliRunner().invoke(register, ["--fixed", f, "--moving", m, "--features", "mind", "--no-png", "--out", str(out)])
    assert r.exit_code == 0, r.output
    # --- the README's snippet ---
    fixed = sitk.ReadImage(f)
    moving = sitk.ReadImage(m)
    disp = sitk.ReadImage(str(out / "disp.nii.gz"), sitk.sitkVectorFloat64)
    tx = sitk.DisplacementFieldTransform(disp)
    warped = sitk.Resample(moving, fixed, tx, sitk.sitkLinear, 0.0)
    # ---
    got = np.transpose(sitk.GetArrayFromImage(warped), (2, 1, 0))   # SimpleITK arrays are (z, y, x)
    ref = nib.load(out / "warped.nii.gz").get_fdata()
    inner = (slice(2, -2),) * 3
    np.testing.assert_allclose(got[inner], ref[inner], atol=2e-3)
