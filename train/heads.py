"""Projection heads: one 3-layer MLP per tapped layer (reference width 256)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["ProjectionHead", "make_heads"]


class ProjectionHead(nn.Module):
    """(N, C) -> (N, width): Linear-ReLU-Linear-ReLU-Linear (applied to sampled voxels only)."""

    def __init__(self, in_channels: int, width: int = 256, layers: int = 3) -> None:
        super().__init__()
        if layers < 1 or width < 1 or in_channels < 1:
            raise ValueError(f"ProjectionHead(in_channels={in_channels}, width={width}, layers={layers}): all must be >= 1")
        mods: list[nn.Module] = []
        c = in_channels
        for i in range(layers):
            mods.append(nn.Linear(c, width))
            if i < layers - 1:
                mods.append(nn.ReLU(inplace=True))
            c = width
        self.mlp = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


def make_heads(channels: dict[str, int], width: int = 256, layers: int = 3) -> nn.ModuleDict:
    """A ModuleDict {tap: ProjectionHead(channels[tap], width, layers)}."""
    return nn.ModuleDict({t: ProjectionHead(c, width, layers) for t, c in channels.items()})
