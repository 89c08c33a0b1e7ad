"""The trainer's one data interface: a `Feed` serves `batches(start_step)` whatever the source.

`open_feed` opens the store (through `data.StoreSource` and its resumable `UnitStream`) or the
on-the-fly engine (`data.EngineSource`) and returns an object the loop reads without asking
which it is:

- `batches(start_step)`: an endless iterator of batches on the training device's side: `views`
  (B, V, D, H, W) uint8, `labels` (B, D, H, W), `index` (this rank's sample indices), `render_s`
  (seconds spent painting/rendering this batch's views, where views are made on the fly) and
  `bad_shards` (damaged shards skipped since the previous batch, with skip_bad_shards);
- `positions`: this rank's stream position per loader worker after the last batch served
  (what a checkpoint stores to resume exactly), `workers` (their count, >= 1), `tasks` (the
  store tasks read, or None);
- `views`, `volume_shape`, `engine_config_hash`, `manifest_hash`, `val_samples()`, `describe()`.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Generator, Iterator

import torch

from synthvox.engine.config import EngineConfig

from .config import TrainConfig
from .data import DataError, EngineSource, StoreSource, UnitStream, make_loader, positions_from_state, views_on_device

__all__ = ["StoreFeed", "EngineFeed", "open_feed"]


class StoreFeed:
    """Batches of a store for one rank, resumable at a checkpoint's stream positions."""

    def __init__(self, source: StoreSource, cfg: TrainConfig, device: torch.device, rank: int, world: int,
                 stream_state: dict[str, Any] | None, elastic: bool, allow_incomplete: bool = False) -> None:
        self.allow_incomplete = allow_incomplete
        self.source, self.cfg, self.device, self.rank, self.world = source, cfg, device, rank, world
        self.workers = max(1, cfg.workers)
        self._positions = positions_from_state(stream_state, rank, world, cfg.workers, elastic)
        self.positions: list[list[int]] = [list(p) for p in (self._positions or [[0, 0, 0]] * self.workers)]
        self.views = int(source.engine_config.views)
        self.volume_shape = tuple(source.volume_shape)
        self.engine_config_hash = source.engine_config_hash
        self.manifest_hash = source.manifest_hash
        self.tasks: list[int] | None = list(source.tasks)
        UnitStream(source, cfg.seed, rank, world, cfg.workers, self._positions)  # refuses too few units now

    def batches(self, start_step: int) -> Generator[dict[str, Any], None, None]:
        cfg = self.cfg
        stream = UnitStream(self.source, cfg.seed, self.rank, self.world, cfg.workers, self._positions,
                            first_worker=start_step % self.workers)
        self.positions = [list(p) for p in stream.positions]
        loader = make_loader(stream, cfg.batch_size, cfg.workers, cfg.prefetch)
        paints = self.source.content == "labels"
        return self._serve(iter(loader), paints)

    def _serve(self, loader: Iterator[dict[str, Any]], paints: bool) -> Generator[dict[str, Any], None, None]:
        for batch in loader:
            batch = views_on_device(batch, self.device)  # a no-op unless a labels store paints on the device
            self.positions[batch["pos"][0]] = list(batch["pos"][1:])
            if not paints:  # only a labels store's views are painted on the fly
                batch.pop("render_s", None)
            yield batch

    def val_samples(self) -> list[dict[str, Any]]:
        return self.source.val_samples()

    def describe(self) -> str:
        s = self.source
        used = f"{len(s.tasks)} of {s.store.num_tasks} tasks"
        if len(s.tasks) < s.store.num_tasks:
            used += " (--allow-incomplete: the finished ones)" if self.allow_incomplete else ""
        skipped = f", {len(s.bad_shards)} damaged shard(s) skipped (--skip-bad-shards)" if s.bad_shards else ""
        return f"store {s.path} ({s.format}, {s.content}, {s.num_samples} samples, {used}{skipped})"


class EngineFeed:
    """Batches rendered on the training device: sample indices (step * world + rank) * batch + slot."""

    workers = 1
    tasks = None

    def __init__(self, source: EngineSource, cfg: TrainConfig, rank: int, world: int) -> None:
        self.source, self.cfg, self.rank, self.world = source, cfg, rank, world
        self.positions = [[0, 0, 0]]
        self.views = int(source.cfg.views)
        self.volume_shape = tuple(source.volume_shape)
        self.engine_config_hash = source.engine_config_hash
        self.manifest_hash = source.manifest_hash

    def batches(self, start_step: int) -> Generator[dict[str, Any], None, None]:
        step = start_step
        while True:
            t0 = self.source.render_seconds
            batch = self.source.batch(step, self.rank, self.world, self.cfg.batch_size)
            batch["render_s"] = self.source.render_seconds - t0
            batch["bad_shards"] = []
            yield batch
            step += 1

    def val_samples(self) -> list[dict[str, Any]]:
        return self.source.val_samples()

    def describe(self) -> str:
        c = self.source.cfg
        return f"engine on the fly ({c.size}^3, {c.views} views, seed {self.cfg.seed})"


def open_feed(cfg: TrainConfig, store: str | Path | None, device: torch.device, rank: int, world: int, *,
              engine_cfg: EngineConfig | None = None, stream_state: dict[str, Any] | None = None, elastic: bool = False,
              allow_incomplete: bool = False, skip_bad_shards: bool = False) -> StoreFeed | EngineFeed:
    """The feed of `cfg.source`; a resumed store run reads the tasks its first run read (`stream_state["tasks"]`),
    so a store finished in between does not shift its stream."""
    if cfg.source == "engine":
        return EngineFeed(EngineSource(engine_cfg or EngineConfig(), cfg.seed, device, cfg.val_samples), cfg, rank, world)
    if store is None:
        raise DataError("--source store needs --store STORE (a directory made by synthvox synth-shards)")
    tasks = (stream_state or {}).get("tasks")  # None: a fresh run, or a checkpoint from before tasks were kept
    # a labels store's views: painted on the training device on a GPU, by the loader workers on CPU
    source = StoreSource(store, cfg.format, cfg.val_samples, render_views="device" if device.type != "cpu" else "loader",
                         allow_incomplete=allow_incomplete, skip_bad_shards=skip_bad_shards, tasks=tasks)
    return StoreFeed(source, cfg, device, rank, world, stream_state, elastic, allow_incomplete)
