"""MIND-SSC: modality-independent neighbourhood descriptors, self-similarity context (12 channels).

Heinrich et al. 2013; the formulation used by ConvexAdam: squared differences between the
12 pairs of six-neighbourhood voxels at distance sqrt(2) (dilated), box-averaged, normalised
by their mean and mapped through exp(-x).
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

__all__ = ["mind_ssc"]


def _pairs() -> list[tuple[tuple[int, int, int], tuple[int, int, int]]]:
    six = [(0, 1, 1), (1, 1, 0), (1, 0, 1), (1, 1, 2), (2, 1, 1), (1, 2, 1)]
    # The 12 pairs of six-neighbours at distance sqrt(2), as offsets in {0, 1, 2}^3.
    return [(a, b) for a, b in itertools.combinations(six, 2) if sum((x - y) ** 2 for x, y in zip(a, b)) == 2]


def _box(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2r+1)^3 box with edge replication, separably by cumulative sums (CPU
    avg_pool3d is several times slower at this size)."""
    if radius == 0:
        return x
    k = 2 * radius + 1
    x = F.pad(x, (radius,) * 6, mode="replicate")
    for dim in (2, 3, 4):
        n = x.shape[dim] - 2 * radius
        cs = torch.cumsum(x, dim)
        x = torch.cat([cs.narrow(dim, k - 1, 1), cs.narrow(dim, k, n - 1) - cs.narrow(dim, 0, n - 1)], dim)
    return x / float(k**3)


def mind_ssc(image: torch.Tensor, radius: int = 2, dilation: int = 2) -> torch.Tensor:
    """MIND-SSC of `image` `(B, 1, D, H, W)` -> `(B, 12, D, H, W)` in (0, 1].

    Contrast-invariant by construction (a constant image gives all ones; a negated image gives
    the same descriptors). `radius`: half-width of the box filter; `dilation`: patch offset.
    """
    if image.dim() != 5 or image.shape[1] != 1:
        raise ValueError(f"mind_ssc: want (B, 1, D, H, W), got {tuple(image.shape)}")
    pad = F.pad(image, (dilation,) * 6, mode="replicate")
    d, h, w = image.shape[2:]

    def shifted(o: tuple[int, int, int]) -> torch.Tensor:
        a, b, c = (dilation * v for v in o)
        return pad[:, :, a: a + d, b: b + h, c: c + w]

    diff = torch.cat([shifted(a) - shifted(b) for a, b in _pairs()], 1)
    ssd = _box(diff ** 2, radius)
    mind = ssd - ssd.min(dim=1, keepdim=True).values
    var = mind.mean(dim=1, keepdim=True)
    m = var.mean()
    var = var.clamp(min=float(m) * 1e-3 + 1e-12, max=float(m) * 1e3 + 1e-12)
    return torch.exp(-mind / var)
