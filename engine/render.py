"""Render samples: label ensemble + V appearance views, a pure function of (config, seed, index).

    s = render_sample(cfg, seed=0, index=7)            # schema sample, torch tensors on `device`
    labels, meta = render_labels(cfg, 0, 7)            # the label map alone (labels stores)
    views = render_views(labels, cfg, 0, 7)            # its views, equal to s["views"]
    views = render_views_from_meta(labels, meta)       # the same from recorded parameters alone
    arrays = sample_to_numpy(s)                        # what stores write and readers yield

Seeds come from the seed tree (engine/seeds.py): stage "ensemble" (numpy parameters),
"ensemble.noise" (torch voxel noise), "appearance" and "appearance.noise" per view v.
Identical bytes hold for the same device type (engine/device.py), which meta records.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from .appearance import AppearanceParams, apply_appearance, sample_appearance
from .config import EngineConfig
from .device import device_type
from .ensemble import label_map, sample_ensemble
from .schema import SCHEMA_VERSION, label_dtype
from .seeds import child_seed, numpy_rng
from .templates import resolve_bank
from .workspace import scratch

__all__ = ["render_sample", "render_labels", "render_views", "render_views_from_meta", "view_params", "sample_to_numpy",
           "torch_label_dtype", "quantise_into"]

_TORCH_LABEL = {np.dtype(np.uint8): torch.uint8, np.dtype(np.uint16): torch.uint16}


def torch_label_dtype(max_labels: int) -> torch.dtype:
    """torch twin of schema.label_dtype."""
    return _TORCH_LABEL[label_dtype(max_labels)]


def _bank(bank: Any, cfg: EngineConfig) -> Any:
    """A TemplateBank: the given one, a path, or resolve_bank(cfg.bank) when None."""
    if bank is not None and hasattr(bank, "get"):
        return bank

    return resolve_bank(str(bank) if bank is not None else cfg.bank)


def _lap(timings: dict[str, float] | None, name: str, t0: float) -> float:
    now = time.process_time()
    if timings is not None:
        timings[name] = timings.get(name, 0.0) + now - t0
    return now


def render_labels(cfg: EngineConfig, seed: int, index: int, bank: Any = None, device: str | torch.device = "cpu",
                  timings: dict[str, float] | None = None, view_meta: bool = False) -> tuple[torch.Tensor, dict[str, Any]]:
    """The label map of sample `index`: (D, H, W) uint8/uint16 on `device`, and its meta
    (ensemble parameters, noise seed, label counts, device type). With `view_meta` the meta
    also records every view's drawn appearance parameters and noise seed, exactly as
    render_sample's does, without painting a view (what a labels store keeps)."""
    _, labels, meta = _render_labels(cfg, seed, index, bank, device, timings)
    if view_meta:
        _record_views(meta, view_params(cfg, seed, index, tuple(labels.shape)))
    return labels, meta


def _record_views(meta: dict[str, Any], views: list[tuple[AppearanceParams, int]]) -> None:
    """Record each view's parameters and noise seed in `meta` (what render_views_from_meta reads)."""
    meta["appearance"] = [a.to_json() for a, _ in views]
    meta["appearance_noise_seeds"] = [s for _, s in views]


def _render_labels(cfg: EngineConfig, seed: int, index: int, bank: Any, device: str | torch.device,
                   timings: dict[str, float] | None) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """(int32 labels, stored-dtype labels, meta). The int32 map may be a per-thread reused
    buffer (ensemble.label_map): use it before the next render in this thread."""
    device = torch.device(device)
    t0 = time.process_time()
    bank = _bank(bank, cfg)
    params = sample_ensemble(cfg.ensemble, cfg.size, len(bank), numpy_rng(seed, index, "ensemble"))
    noise_seed = child_seed(seed, index, "ensemble.noise")
    gen = torch.Generator(device=device)
    gen.manual_seed(noise_seed)
    with torch.no_grad():
        lab, counts = label_map(params, bank, cfg.size, gen, device)
    t0 = _lap(timings, "ensemble", t0)
    # the ids present come from the ensemble's own bincount (no second pass over the voxels)
    present = torch.nonzero(counts).flatten().tolist()
    if present and present[-1] > cfg.max_labels:
        raise ValueError(
            f"the ensemble produced label ids 0..{present[-1]} outside 0..{cfg.max_labels} "
            "(engine.ensemble.max_labels): a bug in the ensemble stage"
        )
    foreground = [int(v) for v in present if v > 0]
    labels = lab.to(torch_label_dtype(cfg.max_labels))
    meta: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "seed": int(seed),
        "index": int(index),
        "size": int(cfg.size),
        "bank_hash": getattr(bank, "content_hash", None),
        "ensemble": params.to_json(),
        "ensemble_noise_seed": noise_seed,
        "n_labels": int(cfg.max_labels),
        "label_count": len(foreground),
        "present_labels": foreground,
        "device_type": device_type(device),
    }
    _lap(timings, "labels_meta", t0)
    return lab, labels, meta


