"""The engine's fast paths equal the plain computations they replace (issue #2, CPU speed).

Each fast path (reused buffers, integer arithmetic instead of masks, spatial blur, solid
blocks, cached occupancy tables) is checked against a straightforward reference on tiny
volumes: bytes where the fast path promises the same bytes, float tolerance where it does not.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from synthvox.engine.appearance._ops import irfft3, resize_linear, rfft3, rfft_freqs
from synthvox.engine.appearance.blur import circular_blur, spatial_ok
from synthvox.engine.appearance.gamma import apply_gamma
from synthvox.engine.appearance.gibbs import gibbs_factor, gibbs_mask
from synthvox.engine.appearance.kspace import _filter, apply_kspace
from synthvox.engine.appearance.params import BlurParams, GammaParams, GibbsParams, SharpenParams, SpikesParams
from synthvox.engine.ensemble import EnsembleConfig, apply_ensemble, label_map, sample_ensemble
from synthvox.engine.ensemble.affine import BlockGrid, candidate_blocks, classify, cull_empty, solid_table, split_solid
from synthvox.engine.ensemble.mask import inside_box, mask_with
from synthvox.engine.ensemble.params import ForegroundParams, shape_matrix
from synthvox.engine.ensemble.place import _OccupancyCache, _padded_template, place_shapes
from synthvox.engine.ensemble.smooth import _sparse_nonzero, majority3, majority3_reference
from synthvox.engine.render import quantise_into
from synthvox.engine.schema import quantise
from synthvox.engine.seeds import numpy_rng, torch_generator

from helpers.ensemble import StandInBank, naive_place

CPU = torch.device("cpu")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Bank(StandInBank):
    """Smaller in-memory blobs than test_ensemble's; `content_hash` set so the occupancy cache engages."""

    def __init__(self, n: int = 12, seed: int = 0, content_hash: str | None = "") -> None:
        rng = np.random.default_rng(seed)
        self.masks = []
        for _ in range(n):
            dims = rng.integers(10, 40, 3)
            g = [np.linspace(-1, 1, d) for d in dims]
            z, y, x = np.meshgrid(*g, indexing="ij")
            r = np.sqrt(z ** 2 + y ** 2 + x ** 2) + 0.1 * np.sin(4 * z + rng.uniform(0, 6))
            self.masks.append((r < 0.9).astype(np.uint8))
        if content_hash is not None:   # the occupancy cache trusts it: unique per content
            self.content_hash = content_hash or f"test-fastpaths-{n}-{seed}"


# -- appearance ------------------------------------------------------------------------------------

def test_quantise_into_equals_the_schema_quantiser():
    x = torch.cat([torch.rand(4000, generator=gen()) * 1.4 - 0.2,
                   torch.tensor([0.0, 1.0, -0.0, 0.5 / 255, 1.5 / 255, 2.5 / 255, 254.5 / 255])])
    dst = torch.empty_like(x, dtype=torch.uint8)
    assert torch.equal(quantise_into(dst, x.clone()), quantise(x))
    y = x.clamp(0, 1)
    assert torch.equal(quantise_into(dst, y.clone(), in_range=True), quantise(y))


@pytest.mark.parametrize("sigma", [[0.3, 0.1, 0.33], [0.0, 0.2, 0.0], [0.6, 0.5, 0.1]])
def test_spatial_blur_equals_the_fft_circular_convolution(sigma):
    x = torch.rand(12, 10, 16, generator=gen(1))
    p = BlurParams(sigma=tuple(sigma))
    assert spatial_ok(tuple(x.shape), p)
    spec = rfft3(x)
    _filter(spec, tuple(x.shape), p, None, None)
    ref = irfft3(spec, tuple(x.shape))
    y = circular_blur(x, p)
    assert torch.allclose(y, ref, atol=2e-6)
    # blur alone takes the spatial path, in place or not, and never touches its input
    before = x.clone()
    assert torch.equal(apply_kspace(x, blur=p), y)
    assert torch.equal(x, before)
    z = x.clone()
    assert torch.equal(apply_kspace(z, blur=p, inplace=True), y) and torch.equal(z, y)
    # long kernels or a short axis go through the FFT
    assert not spatial_ok((12, 10, 16), BlurParams(sigma=(1.0, 0.1, 0.1)))
    assert not spatial_ok((2, 10, 16), BlurParams(sigma=(0.3, 0.1, 0.1)))


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.2, 0.33])
def test_gibbs_factor_equals_the_mask(alpha):
    for shape in [(16, 16, 16), (12, 10, 9)]:
        freqs = rfft_freqs(shape, CPU)
        m = gibbs_mask(shape, freqs, GibbsParams(alpha=alpha))
        f = gibbs_factor(shape, freqs, GibbsParams(alpha=alpha))
        assert torch.equal(f, m.to(torch.float32))


