"""Appearance steps on hand-made label volumes: neutral parameters, determinism, ranges, labels untouched."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from synthvox.engine.appearance import AppearanceConfig, AppearanceParams, apply_appearance, sample_appearance
from synthvox.core.configbase import ConfigError
from synthvox.engine.appearance.bias_field import bias_field, sample_bias_field
from synthvox.engine.appearance.gamma import apply_gamma
from synthvox.engine.appearance.gmm import apply_gmm, sample_gmm
from synthvox.engine.appearance.kspace import apply_kspace
from synthvox.engine.appearance.lowres import apply_lowres
from synthvox.engine.appearance.noise import apply_noise
from synthvox.engine.appearance.params import (BiasParams, BlurParams, GammaParams, GibbsParams, GMMParams,
                                               LowresParams, NoiseParams, SharpenParams, SpikesParams, TextureParams)
from synthvox.engine.appearance.spikes import sample_spikes
from synthvox.engine.appearance.texture import texture_field
from synthvox.engine.config import EngineConfig

ALWAYS = AppearanceConfig(bias_p=1, spikes_p=1, gamma_p=1, blur_p=1, gibbs_p=1, sharpen_p=1, lowres_p=1, noise_p=1)


def blocks(side: int = 16, n: int = 6, seed: int = 0, shape: tuple[int, int, int] | None = None) -> torch.Tensor:
    """(D, H, W) int64 labels 0..n in 4-voxel blocks."""
    d, h, w = shape or (side,) * 3
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, n + 1, (math.ceil(d / 4), math.ceil(h / 4), math.ceil(w / 4)), generator=g)
    return coarse.repeat_interleave(4, 0).repeat_interleave(4, 1).repeat_interleave(4, 2)[:d, :h, :w].contiguous()


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def smooth_volume(side: int = 16) -> torch.Tensor:
    return torch.rand((side,) * 3, generator=gen(3)) * 0.8 + 0.1


# one step alone: the k-space members through the one FFT of the pipeline, the multiplicative
# fields applied as the pipeline applies them (their product with the volume)
def _typed(cls, p):
    """Test parameters written as the JSON form, read into the step's typed record."""
    return None if p is None or not isinstance(p, dict) else cls.from_json(p)


def apply_blur(x: torch.Tensor, p: dict | None) -> torch.Tensor:
    return apply_kspace(x, blur=_typed(BlurParams, p))


def apply_gibbs(x: torch.Tensor, p: dict | None) -> torch.Tensor:
    return apply_kspace(x, gibbs=_typed(GibbsParams, p))


def apply_sharpen(x: torch.Tensor, p: dict | None) -> torch.Tensor:
    return apply_kspace(x, sharpen=_typed(SharpenParams, p))


def apply_spikes(x: torch.Tensor, p: dict | None) -> torch.Tensor:
    return apply_kspace(x, spikes=p if isinstance(p, SpikesParams) else _typed(SpikesParams, p))


def apply_texture(x: torch.Tensor, p: dict | TextureParams, g: torch.Generator) -> torch.Tensor:
    return x * texture_field(tuple(x.shape), _typed(TextureParams, p) or p, g, x.device)


def apply_bias_field(x: torch.Tensor, p: dict | BiasParams) -> torch.Tensor:
    return x * bias_field(tuple(x.shape), _typed(BiasParams, p) or p, x.device)


# -- neutral parameters are the identity ---------------------------------------------------------

