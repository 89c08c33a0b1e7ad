"""The one tiny train config of the tests (a few steps of a 3-level UNet on 16^3 crops)."""
from __future__ import annotations

from typing import Any

from synthvox.train.config import TrainConfig, load_train_config

__all__ = ["tiny_train_config"]


def tiny_train_config(**overrides: Any) -> TrainConfig:
    """4 steps, 16^3 crops, widths (4, 8, 16), no loader workers, 32 voxels per tap; `overrides` win."""
    base: dict[str, Any] = dict(steps=4, crop=16, widths=[4, 8, 16], workers=0, n_voxels=32, head_width=32,
                                ckpt_every=100, warmup_steps=2, lr=3e-3)
    base.update(overrides)
    return load_train_config(None, **base)
