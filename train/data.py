"""Training data: a deterministic, resumable sample stream per rank (store or engine source).

Store source. The store is cut into *units*: tar shards (WebDataset format) or single sample
indices (Zarr format). In epoch e the units are permuted by a generator keyed by
(seed, e, "train.units"), split by rank (`perm[rank::world]`), then by DataLoader worker
(`[worker::workers]`). Each worker cycles through its units epoch after epoch forever, so a
rank takes exactly `steps` batches and ranks never wait on each other. A worker's position
is (epoch, unit cursor, sample cursor); every item carries the position *after* it, the main
process keeps the last one seen per worker (the DataLoader serves workers round-robin), and
`StreamState` restores them: a resumed stream yields exactly the samples the straight run
would have. Samples stay uint8 numpy across worker processes; they are cast on the device.

Labels stores (content `labels`) hold label maps and meta, no views. Their views are painted
by the pipelines' one painting stage (`synthvox.pipelines.labels`): in the DataLoader workers
on CPU (`render_views="loader"`, the default; time per batch in `render_s`), or on the
training device in the main process (`render_views="device"`: the batch carries `meta`
instead of `views` and `views_on_device` paints them there).

Integrity. Only what the store's records vouch for is read (`Store.usable_tasks`): an
incomplete store is refused unless `allow_incomplete` (unfinished tasks' units are skipped;
the unit list stays the whole store's, so positions stay valid once it is finished; pass the
first run's `source.tasks` back as `tasks=` to read exactly the same ones). A damaged shard
stops the run naming the file and the fix, or with `skip_bad_shards` is skipped, warned and
listed in the batch's `bad_shards`. A loader worker's error reaches the main process as the
same error with its message (no worker traceback).

Engine source. Sample indices are a counter per rank (step, rank, slot) rendered on the
training device with synthvox.engine.render.render_sample.

Validation: the last `val_samples` indices of the store are held out from training.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from synthvox.core.configbase import stable_hash
from synthvox.core.errors import SynthvoxError
from synthvox.engine.config import EngineConfig, engine_config_hash
from synthvox.engine.render import render_sample
from synthvox.engine.seeds import numpy_rng
from synthvox.engine.templates import resolve_bank
from synthvox.pipelines.errors import DamagedShard, IncompleteStore, StoreError
from synthvox.pipelines.labels import paint_batch, painted
from synthvox.pipelines.layout import wds_path
from synthvox.pipelines.manifest import Manifest
from synthvox.pipelines.store import open_store
from synthvox.pipelines.zarr_io import ZarrReader

__all__ = ["StoreSource", "UnitStream", "make_loader", "collate", "positions_from_state", "manifest_hash", "DataError",
           "ENGINE_VAL_OFFSET", "views_on_device"]

#: engine-source validation indices start here (training indices are a counter far below it)
ENGINE_VAL_OFFSET = 1 << 40


class DataError(SynthvoxError, ValueError):
    """The data source cannot serve this run; the message says what to do."""


def manifest_hash(manifest: Manifest | dict[str, Any]) -> str:
    """A hash of a store manifest's content, without its progress fields and software versions."""
    d = manifest.to_dict() if isinstance(manifest, Manifest) else manifest
    stable = {k: v for k, v in d.items() if k not in ("complete", "tasks_done", "bytes", "versions")}
    return stable_hash(stable)


@dataclass(frozen=True)
class Unit:
    """A shard (`path` set; samples [start, stop)) or a single Zarr index (`path` None)."""

    start: int
    stop: int
    path: str | None = None