NEUTRAL = [
    ("texture", lambda x: apply_texture(x, {"scales": [4, 8], "stds": [0.0, 0.0], "amplitude": 0.0}, gen())),
    ("texture_zero_std", lambda x: apply_texture(x, {"scales": [4, 8], "stds": [0.0, 0.0], "amplitude": 0.02}, gen())),
    ("bias", lambda x: apply_bias_field(x, {"coeffs": [0.0] * 20})),
    ("gamma", lambda x: apply_gamma(x, GammaParams(gamma=1.0))),
    ("blur", lambda x: apply_blur(x, {"sigma": [0.0, 0.0, 0.0]})),
    ("gibbs", lambda x: apply_gibbs(x, {"alpha": 0.0})),
    ("sharpen", lambda x: apply_sharpen(x, {"sigma1": 0.0, "sigma2": 0.0, "alpha": 0.0})),
    ("spikes", lambda x: apply_spikes(x, {"shape": [16, 16, 16], "locations": [[1, 2, 3]], "amplitudes": [0.0], "phases": [0.0]})),
    ("lowres", lambda x: apply_lowres(x, LowresParams(factor=1.0))),
    ("noise", lambda x: apply_noise(x, NoiseParams(std=0.0), gen())),
    ("skipped", lambda x: apply_kspace(x, spikes=None, blur=None, gibbs=None, sharpen=None)),
]


@pytest.mark.parametrize("name,fn", NEUTRAL, ids=[n for n, _ in NEUTRAL])
def test_neutral_parameters_are_identity(name, fn):
    x = smooth_volume()
    before = x.clone()
    y = fn(x)
    assert torch.equal(y, before), name
    assert torch.equal(x, before), f"{name} modified its input in place"


def test_gibbs_alpha_zero_keeps_every_frequency_and_fft_path_is_near_identity():
    # a filter that keeps everything must round-trip through the FFT within float error
    x = smooth_volume()
    y = apply_kspace(x, blur=BlurParams(sigma=(1e-9, 0.0, 0.0)))
    assert torch.allclose(x, y, atol=1e-5)


# -- each step does what it says ------------------------------------------------------------------

def test_fft_blur_equals_circular_convolution_with_the_erf_kernel():
    from synthvox.engine.appearance._ops import gaussian_kernel_1d

    x = smooth_volume()
    sigma = 0.3
    y = apply_blur(x, {"sigma": [sigma, 0.0, 0.0]})
    w = torch.tensor(gaussian_kernel_1d(sigma), dtype=torch.float64)
    r = len(w) // 2
    xp = torch.cat([x[-r:], x, x[:r]], 0).double()  # circular padding along D
    ref = sum(w[k] * xp[k:k + x.shape[0]] for k in range(len(w)))
    assert torch.allclose(y.double(), ref, atol=1e-5)
    assert not torch.allclose(y, x, atol=1e-3)


def test_blur_and_gibbs_remove_high_frequencies_sharpen_adds_them():
    x = smooth_volume()

    def hf(v: torch.Tensor) -> float:  # energy of the highest frequency band
        spec = torch.fft.rfftn(v - v.mean()).abs()
        return float(spec[6:11, 6:11, 6:].sum())

    assert hf(apply_blur(x, {"sigma": [0.33] * 3})) < 0.8 * hf(x)
    assert hf(apply_gibbs(x, {"alpha": 0.3})) < 0.5 * hf(x)
    # sharpening boosts middle frequencies: a plane wave at 3/16 cycles per voxel grows
    k = torch.arange(16, dtype=torch.float32)
    wave = torch.cos(2 * math.pi * 3 * k / 16)[None, None, :].expand(16, 16, 16)
    gain = float(apply_sharpen(wave, {"sigma1": 0.7, "sigma2": 0.5, "alpha": 20.0}).abs().max())
    assert 1.5 < gain < 10


def test_spikes_add_a_plane_wave_of_the_stated_height():
    x = torch.full((16, 16, 16), 0.5)
    y = apply_spikes(x, {"shape": [16, 16, 16], "locations": [[0, 0, 2]], "amplitudes": [0.4], "phases": [0.0]})
    k = torch.arange(16, dtype=torch.float32)
    wave = 0.4 * 0.5 * torch.cos(2 * math.pi * 2 * k / 16)
    assert torch.allclose(y, x + wave[None, None, :], atol=1e-5)


