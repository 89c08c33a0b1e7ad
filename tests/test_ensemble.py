"""Label ensembles (engine/ensemble): determinism, ids, smoothing, mask, envelope, sizes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from synthvox.core.configbase import ConfigError
from synthvox.engine.ensemble import EnsembleConfig, EnsembleParams, apply_ensemble, majority3, sample_ensemble
from synthvox.engine.ensemble.mask import warped_radius
from synthvox.engine.ensemble.place import place_shapes
from synthvox.engine.ensemble.smooth import majority3_reference
from synthvox.engine.seeds import numpy_rng, torch_generator

from helpers.ensemble import StandInBank, naive_place

BANK = StandInBank()
CPU = torch.device("cpu")


def render(cfg: EnsembleConfig, size: int, index: int = 0, seed: int = 0) -> tuple[EnsembleParams, torch.Tensor]:
    p = sample_ensemble(cfg, size, [BANK.shape(i) for i in range(len(BANK))], numpy_rng(seed, index, "ensemble"))
    lab = apply_ensemble(p, BANK, size, torch_generator(seed, index, "ensemble.noise"), CPU)
    return p, lab


def test_same_params_same_bytes_and_threads() -> None:
    cfg = EnsembleConfig(foreground_p=1.0, envelope_p=1.0)
    p, a = render(cfg, 32, index=3)
    _, b = render(cfg, 32, index=3)
    assert a.dtype == torch.int64 and a.shape == (32, 32, 32)
    assert torch.equal(a, b)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        _, c = render(cfg, 32, index=3)
    finally:
        torch.set_num_threads(old)
    assert a.numpy().tobytes() == c.numpy().tobytes()


def test_other_index_differs() -> None:
    _, a = render(EnsembleConfig(), 32, index=0)
    _, b = render(EnsembleConfig(), 32, index=1)
    assert not torch.equal(a, b)


def test_label_range_32() -> None:
    cfg = EnsembleConfig()
    counts = []
    for i in range(12):
        _, lab = render(cfg, 32, index=i)
        present = torch.unique(lab)
        k = int(lab.max())
        # compaction: ids are exactly 0..K (or 1..K when the map has no background)
        assert present.tolist() == list(range(int(present[0]), k + 1))
        counts.append(k)
    assert min(counts) >= 3 and max(counts) <= cfg.max_labels
    assert max(counts) >= 10


@pytest.mark.slow
def test_label_range_128() -> None:
    cfg = EnsembleConfig()
    counts = [int(render(cfg, 128, index=i)[1].max()) for i in range(3)]
    assert min(counts) >= 8 and max(counts) <= cfg.max_labels


def test_no_wraparound_beyond_uint8() -> None:
    # scale is the reference's output->template scale: 2.5-3.3 shrinks the shapes to 0.3-0.4x
    cfg = EnsembleConfig(shapes=(300, 300), scale=(2.5, 3.3), foreground_p=0.0, compact_labels=False,
                         median_smoothing=False)
    p, lab = render(cfg, 16)
    assert cfg.max_labels == 302   # 300 shapes, the mask interior, the envelope
    assert int(lab.max()) > 255 and int(lab.max()) <= 300
    assert int(lab.min()) >= 0
    # uncompacted ids are shape ids: the last shape drawn is on top wherever it landed
    assert int(lab.max()) == 300 or (lab == 300).sum() == 0


def test_first_shape_not_background() -> None:
    cfg = EnsembleConfig(shapes=(1, 1), foreground_p=0.0, compact_labels=False, centre_range=(0.5, 0.5),
                         translation=0.0, scale=(1.0, 1.0))
    _, lab = render(cfg, 32)
    assert (lab == 1).sum() > 0
    assert set(torch.unique(lab).tolist()) <= {0, 1}


def test_background_exists_with_mask() -> None:
    cfg = EnsembleConfig(foreground_p=1.0, envelope_p=0.0, foreground_radius=(30.0, 30.0))
    _, lab = render(cfg, 32)
    assert (lab == 0).any() and lab[0, 0, 0] == 0 and lab[-1, -1, -1] == 0


def test_foreground_mask_zeroes_outside_and_keeps_inside() -> None:
    for interior in (True, False):
        cfg = EnsembleConfig(foreground_p=1.0, envelope_p=0.0, compact_labels=False, interior_label=interior)
        p, lab = render(cfg, 32, index=5)
        f = warped_radius(p.foreground, 32, torch_generator(0, 5, "ensemble.noise"), CPU)
        assert (lab[f >= 0] == 0).all()
        unmasked = majority3(place_shapes(p, BANK, CPU)).long()
        inside = f < 0
        covered = inside & (unmasked > 0)
        assert torch.equal(lab[covered], unmasked[covered])
        # the mask interior that no shape covers: its own label (one above the shapes) or background
        hole = inside & (unmasked == 0)
        assert hole.any()
        assert (lab[hole] == (p.n_shapes + 1 if interior else 0)).all()
        assert p.interior_label == (p.n_shapes + 1 if interior else None)
        assert inside.float().mean() > 0.05


def test_envelope_present_when_drawn() -> None:
    for both in (True, False):
        cfg = EnsembleConfig(foreground_p=1.0, envelope_p=1.0, compact_labels=False, envelope_inside=both)
        p, lab = render(cfg, 32, index=2)
        env = p.n_shapes + 2     # above the shapes and the interior label
        assert p.envelope_label == env
        band = lab == env
        assert band.sum() > 0
        fg = p.foreground
        f = warped_radius(fg, 32, torch_generator(0, 2, "ensemble.noise"), CPU)
        t_in = fg.envelope_inner
        assert t_in == (fg.envelope_thickness if both else 0.0)
        # the band is exactly -t_in <= f < t_out: both sides of the mask edge, or just outside
        assert torch.equal(band, (f >= -t_in) & (f < fg.envelope_thickness))
        if both:
            assert (f[band] < 0).any() and (f[band] >= 0).any()
    cfg0 = EnsembleConfig(foreground_p=1.0, envelope_p=0.0, compact_labels=False)
    p0, lab0 = render(cfg0, 32, index=2)
    assert p0.envelope_label is None and not (lab0 == p0.n_shapes + 2).any()


def test_params_json_round_trip_rerenders() -> None:
    cfg = EnsembleConfig(foreground_p=1.0, envelope_p=1.0)
    p, lab = render(cfg, 24, index=7)
    q = EnsembleParams.from_json(json.loads(json.dumps(p.to_json())))
    assert q == p
    again = apply_ensemble(q, BANK, 24, torch_generator(0, 7, "ensemble.noise"), CPU)
    assert torch.equal(lab, again)


def test_smoothing_removes_isolated_voxels_and_matches_median() -> None:
    x = torch.zeros(12, 12, 12, dtype=torch.uint8)
    x[:, :, 6:] = 3
    x[2, 2, 2] = 9        # isolated voxel inside 0
    x[7, 7, 9] = 5        # isolated voxel inside 3
    y = majority3(x)
    assert y[2, 2, 2] == 0 and y[7, 7, 9] == 3
    assert torch.equal(y[:, :, :5], torch.zeros_like(y[:, :, :5]))
    # exact against the slow definition, and equal to scipy's median where a strict majority exists
    g = torch.Generator().manual_seed(1)
    r = torch.randint(0, 3, (6, 6, 6), generator=g).to(torch.uint8)
    r = torch.from_numpy(ndi.zoom(r.numpy(), 3, order=0))[:16, :17, :18].contiguous()
    r[torch.rand(r.shape, generator=g) < 0.03] = 4
    ours = majority3(r)
    assert torch.equal(ours, majority3_reference(r))
    med = torch.from_numpy(ndi.median_filter(r.numpy(), size=3, mode="nearest"))
    counts = torch.stack([torch.from_numpy(ndi.uniform_filter((r == k).float().numpy(), 3, mode="nearest")) * 27
                          for k in range(5)])
    has_major = counts.round().max(0).values >= 14
    assert has_major.float().mean() > 0.7 and (~has_major).any()
    assert torch.equal(ours[has_major], med[has_major])
    for dt in (torch.int16, torch.int64):
        assert torch.equal(majority3(r.to(dt)), ours.to(dt))


@pytest.mark.parametrize("size", [8, 32])
def test_sizes(size: int) -> None:
    for i in range(3):
        p, lab = render(EnsembleConfig(), size, index=i)
        assert lab.shape == (size, size, size) and lab.dtype == torch.int64
        assert 0 <= int(lab.min()) and int(lab.max()) <= EnsembleConfig().max_labels
    assert p.foreground is None or p.foreground.envelope_thickness >= 1.0


def test_bad_inputs() -> None:
    p, _ = render(EnsembleConfig(), 16)
    with pytest.raises(ValueError, match="size 16"):
        apply_ensemble(p, BANK, 32, torch.Generator(), CPU)
    other = StandInBank(seed=9)
    with pytest.raises(ValueError, match="has shape"):
        apply_ensemble(p, other, 16, torch.Generator(), CPU)
    with pytest.raises(ValueError, match="empty"):
        sample_ensemble(EnsembleConfig(), 16, 0, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="centre_range"):
        EnsembleConfig(centre_range=(0.9, 0.1))
    with pytest.raises(ValueError, match="missing key"):
        EnsembleParams.from_json({"size": 8})


@pytest.mark.parametrize("size", [8, 24])
def test_placement_equals_naive_resampling(size: int) -> None:
    cfg = EnsembleConfig(foreground_p=0.0, median_smoothing=False, compact_labels=False)
    for i in range(3):
        p, lab = render(cfg, size, index=i)
        ref = naive_place(p, BANK)
        # fixed point may round differently only at exact .5 ties
        assert (lab == ref).float().mean() > 0.999
        assert (lab > 0).any()


def test_non_binary_template_is_refused() -> None:
    class Bad(StandInBank):
        def get(self, i: int) -> np.ndarray:
            return super().get(i) * 255

    bad = Bad()
    cfg = EnsembleConfig(foreground_p=0.0)
    p = sample_ensemble(cfg, 16, len(bad), np.random.default_rng(0))
    with pytest.raises(ValueError, match="not a 0/1 mask"):
        apply_ensemble(p, bad, 16, torch.Generator(), CPU)


def test_scratch_reuse_across_sizes_is_harmless() -> None:
    cfg = EnsembleConfig(foreground_p=1.0)
    _, a = render(cfg, 32, index=4)
    render(EnsembleConfig(foreground_p=0.0), 24, index=5)     # other sizes reuse the scratch buffers
    render(cfg, 40, index=6)
    _, again = render(cfg, 32, index=4)
    assert torch.equal(a, again)
