"""The engine config: the `engine:` section of the YAML, a frozen dataclass.

The engine config hash covers the template bank's content hash, not its path, so moving a
bank does not change the hash and changing its content does.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .appearance.config import AppearanceConfig
from synthvox.core.configbase import ConfigError, from_dict, read_config_file, replace, require, stable_hash, to_dict
from .ensemble.config import EnsembleConfig

__all__ = ["EngineConfig", "AppearanceConfig", "EnsembleConfig", "load_engine_config", "engine_config_hash", "ConfigError"]

MIN_SIZE = 8


@dataclass(frozen=True)
class EngineConfig:
    size: int = 128                    # volume side (D = H = W), voxels
    views: int = 2                     # appearances per label ensemble (V >= 2)
    bank: str | None = None            # template bank dir; None = the built-in procedural bank
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    appearance: AppearanceConfig = field(default_factory=AppearanceConfig)

    def __post_init__(self) -> None:
        require(self.size >= MIN_SIZE, f"engine.size = {self.size} must be >= {MIN_SIZE}")
        require(self.views >= 2, f"engine.views = {self.views} must be >= 2 (contrastive pairs)")

    @property
    def max_labels(self) -> int:
        """The largest label id a sample can hold (fixes the store's label dtype)."""
        return self.ensemble.max_labels

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "EngineConfig":
        return from_dict(cls, data, "engine")


def load_engine_config(path: str | Path | None = None, **overrides: Any) -> EngineConfig:
    """The `engine:` section of a YAML file (or the defaults) with CLI overrides applied.

    Overrides use field names, dotted for nested ones (`size=64`, `**{"ensemble.shapes": [5, 9]}`);
    a value of None means "not given".
    """
    cfg = EngineConfig.from_dict(read_config_file(path)["engine"])
    return replace(cfg, overrides, "engine") if overrides else cfg


def engine_config_hash(cfg: EngineConfig, bank_hash: str) -> str:
    """sha256 of the config with the bank path replaced by the bank's content hash."""
    d = to_dict(cfg)
    d.pop("bank")
    return stable_hash({"engine": d, "bank_hash": bank_hash})