def test_spike_shape_mismatch_is_an_error():
    p = sample_spikes(ALWAYS, np.random.default_rng(0), (16, 16, 16))
    with pytest.raises(ValueError, match="shape"):
        apply_spikes(torch.zeros(8, 8, 8), p)


def test_gamma_keeps_range_and_order():
    x = smooth_volume()
    y = apply_gamma(x, GammaParams(gamma=2.0))
    assert torch.isclose(y.min(), x.min()) and torch.isclose(y.max(), x.max())
    order = torch.argsort(x.flatten())
    assert bool((y.flatten()[order].diff() >= -1e-6).all())
    assert not torch.allclose(x, y)


def test_lowres_uses_nearest_exact_and_restores_shape():
    x = smooth_volume()
    y = apply_lowres(x, LowresParams(factor=4.0))
    assert y.shape == x.shape
    assert float((y - x).abs().mean()) > 0.01
    # a volume constant on 4-voxel blocks aligned with the grid survives down-sampling exactly
    c = blocks(16).float()
    low = F.interpolate(c[None, None], size=(4, 4, 4), mode="nearest-exact")[0, 0]
    assert torch.equal(low, c[1::4, 1::4, 1::4]) or torch.equal(low, c[2::4, 2::4, 2::4])


def test_bias_field_is_smooth_positive_and_multiplicative():
    p = sample_bias_field(ALWAYS, np.random.default_rng(1))
    x = torch.ones(16, 16, 16)
    y = apply_bias_field(x, p)
    assert bool((y > 0).all()) and not torch.equal(x, y)
    assert float(y.diff(dim=0).abs().max()) < 0.1


def test_texture_is_multiplicative_around_one():
    x = torch.ones(16, 16, 16)
    y = apply_texture(x, {"scales": [4, 8, 16, 32], "stds": [5.0] * 4, "amplitude": 0.02}, gen(2))
    # four scales of std 5 sum to std <= 10, times 0.02 (interpolation only shrinks it)
    assert abs(float(y.mean()) - 1.0) < 0.05 and 0.02 < float(y.std()) < 0.2
    assert bool((y > 0).all())


def test_gmm_lookup_and_background():
    labels = blocks(16, n=5)
    p = GMMParams(means=(0.0, 50.0, 100.0, 150.0, 200.0, 250.0), stds=(0.0,) * 6, background_zero=True)
    img = apply_gmm(labels, p, gen())
    expected = torch.tensor(p.means)[labels] / 250.0
    assert torch.allclose(img, expected)
    bad = dataclasses.replace(p, means=p.means[:3], stds=p.stds[:3])
    with pytest.raises(ValueError, match="label id"):
        apply_gmm(labels, bad, gen())


def test_gmm_background_zero_probability():
    cfg = AppearanceConfig(background_zero_p=1.0)
    p = sample_gmm(cfg, np.random.default_rng(0), 4)
    assert p.means[0] == 0 and p.stds[0] == 0 and len(p.means) == 5


# -- the whole view -------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(8, 8, 8), (16, 16, 16), (32, 32, 32), (12, 20, 16)])
def test_view_range_dtype_and_labels_untouched(shape):
    labels = blocks(shape=shape, n=7)
    before = labels.clone()
    for cfg in (AppearanceConfig(), ALWAYS):
        p = sample_appearance(cfg, 7, shape, np.random.default_rng(5))
        img = apply_appearance(labels, p, gen(5))
        assert img.dtype == torch.float32 and img.shape == labels.shape
        assert float(img.min()) == 0.0 and float(img.max()) == 1.0
        assert torch.isfinite(img).all()
    assert torch.equal(labels, before)


def test_same_params_same_bytes_and_thread_count_does_not_matter():
    # 45^3 voxels: above torch's parallel grain (32768) and split at a point that is not a
    # multiple of the SIMD width, where vectorised and scalar code paths meet
    labels = blocks(45, n=9)
    p = sample_appearance(ALWAYS, 9, 45, np.random.default_rng(11))
    a = apply_appearance(labels, p, gen(4))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        b = apply_appearance(labels, p, gen(4))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(a, b)
    c = apply_appearance(labels, p, gen(5))
    assert not torch.equal(a, c)