class StoreSource:
    """A store opened for training: its units, held-out validation range and readers.

    allow_incomplete: read a store whose synth-shards has not finished (its finished tasks
    only; logged). skip_bad_shards: skip a damaged shard with a warning instead of stopping.
    tasks: read only these tasks (a resumed run passes its first run's `source.tasks`).
    """

    def __init__(self, path: str | Path, fmt: str = "auto", val_samples: int = 0, render_views: str = "loader", *,
                 allow_incomplete: bool = False, skip_bad_shards: bool = False, tasks: list[int] | None = None) -> None:
        if render_views not in ("loader", "device"):
            raise DataError(f"render_views = {render_views!r}: choose 'loader' (CPU, DataLoader workers) or 'device'")

        self.store = open_store(path)
        self.path = Path(path)
        formats = self.store.formats
        if fmt == "auto":
            fmt = "wds" if "wds" in formats else "zarr"
        if fmt not in formats:
            raise DataError(f"store {self.path} has formats {list(formats)}, not {fmt!r}; pass --format {formats[0]}")
        self.format = fmt
        self.num_samples = self.store.num_samples
        if not 0 <= val_samples < self.num_samples:
            raise DataError(f"val_samples = {val_samples} must leave training samples in {self.path} ({self.num_samples} samples)")
        self.skip_bad_shards = skip_bad_shards
        usable, bad = self.store.usable_tasks(fmt, allow_incomplete=allow_incomplete, skip_bad_shards=skip_bad_shards,
                                              tasks=tasks)
        self.tasks: list[int] = usable          # what this source reads; a resume passes it back as `tasks=`
        self._usable = frozenset(usable)
        self.bad_shards: list[str] = [str(e.file) for e in bad]   # skipped at open (skip_bad_shards)
        self._new_bad: list[str] = list(self.bad_shards)           # not yet reported in a batch
        self._warned: set[str] = set(self.bad_shards)
        self.val_range = (self.num_samples - val_samples, self.num_samples)
        lo = self.val_range[0]
        # the unit list is the whole store's, whatever is finished: stream positions stay valid
        if fmt == "wds":
            self.all_units = [Unit(*self.store.task_range(t), str(wds_path(self.path, t))) for t in range(self.store.num_tasks)]
            self.units = [u for u in self.all_units if u.start < lo]
        else:
            self.reader = ZarrReader(self.path, allow_partial=True, render_views=False)  # _complete paints labels-store views
            self.all_units = [Unit(i, i + 1) for i in range(self.num_samples)]
            self.units = self.all_units[:lo]
        if not any(self._readable(u) for u in self.units):
            raise DataError(f"store {self.path}: no readable training samples (finished tasks {len(usable)} of "
                            f"{self.store.num_tasks}, {val_samples} held out for validation)")
        gone = sorted({u.start // self.store.task_size for u in self.all_units if u.stop > lo and not self._readable(u)})
        if val_samples and gone:
            raise IncompleteStore(f"{self.path}: the validation samples [{lo}, {self.num_samples}) lie in unfinished or "
                                  f"damaged task(s) {gone[:8]}; pass --val-samples 0, or finish the store")
        self.content = self.store.content
        self.render_views = render_views if self.content == "labels" else "loader"
        self.engine_config = self.store.engine_config
        self.volume_shape = tuple(self.store.manifest.label_shape)

    @property
    def manifest_hash(self) -> str:
        return manifest_hash(self.store.manifest)

    @property
    def engine_config_hash(self) -> str | None:
        return self.store.manifest.engine_config_hash

    def _readable(self, unit: Unit) -> bool:
        return unit.start // self.store.task_size in self._usable

    def take_bad_shards(self) -> list[str]:
        """The damaged shards skipped since the last call (each skip counted once)."""
        out, self._new_bad = self._new_bad, []
        return out

    def read_unit(self, unit: Unit, views: bool | None = None) -> Iterator[dict[str, Any]]:
        """Samples of a unit in index order (uint8 numpy labels/views, int index); nothing for a
        unit of a task the records do not vouch for.

        A labels store's views are painted here on CPU unless `views` is False (default: unless
        render_views == "device"); such samples carry `meta` instead of `views`. A damaged
        shard raises DamagedShard naming it, or with skip_bad_shards ends the unit early
        (logged, and listed by take_bad_shards).
        """
        if not self._readable(unit):
            return
        paint = (self.render_views == "loader") if views is None else views
        try:
            if unit.path is not None:
                for s in self.store.iter_wds_task(unit.start // self.store.task_size):
                    yield self._complete(s, str(unit.path), paint)
            else:
                yield self._complete(self.reader[unit.start], str(self.path / "zarr"), paint)
        except DamagedShard as e:
            if not self.skip_bad_shards:
                raise
            self._new_bad.append(str(e.file))
            if str(e.file) not in self._warned:
                self._warned.add(str(e.file))
                logging.getLogger("synthvox.train").warning("skipping a damaged shard (--skip-bad-shards): %s", e)

    def _complete(self, s: dict[str, Any], where: str, paint: bool = True) -> dict[str, Any]:
        missing = [k for k in (("labels", "meta") if self.content == "labels" else ("labels", "views")) if k not in s]
        if missing:
            raise DamagedShard(f"{where}: sample {s.get('index')} lacks {missing}: the shard is damaged; "
                               f"run `synthvox verify {self.path}`, then rerun synth-shards with --reverify", where)
        return next(painted([s], timed=True)) if paint else s

    def val_samples(self) -> list[dict[str, Any]]:
        """The held-out samples (read once, in index order)."""
        lo, hi = self.val_range
        out = []
        for u in self.all_units:
            if u.stop <= lo or u.start >= hi:
                continue
            out += [s for s in self.read_unit(u, views=True) if lo <= int(s["index"]) < hi]
        return out


def unit_order(n_units: int, seed: int, epoch: int, rank: int, world: int, worker: int, workers: int) -> list[int]:
    """The units (by position in the unit list) worker `worker` of rank `rank` reads in `epoch`."""
    perm = numpy_rng(seed, epoch, "train.units").permutation(n_units)
    return [int(u) for u in perm[rank::world][worker::workers]]


class UnitStream(IterableDataset):
    """An endless stream of training samples for one rank (see the module docstring).

    Yields dicts: labels (D, H, W) and views (V, D, H, W) uint8 numpy, index, pos =
    [worker, epoch, unit cursor, sample cursor] after this sample; from a labels store also
    render_s (seconds painting its views), or meta instead of views when they are painted on
    the training device.
    """

    def __init__(self, source: StoreSource, seed: int, rank: int, world: int, workers: int,
                 positions: list[list[int]] | None = None, first_worker: int = 0) -> None:
        super().__init__()
        # DataLoader worker 0 serves the first batch; after a resume at step s the straight run
        # would next have served logical worker s % workers, so loader worker w plays (w + s) % workers
        self.first_worker = first_worker
        self.source, self.seed, self.rank, self.world = source, seed, rank, world
        self.workers = max(1, workers)
        n = len(source.units)
        if n < world * self.workers:
            raise DataError(
                f"store {source.path} has {n} training {'shards' if source.format == 'wds' else 'samples'} but "
                f"{world} ranks x {self.workers} workers need at least {world * self.workers}: "
                "use fewer --workers or ranks, or render the store with a smaller --task-size (more shards)"
            )
        self.positions = positions or [[0, 0, 0] for _ in range(self.workers)]
        if len(self.positions) != self.workers:
            raise DataError(f"stream positions for {len(self.positions)} workers, but {self.workers} workers run")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        try:
            yield from self._items(info)
        except SynthvoxError as e:
            if info is None:
                raise
            # in a loader worker: hand the error to the main process as an item (make_loader raises
            # it there with its message; a raised one would arrive wrapped in the worker's traceback)
            yield {"error": str(e), "error_type": type(e).__name__}

    def _items(self, info: Any) -> Iterator[dict[str, Any]]:
        worker = ((info.id if info is not None else 0) + self.first_worker) % self.workers
        epoch, ucur, scur = self.positions[worker]
        lo, hi = self.source.val_range
        units = self.source.units
        while True:
            order = unit_order(len(units), self.seed, epoch, self.rank, self.world, worker, self.workers)
            yielded = False
            for ui in range(ucur, len(order)):
                for si, s in enumerate(self.source.read_unit(units[order[ui]])):
                    if si < scur or lo <= int(s["index"]) < hi:
                        continue
                    item = {"labels": s["labels"], "index": int(s["index"]), "pos": [worker, epoch, ui, si + 1],
                            "bad_shards": self.source.take_bad_shards()}
                    for k in ("views", "render_s") if "views" in s else ("meta",):
                        if k in s:
                            item[k] = s[k]
                    yielded = True
                    yield item
                scur = 0
            if not yielded and ucur == 0:
                raise DataError(f"store {self.source.path}: none of the {len(order)} units of loader worker {worker} "
                                f"(rank {self.rank}) could be read in epoch {epoch}: they are all unfinished or damaged "
                                f"(skipped: {self.source.take_bad_shards()[:4]}); run `synthvox verify {self.source.path}`")
            epoch, ucur = epoch + 1, 0


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack uint8 samples into a batch (torch uint8 / int labels, CPU), keep indices and last position.

    Items without views (a labels store painted on the device) give `meta` (a list) instead of
    `views`; `render_s` sums the seconds the loader spent painting views; `bad_shards` lists the
    damaged shards skipped since the previous batch (skip_bad_shards). An error item (a loader
    worker's error) gives {"error", "error_type"}, which make_loader's batches raise.
    """
    errors = [it for it in items if "error" in it]
    if errors:
        return {"error": errors[0]["error"], "error_type": errors[0]["error_type"]}
    labels = np.stack([np.asarray(it["labels"]) for it in items])
    if labels.dtype == np.uint16:  # torch has limited uint16 support: widen before crossing
        labels = labels.astype(np.int32)
    out = {
        "labels": torch.from_numpy(labels),
        "index": [int(it["index"]) for it in items],
        "pos": items[-1]["pos"],
        "render_s": float(sum(it.get("render_s", 0.0) for it in items)),
        "bad_shards": [f for it in items for f in it.get("bad_shards", [])],
    }
    if all("views" in it for it in items):
        out["views"] = torch.from_numpy(np.stack([np.asarray(it["views"]) for it in items]))
    else:
        out["meta"] = [it["meta"] for it in items]
    return out


def views_on_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Paint a labels-store batch's views on `device` (the pipelines' painting stage,
    `paint_batch`); a batch with views is returned as it is."""
    return paint_batch(batch, device)


#: errors a loader worker hands over, raised again in the main process by their name
_ERRORS: dict[str, type[SynthvoxError]] = {c.__name__: c for c in (DamagedShard, IncompleteStore, StoreError)}


class _Batches:
    """A DataLoader's batches; a batch carrying a loader worker's error raises it here, in the
    main process, with the worker's message (DataError when its class is not a store error)."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.loader:
            if "error" in batch:
                raise _ERRORS.get(batch["error_type"], DataError)(batch["error"])
            yield batch


def make_loader(stream: UnitStream, batch_size: int, workers: int, prefetch: int = 2, timeout_s: float = 0) -> _Batches:
    """The batches of a DataLoader over the stream; workers are served round-robin, so positions are exact."""
    kw: dict[str, Any] = {}
    if workers > 0:
        kw = {"prefetch_factor": prefetch, "persistent_workers": False, "timeout": timeout_s,
              "multiprocessing_context": "fork" if _fork_ok() else "spawn", "worker_init_fn": _ignore_stop_signals}
    return _Batches(DataLoader(stream, batch_size=batch_size, num_workers=workers, collate_fn=collate, **kw))


def _ignore_stop_signals(worker_id: int) -> None:
    """Loader workers ignore SIGTERM/SIGINT: a scheduler signalling the whole process group must
    not kill them before the trainer has agreed to stop and saved (the trainer ends them)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _fork_ok() -> bool:
    return "fork" in mp.get_all_start_methods()


def positions_from_state(stream_state: dict[str, Any] | None, rank: int, world: int, workers: int, elastic: bool) -> list[list[int]] | None:
    """This rank's worker positions from a checkpoint's stream state (None = from the start).

    A state written with another world size or worker count is refused unless `elastic`, which
    restarts every worker at the start of the epoch after the furthest one.
    """
    if not stream_state:
        return None
    w0, k0 = int(stream_state["world"]), int(stream_state["workers"])
    if (w0, k0) != (world, max(1, workers)):
        if not elastic:
            raise DataError(
                f"the checkpoint was written with world size {w0} and {k0} loader worker(s); this run has {world} and "
                f"{max(1, workers)}: rerun with the same --nproc_per_node/--workers, or pass --elastic to restart the stream "
                "at the next epoch (exact resume is then lost)"
            )
        pos = stream_state["positions"]  # (world, workers, 3)
        epoch = max(int(p[0]) for r in pos for p in r) + 1
        return [[epoch, 0, 0] for _ in range(max(1, workers))]
    return [[int(x) for x in p] for p in stream_state["positions"][rank]]


class EngineSource:
    """Render samples on the training device (on-the-fly mode)."""

    def __init__(self, engine_cfg: EngineConfig, seed: int, device: torch.device, val_samples: int = 0) -> None:
        self.cfg, self.seed, self.device = engine_cfg, seed, device
        self.volume_shape = (engine_cfg.size,) * 3
        self.val_range = (ENGINE_VAL_OFFSET, ENGINE_VAL_OFFSET + val_samples)
        self.render_seconds = 0.0
        try:
            self.bank = resolve_bank(engine_cfg.bank)
            self.engine_config_hash: str | None = engine_config_hash(engine_cfg, self.bank.content_hash)
        except ImportError:  # pragma: no cover - the engine's bank not installed
            self.bank, self.engine_config_hash = None, None
        self.manifest_hash = None

    def render(self, index: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        s = render_sample(self.cfg, self.seed, int(index), bank=self.bank, device=self.device)
        self.render_seconds += time.perf_counter() - t0
        labels = s["labels"]
        if labels.dtype != torch.uint8:
            labels = labels.to(torch.int32)
        return {"labels": labels, "views": s["views"], "index": int(index)}

    def batch(self, step: int, rank: int, world: int, batch_size: int) -> dict[str, Any]:
        """The batch of `step` for `rank`: indices (step * world + rank) * batch_size + slot."""
        idx = [(step * world + rank) * batch_size + b for b in range(batch_size)]
        items = [self.render(i) for i in idx]
        return {"labels": torch.stack([it["labels"] for it in items]), "views": torch.stack([it["views"] for it in items]),
                "index": idx, "pos": [0, 0, 0, 0]}

    def val_samples(self) -> list[dict[str, Any]]:
        return [self.render(i) for i in range(*self.val_range)]
