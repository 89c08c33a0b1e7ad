"""The one stand-in renderer: cheap, structured, with the sample contract; `renderer=` takes it."""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["fake_render"]


def fake_render(cfg: Any, seed: int, index: int, bank: Any) -> dict[str, Any]:
    """A 96-cell Voronoi label map (uint8) and one random intensity per label and view, plus
    noise: a pure function of (cfg.size, cfg.views, seed, index) with something to learn."""
    rng = np.random.default_rng([seed, index])
    n = cfg.size
    pts = rng.uniform(0, n, (96, 3))
    grid = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    lab = (np.argmin(((grid - pts[None]) ** 2).sum(-1), 1) + 1).reshape(n, n, n).astype(np.uint8)
    views = []
    for _ in range(cfg.views):
        img = rng.uniform(0, 1, 97)[lab] + rng.normal(0, 0.05, lab.shape)
        views.append(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8))
    return {"labels": lab, "views": np.stack(views), "index": int(index),
            "meta": {"fake": True, "index": int(index), "p": [0.5, 1.25]}}
