"""The `train:` section of the YAML config: a frozen dataclass; CLI flags override it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from synthvox.core.configbase import ConfigError, from_dict, read_config_file, replace, require, to_dict

from .augment import AugmentConfig

__all__ = ["TrainConfig", "AugmentConfig", "load_train_config", "ConfigError"]


@dataclass(frozen=True)
class TrainConfig:
    # schedule
    steps: int = 1000                      # optimizer steps (every rank takes exactly this many batches)
    batch_size: int = 1                    # samples (each with V views) per rank per step
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    weight_decay: float = 0.0
    warmup_steps: int = 100                # linear warmup from 0, then linear decay
    min_lr_ratio: float = 0.0              # lr at the last step / lr
    grad_clip: float = 1.0                 # max global grad norm; 0 = off
    seed: int = 0
    # model
    widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    out_channels: int = 16
    convs_per_level: int = 2
    norm: Literal["batch", "instance", "none"] = "batch"
    # loss
    taps: tuple[str, ...] | None = None    # None = late encoder, bottleneck, 3 decoder levels, output
    tap_weights: tuple[float, ...] | None = None
    n_voxels: int = 512                    # sampled voxel locations per view per tap
    temperature: float = 0.33
    balanced: bool = False                 # class-balanced anchor sampling
    anchor_bg_max: float = 1.0             # at most this share of sampled anchors is background (1 = no cap)
    head_width: int = 256
    head_layers: int = 3
    chunk_rows: int = 1024                 # rows of the similarity matrix per recomputed chunk
    # data
    source: Literal["store", "engine"] = "store"
    format: Literal["auto", "wds", "zarr"] = "auto"
    crop: int | None = None                # random cubic crop side; None = the whole volume
    workers: int = 2                       # DataLoader workers per rank (store source)
    prefetch: int = 2
    val_samples: int = 0                   # held-out samples (the last indices of the store)
    val_every: int = 100
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # run
    ckpt_every: int = 500
    keep: int = 3
    log_every: int = 1
    amp: bool = True                       # bf16 autocast (GPU only)
    compile: bool = False
    channels_last: bool = False            # UNet weights channels-last (NDHWC): faster oneDNN 3D convs on CPU
    tensorboard: bool = False
    dist_timeout_s: int = 600              # collective timeout: a dead rank cannot hang the others forever

    def __post_init__(self) -> None:
        require(self.steps >= 1, f"train.steps = {self.steps} must be >= 1")
        require(self.batch_size >= 1, f"train.batch_size = {self.batch_size} must be >= 1")
        require(self.lr > 0, f"train.lr = {self.lr} must be > 0")
        require(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, f"train.beta1/beta2 = {self.beta1}/{self.beta2} must be in [0, 1)")
        require(self.warmup_steps >= 0, f"train.warmup_steps = {self.warmup_steps} must be >= 0")
        require(0 <= self.min_lr_ratio <= 1, f"train.min_lr_ratio = {self.min_lr_ratio} must be in [0, 1]")
        require(self.grad_clip >= 0, f"train.grad_clip = {self.grad_clip} must be >= 0")
        require(len(self.widths) >= 2 and all(w >= 1 for w in self.widths), f"train.widths = {list(self.widths)}: need >= 2 positive widths")
        require(self.n_voxels >= 1, f"train.n_voxels = {self.n_voxels} must be >= 1")
        require(self.temperature > 0, f"train.temperature = {self.temperature} must be > 0")
        require(0.0 <= self.anchor_bg_max <= 1.0, f"train.anchor_bg_max = {self.anchor_bg_max} must be in [0, 1]")
        require(self.chunk_rows >= 1, f"train.chunk_rows = {self.chunk_rows} must be >= 1")
        require(self.crop is None or self.crop >= 1, f"train.crop = {self.crop} must be >= 1")
        require(self.crop is None or self.crop % self.divisor == 0,
                f"train.crop = {self.crop} must be divisible by {self.divisor} (2**{len(self.widths) - 1} for widths {list(self.widths)})")
        require(self.workers >= 0, f"train.workers = {self.workers} must be >= 0")
        require(self.prefetch >= 1, f"train.prefetch = {self.prefetch} must be >= 1")
        require(self.val_samples >= 0 and self.val_every >= 1, f"train.val_samples = {self.val_samples} / val_every = {self.val_every} invalid")
        require(self.ckpt_every >= 1 and self.keep >= 1 and self.log_every >= 1,
                f"train.ckpt_every/keep/log_every = {self.ckpt_every}/{self.keep}/{self.log_every} must be >= 1")
        require(self.dist_timeout_s >= 1, f"train.dist_timeout_s = {self.dist_timeout_s} must be >= 1")
        if self.tap_weights is not None and self.taps is not None:
            require(len(self.tap_weights) == len(self.taps),
                    f"train.tap_weights = {list(self.tap_weights)} needs one weight per tap {list(self.taps)}")

    @property
    def divisor(self) -> int:
        return 2 ** (len(self.widths) - 1)

    def model_config(self) -> dict[str, Any]:
        """The UNet3D constructor arguments."""
        return {"in_channels": 1, "out_channels": self.out_channels, "widths": list(self.widths),
                "convs_per_level": self.convs_per_level, "norm": self.norm}

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def load_train_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """The `train:` section of a YAML file (or the defaults) with flag overrides (None = not given)."""
    cfg = from_dict(TrainConfig, read_config_file(path)["train"], "train")
    return replace(cfg, overrides, "train") if overrides else cfg