def test_params_roundtrip_json_and_differ_per_rng():
    p = sample_appearance(ALWAYS, 9, 16, np.random.default_rng(1))
    q = AppearanceParams.from_json(json.loads(json.dumps(p.to_json())))
    assert q == p
    # typed, frozen records (tuples, not lists), and a damaged step record names its key
    assert isinstance(q.gmm, GMMParams) and isinstance(q.gmm.means, tuple) and isinstance(q.spikes.locations[0], tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        q.gmm.means = ()  # type: ignore[misc]
    bad = p.to_json()
    del bad["blur"]["sigma"]
    with pytest.raises(ValueError, match="BlurParams: missing keys \\['sigma'\\]"):
        AppearanceParams.from_json(bad)
    assert sample_appearance(ALWAYS, 9, 16, np.random.default_rng(2)) != p
    assert set(p.fired) == {"bias", "spikes", "gamma", "blur", "gibbs", "sharpen", "lowres", "noise"}
    with pytest.raises(ValueError, match="unknown keys"):
        AppearanceParams.from_json(dict(p.to_json(), bogus=1))


def test_same_gmm_with_a_new_corruption_stream():
    # per-step numpy streams: changing one step's probability does not move the others
    a = sample_appearance(AppearanceConfig(), 9, 16, np.random.default_rng(3))
    b = sample_appearance(AppearanceConfig(gamma_p=1.0, blur_p=0.0), 9, 16, np.random.default_rng(3))
    assert a.gmm == b.gmm and a.texture == b.texture and a.noise == b.noise and a.lowres == b.lowres


def test_default_probabilities_fire_at_their_rates():
    cfg = AppearanceConfig()
    n = 400
    fired = {k: 0 for k in ("bias", "spikes", "gamma", "blur", "gibbs", "sharpen", "lowres", "noise")}
    rng = np.random.default_rng(0)
    for _ in range(n):
        for k in sample_appearance(cfg, 3, 16, rng).fired:
            fired[k] += 1
    for k, p in (("bias", .98), ("spikes", .2), ("gamma", .5), ("blur", .5), ("gibbs", .5), ("sharpen", .25),
                 ("lowres", .33), ("noise", .5)):
        assert abs(fired[k] / n - p) < 0.08, (k, fired[k] / n)


# -- config validation ----------------------------------------------------------------------------

def test_config_errors_name_key_and_value():
    with pytest.raises(ConfigError, match="appearance.bogus"):
        EngineConfig.from_dict({"appearance": {"bogus": 1}})
    with pytest.raises(ConfigError, match=r"appearance.gamma = \[2.0, 0.5\].*min 2.0 > max 0.5"):
        EngineConfig.from_dict({"appearance": {"gamma": [2.0, 0.5]}})
    with pytest.raises(ConfigError, match="blur_p = 1.5"):
        AppearanceConfig(blur_p=1.5)
    with pytest.raises(ConfigError, match="gibbs_alpha_max"):
        AppearanceConfig(gibbs_alpha_max=2.0)


def test_fused_texture_bias_field_matches_the_separate_steps():
    # the pipeline multiplies the bias into the texture's finest grid before one up-sampling;
    # that must agree with texture then bias applied separately up to interpolation error
    from synthvox.engine.appearance.pipeline import _multiplicative_field

    p = sample_appearance(ALWAYS, 3, 64, np.random.default_rng(8))
    ones = torch.ones(64, 64, 64)
    fused = _multiplicative_field((64, 64, 64), p, gen(1), ones.device)
    separate = apply_bias_field(apply_texture(ones, p.texture, gen(1)), p.bias)
    assert float((fused / separate - 1).abs().max()) < 2e-3
    assert float((separate - 1).abs().max()) > 1e-2  # the fields are not trivially 1
