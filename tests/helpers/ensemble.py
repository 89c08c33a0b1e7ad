"""An in-memory stand-in template bank and a naive reference placement (engine/ensemble tests)."""
from __future__ import annotations

import numpy as np
import torch

from synthvox.engine.ensemble import EnsembleParams
from synthvox.engine.ensemble.params import shape_matrix

__all__ = ["StandInBank", "naive_place"]


class StandInBank:
    """In-memory bank with the TemplateBank methods the ensemble uses (len, get, shape)."""

    def __init__(self, n: int = 24, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.masks = []
        for _ in range(n):
            dims = np.clip((np.exp(rng.uniform(np.log(12), np.log(70))) * rng.uniform(0.6, 1.4, 3)).astype(int), 4, 90)
            g = [np.linspace(-1, 1, d) for d in dims]
            z, y, x = np.meshgrid(*g, indexing="ij")
            r = np.sqrt(z ** 2 + y ** 2 + x ** 2) + 0.15 * np.sin(3 * z + rng.uniform(0, 6)) * np.cos(2 * x)
            self.masks.append((r < 0.95).astype(np.uint8))

    def __len__(self) -> int:
        return len(self.masks)

    def get(self, i: int) -> np.ndarray:
        return self.masks[i]

    def shape(self, i: int) -> tuple[int, int, int]:
        return tuple(self.masks[i].shape)  # type: ignore[return-value]


def naive_place(p: EnsembleParams, bank: StandInBank) -> torch.Tensor:
    """Back-to-front nearest-neighbour resampling of every shape over the whole volume (float64)."""
    n = p.size
    grid = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).reshape(-1, 3).astype(np.float64)
    out = np.zeros(n ** 3, dtype=np.int64)
    for k, s in enumerate(p.shapes):
        m = bank.get(s.template)
        d = np.array(m.shape)
        u = (grid - np.array(s.centre)) @ np.linalg.inv(shape_matrix(s, n)).T + (d - 1) / 2
        iu = np.floor(u + 0.5).astype(np.int64)
        ok = np.all((iu >= 0) & (iu < d), 1)
        hit = np.zeros(n ** 3, dtype=bool)
        hit[ok] = m[iu[ok, 0], iu[ok, 1], iu[ok, 2]] != 0
        out[hit] = k + 1
    return torch.from_numpy(out.reshape(n, n, n))