def view_params(cfg: EngineConfig, seed: int, index: int, shape: tuple[int, ...]) -> list[tuple[AppearanceParams, int]]:
    """Each view's drawn appearance parameters and noise seed for sample `index` (nothing painted)."""
    out = []
    for v in range(cfg.views):
        a = sample_appearance(cfg.appearance, cfg.max_labels, tuple(shape), numpy_rng(seed, index, "appearance", v))  # type: ignore[arg-type]
        out.append((a, child_seed(seed, index, "appearance.noise", v)))
    return out


def _paint(labels: torch.Tensor, views: list[tuple[AppearanceParams, int]], device: torch.device,
           timings: dict[str, float] | None = None, checked: bool = False) -> torch.Tensor:
    """(V, D, H, W) uint8 views of `labels` (torch or numpy) from per-view (params, noise seed).

    `checked`: the label ids are known to lie in 0..max_labels (skips one range check per view).
    """
    if isinstance(labels, np.ndarray):
        labels = torch.from_numpy(np.ascontiguousarray(labels))
    # one widening for all views: int32 is what the lookup gathers take (no copy if int32/int64)
    idx = labels.to(device=device, dtype=torch.int32) if labels.dtype not in (torch.int32, torch.int64) else labels.to(device)
    shape = tuple(labels.shape)
    out = torch.empty((len(views),) + shape, dtype=torch.uint8, device=device)
    img = scratch("render.view", shape, torch.float32, device)
    for v, (params, noise_seed) in enumerate(views):
        gen = torch.Generator(device=device)
        gen.manual_seed(int(noise_seed))
        apply_appearance(idx, params, gen, timings=timings, out=img, check_labels=not checked)
        t0 = time.process_time()
        quantise_into(out[v], img, in_range=True)
        _lap(timings, "quantise", t0)
    return out


def quantise_into(dst: torch.Tensor, x: torch.Tensor, in_range: bool = False) -> torch.Tensor:
    """schema.quantise(x) written into the uint8 tensor `dst`, overwriting `x` (the same
    operations in place: clamp to [0, 1], * 255, round half to even; no temporaries).
    `in_range`: x is known to lie in [0, 1] (apply_appearance's output: (x - lo) / (hi - lo)
    with lo <= x <= hi, exact in floating point), so the clamp is skipped."""
    if not in_range:
        x.clamp_(0.0, 1.0)
    x.mul_(255.0).round_()
    return dst.copy_(x)   # exact: x holds integers 0..255


def render_views(labels: torch.Tensor, cfg: EngineConfig, seed: int, index: int,
                 device: str | torch.device = "cpu") -> torch.Tensor:
    """(V, D, H, W) uint8 views of sample `index` painted on `labels`; equals render_sample's views."""
    return _paint(labels, view_params(cfg, seed, index, tuple(labels.shape)), torch.device(device))


def render_views_from_meta(labels: torch.Tensor, meta: dict[str, Any], device: str | torch.device = "cpu") -> torch.Tensor:
    """(V, D, H, W) uint8 views re-rendered from the parameters and seeds recorded in `meta` alone
    (labels-only stores); equal to the original views byte for byte on the same device type."""
    try:
        views = [(AppearanceParams.from_json(a), int(s)) for a, s in zip(meta["appearance"], meta["appearance_noise_seeds"], strict=True)]
    except KeyError as e:
        raise ValueError(f"sample meta lacks {e}: it was not written by render_sample (schema version {SCHEMA_VERSION})") from None
    return _paint(labels, views, torch.device(device))


def render_sample(cfg: EngineConfig, seed: int, index: int, bank: Any = None, device: str | torch.device = "cpu",
                  timings: dict[str, float] | None = None) -> dict[str, Any]:
    """The schema sample `index` of run `seed`: labels (D, H, W) uint8/uint16, views (V, D, H, W)
    uint8 (torch, on `device`), index, meta (JSON-able, reproducible: no timings).

    `bank`: a TemplateBank, a bank path, or None for resolve_bank(cfg.bank). `timings`, when
    given, receives CPU seconds per stage (benchmarks).
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed} index={index}")
    device = torch.device(device)
    lab, labels, meta = _render_labels(cfg, seed, index, bank, device, timings)
    t0 = time.process_time()
    views_params = view_params(cfg, seed, index, tuple(labels.shape))
    _lap(timings, "appearance_params", t0)
    views = _paint(lab, views_params, device, timings, checked=True)
    _record_views(meta, views_params)
    return {"labels": labels, "views": views, "index": int(index), "meta": meta}


def sample_to_numpy(sample: dict[str, Any]) -> dict[str, Any]:
    """The sample with labels/views as contiguous numpy arrays on the CPU (what stores write)."""
    out = dict(sample)
    for key in ("labels", "views"):
        v = sample[key]
        if isinstance(v, torch.Tensor):
            out[key] = v.detach().cpu().contiguous().numpy()
        else:
            out[key] = np.ascontiguousarray(v)
    out["index"] = int(sample["index"])
    return out
