"""Labels-only content: what a `labels` store keeps per sample and how readers get the views back.

A `labels` store keeps each sample's label map and its `meta` (ensemble parameters, the drawn
appearance parameters and noise seeds of every view) and no views: about 0.07 MB per 128^3
sample instead of ~3 MB (benchmarks/bench_labels_store.py). Readers re-render the views with the engine's own code
(`synthvox.engine.render.render_views_from_meta`), so they equal, byte for byte, the views a
`full` store rendered on the same device type holds; on another device type labels stay equal
and views may differ by one quantisation step in a few voxels (docs/ARCHITECTURE.md, "Device type").

    s = next(iter_wds_shard(shard, render_views=False))   # labels + meta
    s = views_from_meta(s)                                 # + views (V, D, H, W) uint8, on CPU
    views = views_from_meta(s, device="cuda", numpy=False)["views"]   # a torch tensor on the GPU
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from synthvox.engine.config import EngineConfig
from synthvox.engine.render import render_labels, render_views_from_meta, view_params
from synthvox.engine.templates import TemplateBank

__all__ = ["views_from_meta", "labels_only", "render_labels_numpy"]


def views_from_meta(sample: dict[str, Any], device: Any = "cpu", numpy: bool = True) -> dict[str, Any]:
    """`sample` with its views rendered from its labels and meta (unchanged when it has views).

    Returns a new dict; `views` is a (V, D, H, W) uint8 numpy array on the CPU, or with
    numpy=False a torch tensor on `device`. A meta without appearance parameters (not written
    by render_sample) raises ValueError.
    """
    if "views" in sample:
        return sample


    labels = sample["labels"]
    if isinstance(labels, np.ndarray):
        labels = torch.from_numpy(np.ascontiguousarray(labels))
    try:
        views = render_views_from_meta(labels, sample["meta"], device)
    except ValueError as e:
        raise ValueError(f"sample {sample.get('index')}: cannot render its views: {e}") from None
    out = dict(sample)
    out["views"] = views.cpu().numpy() if numpy else views
    return out


def labels_only(sample: dict[str, Any]) -> dict[str, Any]:
    """The `labels` content of a full sample: the same dict without `views` (the meta already
    records every view's parameters and seeds)."""
    meta = sample.get("meta") or {}
    if "appearance" not in meta or "appearance_noise_seeds" not in meta:
        raise ValueError(f"sample {sample.get('index')}: its meta lacks the appearance parameters and seeds, "
                         "so its views could not be re-rendered; it cannot go into a labels store")
    return {k: v for k, v in sample.items() if k != "views"}


def render_labels_numpy(cfg: EngineConfig, seed: int, index: int, bank: TemplateBank) -> dict[str, Any]:
    """Sample `index` as a labels store keeps it: labels (numpy, CPU) and the meta render_sample
    would record (view parameters and seeds included), without painting a single view."""
    labels, meta = render_labels(cfg, seed, index, bank=bank, device="cpu")
    views = view_params(cfg, seed, index, tuple(labels.shape))
    meta["appearance"] = [a.to_json() for a, _ in views]
    meta["appearance_noise_seeds"] = [s for _, s in views]
    return {"labels": labels.contiguous().numpy(), "index": int(index), "meta": meta}
