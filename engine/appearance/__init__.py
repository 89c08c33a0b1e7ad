"""synthvox.engine.appearance: random per-view intensities painted on a label map.

`sample_appearance(cfg, n_labels, size, rng)` draws small typed, frozen parameters (params.py:
one record per step, JSON-able);
`apply_appearance(labels, params, generator)` paints them (pure torch, any device).
One module per step (gmm, texture, bias_field, gamma, spikes, blur, gibbs, sharpen,
lowres, noise); the Fourier-domain steps share one FFT (kspace).
"""
from .config import AppearanceConfig
from .pipeline import STEPS, AppearanceParams, apply_appearance, sample_appearance

__all__ = ["AppearanceConfig", "AppearanceParams", "sample_appearance", "apply_appearance", "STEPS"]
