"""PyTorch datasets of synthetic samples: rendered by index, or streamed from a store.

Both yield the sample contract (engine/schema.py) as numpy arrays, the same dict every store
reader yields::

    labels   (D, H, W)     uint8 | uint16   label map, 0 = background (ids up to config.max_labels)
    views    (V, D, H, W)  uint8            V appearances of the labels, 0..255 over [0, 1]
    index    int                            the sample's index in the run
    meta     dict                           drawn parameters and seeds (only with with_meta=True:
                                            torch's default collate cannot stack it)

Axis order (D, H, W) = NIfTI (i, j, k), 1 voxel = 1 unit. `transform(sample) -> anything` is
applied last (a MONAI dict transform works: views are channel-first).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import torch.distributed as dist
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from synthvox.core.configbase import replace
from synthvox.engine.config import EngineConfig, load_engine_config
from synthvox.engine.render import render_sample, sample_to_numpy
from synthvox.engine.templates import resolve_bank
from synthvox.train.data import StoreSource, unit_order

__all__ = ["SyntheticDataset", "StoreDataset", "engine_config"]

Transform = Callable[[dict[str, Any]], Any]


def engine_config(config: Any = None, **overrides: Any) -> Any:
    """An EngineConfig from an EngineConfig, an `engine:` dict, a YAML path or None (defaults),
    with field overrides (`size=32`; dotted names for nested fields: `**{"ensemble.shapes": [3, 6]}`)."""
    if config is None or isinstance(config, (str, Path)):
        return load_engine_config(config, **overrides)
    cfg = EngineConfig.from_dict(config) if isinstance(config, dict) else config
    if not isinstance(cfg, EngineConfig):
        raise TypeError(f"config must be an EngineConfig, a dict, a YAML path or None, not {type(config).__name__}")
    return replace(cfg, overrides, "engine") if overrides else cfg


def _finish(sample: dict[str, Any], with_meta: bool, transform: Transform | None) -> Any:
    out = {"labels": sample["labels"], "views": sample["views"], "index": int(sample["index"])}
    if with_meta:
        out["meta"] = sample.get("meta", {})
    return transform(out) if transform is not None else out


class SyntheticDataset(Dataset):
    """Map-style: item `i` is sample `start + i` of (engine config, seed), rendered on demand.

    Deterministic: the same (config, seed, index) gives the same bytes on the same device type,
    in any process and any order, so shuffling samplers, DataLoader workers and
    DistributedSampler all work unchanged. `device` renders there (e.g. "cuda"; keep
    num_workers=0 then); arrays come back on the CPU.

        ds = SyntheticDataset(1000, seed=0, size=64)
        ds[7]["views"].shape   # (2, 64, 64, 64)
    """

    def __init__(self, length: int, config: Any = None, seed: int = 0, *, start: int = 0, device: str = "cpu",
                 bank: Any = None, transform: Transform | None = None, with_meta: bool = False, **overrides: Any) -> None:
        if length < 0 or start < 0 or seed < 0:
            raise ValueError(f"length={length}, start={start}, seed={seed} must be >= 0")
        self.config = engine_config(config, **overrides)
        self.length, self.seed, self.start, self.device = int(length), int(seed), int(start), device
        self.transform, self.with_meta = transform, with_meta
        self._bank_spec = bank
        self._bank: Any = None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> Any:
        i = int(i)
        if i < 0:
            i += self.length
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for a SyntheticDataset of {self.length} samples")
        if self._bank is None:  # resolved once per process (workers resolve their own)
            self._bank = self._resolve_bank()
        s = sample_to_numpy(render_sample(self.config, self.seed, self.start + i, bank=self._bank, device=self.device))
        return _finish(s, self.with_meta, self.transform)

    def _resolve_bank(self) -> Any:
        spec = self._bank_spec
        if spec is not None and hasattr(spec, "get"):  # already a TemplateBank
            return spec
        return resolve_bank(str(spec) if spec is not None else self.config.bank)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_bank"] = None  # spawned workers resolve the bank themselves
        return state

    @classmethod
    def from_store(cls, path: str | Path, **kwargs: Any) -> "StoreDataset":
        """`StoreDataset(path, **kwargs)`: iterate over a store written by `synthvox synth-shards`."""
        return StoreDataset(path, **kwargs)


class StoreDataset(IterableDataset):
    """Iterable over a store (WebDataset shards or Zarr), split by rank, then by DataLoader worker.

    Each epoch reads every sample once across all ranks and workers: the store's units (tar
    shards, or single samples for Zarr) are permuted by (seed, epoch) (`shuffle=False`: store
    order), dealt to ranks (`[rank::world_size]`), then to workers; the order is deterministic
    in (seed, epoch, rank, world_size, num_workers). Call `set_epoch(e)` before each epoch.
    rank/world_size default to torch.distributed's when it is initialised. Ranks can get
    different sample counts (shards differ in size, or fewer shards than ranks x workers):
    DDP loops should stop after a fixed number of steps. A labels store's views are painted
    on load (CPU) with the engine's own code.
    """

    def __init__(self, path: str | Path, seed: int = 0, *, format: str = "auto", shuffle: bool = True,
                 rank: int | None = None, world_size: int | None = None, transform: Transform | None = None,
                 with_meta: bool = False) -> None:
        super().__init__()
        self.path, self.seed, self.format, self.shuffle = Path(path), int(seed), format, shuffle
        self.transform, self.with_meta = transform, with_meta
        self._rank, self._world = rank, world_size
        self.epoch = 0
        self._source: Any = None
        src = self._open()
        self.num_samples = src.num_samples
        self.format = src.format

    def _open(self) -> Any:
        if self._source is None:
            self._source = StoreSource(self.path, self.format, val_samples=0)
        return self._source

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_source"] = None  # readers are opened again in each worker
        return state

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose order the next iteration follows."""
        self.epoch = int(epoch)

    def _rank_world(self) -> tuple[int, int]:
        dist_on = dist.is_available() and dist.is_initialized()
        rank = self._rank if self._rank is not None else (dist.get_rank() if dist_on else 0)
        world = self._world if self._world is not None else (dist.get_world_size() if dist_on else 1)
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in 0..{world - 1} (world_size {world})")
        return rank, world

    def units_for(self, worker: int = 0, workers: int = 1) -> list[int]:
        """Positions in the store's unit list that (this rank, `worker` of `workers`) reads this epoch."""
        rank, world = self._rank_world()
        n = len(self._open().units)
        if self.shuffle:
            return unit_order(n, self.seed, self.epoch, rank, world, worker, workers)
        return list(range(n))[rank::world][worker::workers]

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        source = self._open()
        for u in self.units_for(worker, workers):
            for s in source.read_unit(source.units[u]):
                yield _finish(s, self.with_meta, self.transform)
