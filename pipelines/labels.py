"""Labels-only content: what a `labels` store keeps per sample, and the one stage that paints its views.

A `labels` store keeps each sample's label map and its `meta` (ensemble parameters, the drawn
appearance parameters and noise seeds of every view) and no views: about 0.07 MB per 128^3
sample instead of ~3 MB (benchmarks/bench_labels_store.py). Its views are painted on load with
the engine's own code (`synthvox.engine.render.render_views_from_meta`), so they equal, byte for
byte, the views a `full` store rendered on the same device type holds; on another device type
labels stay equal and views may differ by one quantisation step in a few voxels
(docs/ARCHITECTURE.md, "Device type").

Painting is one stage, here, and every reader goes through it (the tar and Zarr readers, the
trainer's loader workers and its device path); a sample that already has views passes through:

    samples = painted(iter_wds_shard(shard, render_views=False))   # the stage, over an iterator
    s = views_from_meta(s)                                          # one sample, on CPU
    batch = paint_batch(batch, torch.device("cuda"))                # a collated batch, on a device
"""
from __future__ import annotations

import time
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from synthvox.engine.config import EngineConfig
from synthvox.engine.render import render_labels, render_views_from_meta
from synthvox.engine.templates import TemplateBank

__all__ = ["views_from_meta", "painted", "paint_batch", "labels_only", "render_labels_numpy"]


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


def painted(samples: Iterable[dict[str, Any]], timed: bool = False) -> Iterator[dict[str, Any]]:
    """The painting stage: yields each sample with its views (painted on CPU from labels and
    meta when it has none). `timed`: a painted sample carries `render_s`, the seconds spent."""
    for s in samples:
        if "views" in s:
            yield s
            continue
        t0 = time.perf_counter()
        s = views_from_meta(s)
        if timed:
            s["render_s"] = time.perf_counter() - t0
        yield s


def paint_batch(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """A collated labels-store batch (labels (B, D, H, W), `meta` list) with `views`
    (B, V, D, H, W) uint8 painted on `device`; adds the seconds spent to batch["render_s"].
    A batch with views is returned as it is."""
    if "views" in batch:
        return batch
    t0 = time.perf_counter()
    labels = batch["labels"].to(device, non_blocking=True)
    batch["views"] = torch.stack([render_views_from_meta(lab, m, device) for lab, m in zip(labels, batch["meta"])])
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the kernels ran asynchronously: time them, not their launch
    batch["render_s"] = batch.get("render_s", 0.0) + time.perf_counter() - t0
    return batch


def render_labels_numpy(cfg: EngineConfig, seed: int, index: int, bank: TemplateBank) -> dict[str, Any]:
    """Sample `index` as a labels store keeps it: labels (numpy, CPU) and the meta render_sample
    would record (view parameters and seeds included), without painting a single view."""
    labels, meta = render_labels(cfg, seed, index, bank=bank, device="cpu", view_meta=True)
    return {"labels": labels.contiguous().numpy(), "index": int(index), "meta": meta}