def test_kspace_in_place_equals_the_allocating_path():
    x = torch.rand(16, 16, 16, generator=gen(2))
    p = {"spikes": SpikesParams(shape=(16, 16, 16), locations=((1, 2, 3),), amplitudes=(0.1,), phases=(0.5,)),
         "blur": BlurParams(sigma=(0.2, 0.3, 0.1)), "gibbs": GibbsParams(alpha=0.2),
         "sharpen": SharpenParams(sigma1=0.8, sigma2=0.6, alpha=20.0)}
    for keys in (["gibbs"], ["sharpen"], ["blur", "gibbs"], ["spikes", "blur", "gibbs", "sharpen"]):
        q = {k: p[k] for k in keys}
        ref = apply_kspace(x, **q)
        y = x.clone()
        assert torch.equal(apply_kspace(y, **q, inplace=True), ref), keys


def test_gamma_with_zeros_equals_exp_gamma_log():
    x = torch.rand(8, 8, 8, generator=gen(3))
    x[:4] = x.min()                      # many voxels at the minimum -> y = 0 exactly
    g = 1.7
    lo, hi = torch.aminmax(x)
    span = hi - lo
    y = ((x - lo) / span).clamp(0, 1)
    ref = torch.exp(g * torch.log(y)) * span + lo   # log 0 = -inf -> exp 0
    out = apply_gamma(x, GammaParams(gamma=g))
    assert torch.equal(out, ref)
    z = x.clone()
    assert torch.equal(apply_gamma(z, GammaParams(gamma=g), inplace=True), ref)


def test_resize_linear_out_and_mul_into_equal_the_plain_result():
    c = torch.rand(5, 6, 7, generator=gen(4))
    for align in (True, False):
        ref = resize_linear(c, (17, 13, 11), align_corners=align)
        out = torch.empty(17, 13, 11)
        assert torch.equal(resize_linear(c, (17, 13, 11), align_corners=align, out=out), ref)
        v = torch.rand(17, 13, 11, generator=gen(5))
        expect = v * ref
        assert torch.equal(resize_linear(c, (17, 13, 11), align_corners=align, mul_into=v.clone()), expect)


# -- ensemble --------------------------------------------------------------------------------------

def test_mask_with_and_inside_box_equal_the_masked_fill_reference():
    # semantics (changed on purpose with the density calibration): the envelope band spans
    # -t_in <= f < t_out, and the uncovered interior gets its own id when drawn
    f = torch.randn(14, 12, 10, generator=gen(6)) * 3
    f[0, 0, 0] = 0.0                     # boundary: f == 0 is outside
    f[1, 1, 1] = -1.5                    # boundary: f == -t_in is in the band
    for envelope in (False, True):
        for interior in (False, True):
            for t_in in (0.0, 1.5):
                fg = ForegroundParams(centre=(0.0, 0.0, 0.0), radius=1.0, warp_scales=(1.0,), warp_std=(0.0,),
                                      envelope=envelope, envelope_thickness=2.0, interior=interior,
                                      envelope_inner=t_in)
                lab = torch.randint(0, 30, f.shape, dtype=torch.uint8, generator=gen(7))
                ref = lab.clone()
                core = f < (-t_in if envelope else 0.0)
                if interior:
                    ref.masked_fill_(core & (ref == 0), 31)
                ref.masked_fill_(~core, 0)
                if envelope:
                    ref.masked_fill_((f < 2.0) & ~core, 32)
                assert torch.equal(mask_with(lab, f, fg, 32, 31 if interior else None), ref)
    inside = f < 0
    box = []
    for ax in range(3):
        idx = inside.any(dim=tuple(a for a in range(3) if a != ax)).nonzero()
        box.append(slice(max(0, int(idx[0]) - 1), min(f.shape[ax], int(idx[-1]) + 2)))
    assert inside_box(f, margin=1) == tuple(box)
    assert inside_box(torch.ones(4, 4, 4)) is None


@pytest.mark.parametrize("n_labels,dtype", [(5, torch.uint8), (90, torch.uint8), (200, torch.uint8), (40, torch.int16)])
def test_majority3_paths_equal_the_reference(n_labels, dtype):
    # blocky maps (many two-label windows) plus speckle (many 3+ label windows)
    g = gen(n_labels)
    coarse = torch.randint(0, n_labels + 1, (5, 5, 5), generator=g)
    x = coarse.repeat_interleave(3, 0).repeat_interleave(3, 1).repeat_interleave(3, 2)[:13, :14, :15].contiguous()
    speckle = torch.rand(x.shape, generator=g) < 0.1
    x[speckle] = torch.randint(0, n_labels + 1, (int(speckle.sum()),), generator=g)
    x = x.to(dtype)
    assert torch.equal(majority3(x), majority3_reference(x))


def test_sparse_nonzero_equals_nonzero():
    g = gen(8)
    for n, dtype in [(64, torch.bool), (61, torch.bool), (4096, torch.int16), (4093, torch.int16), (256, torch.int32)]:
        m = (torch.rand(n, generator=g) < 0.03)
        m = m if dtype == torch.bool else m.to(dtype) * torch.randint(-3, 4, (n,), generator=g).to(dtype)
        assert torch.equal(_sparse_nonzero(m), m.nonzero().squeeze(1))


def test_label_map_equals_apply_ensemble_and_counts_its_ids():
    bank = Bank()
    for i, cfg in enumerate([EnsembleConfig(), EnsembleConfig(foreground_p=1.0, envelope_p=1.0),
                             EnsembleConfig(compact_labels=False)]):
        p = sample_ensemble(cfg, 24, [bank.shape(j) for j in range(len(bank))], numpy_rng(0, i, "ensemble"))
        ref = apply_ensemble(p, bank, 24, torch_generator(0, i, "ensemble.noise"), CPU)
        lab, counts = label_map(p, bank, 24, torch_generator(0, i, "ensemble.noise"), CPU)
        assert lab.dtype == torch.int32 and torch.equal(lab.long(), ref)
        want = torch.bincount(ref.view(-1))
        if cfg.compact_labels:
            assert torch.equal(counts, want)
        else:
            assert torch.equal(counts[: want.numel()], want) and not counts[want.numel():].any()


def test_solid_blocks_are_found_and_placement_is_unchanged_by_them_and_by_the_cache():
    # big solid blobs scaled up: many output blocks sample only all-ones cells
    bank = Bank(n=4, seed=1, content_hash="test-fastpaths-solid")
    bank.masks = [np.ones((40, 36, 44), dtype=np.uint8)] + bank.masks[1:]
    cfg = EnsembleConfig(shapes=(3, 5), scale=(0.67, 1.0), foreground_p=0.0, median_smoothing=False,
                         compact_labels=False)
    size = 64
    grid = BlockGrid.for_size(size)
    padded = _padded_template(bank.get(0))
    from synthvox.engine.ensemble.affine import occupancy_table
    sat, _ = occupancy_table(padded, 4)
    s0 = dataclasses.replace(sample_ensemble(cfg, size, len(bank), numpy_rng(0, 0, "ensemble")).shapes[0],
                             template=0, centre=(32.0, 32.0, 32.0))
    cand = cull_empty(candidate_blocks(grid, shape_matrix(s0, size), np.asarray(s0.centre), bank.shape(0)), sat, 4)
    assert cand is not None
    solid, rest = split_solid(cand, solid_table(padded, 4), 4)
    assert solid.size > 0 and rest is not None and rest.ids.size > 0   # interior solid, border sampled
    raw = candidate_blocks(grid, shape_matrix(s0, size), np.asarray(s0.centre), bank.shape(0))
    solid2, rest2 = classify(raw, sat, solid_table(padded, 4), 4)      # the two steps in one
    assert np.array_equal(solid2, solid) and np.array_equal(rest2.ids, rest.ids)
    uncached = Bank(n=4, seed=1, content_hash=None)
    uncached.masks = bank.masks
    for i in range(4):
        p = sample_ensemble(cfg, size, len(bank), numpy_rng(0, i, "ensemble"))
        a = place_shapes(p, bank, CPU)          # cached occupancy tables (second round: hits)
        b = place_shapes(p, uncached, CPU)      # computed afresh
        assert torch.equal(a, b)
        assert torch.equal(place_shapes(p, bank, CPU), a)
        # solid painting equals plain nearest-neighbour resampling
        ref = naive_place(p, bank)
        assert (a.long().view(-1) == ref.view(-1)).float().mean() > 0.999


def test_occupancy_cache_is_bounded_and_keyed_by_content():
    cache = _OccupancyCache(max_bytes=1000)
    a, b = Bank(n=2, content_hash="A"), Bank(n=2, content_hash="B")
    t = (np.zeros(100, dtype=np.int32), np.zeros(20, dtype=np.int32))   # 480 bytes
    cache.put(a, 0, t)
    assert cache.get(a, 0) is t and cache.get(b, 0) is None and cache.get(a, 1) is None
    cache.put(a, 1, (np.zeros(100, dtype=np.int32), np.zeros(20, dtype=np.int32)))
    cache.put(b, 0, (np.zeros(100, dtype=np.int32), np.zeros(20, dtype=np.int32)))
    assert cache.nbytes <= 1000 and cache.get(a, 0) is None        # least recently used went out
    assert cache.get(Bank(n=1, content_hash=None), 0) is None
    cache.put(a, 2, (np.zeros(1000, dtype=np.int32),))               # larger than the budget: not kept
    assert cache.get(a, 2) is None and cache.nbytes <= 1000
    assert not t[0].flags.writeable                                   # cached tables are read-only
    assert math.isfinite(cache.nbytes)
