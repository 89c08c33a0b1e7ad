"""Zarr v3 store: arrays indexed by sample, sharded, written one whole shard per call.

`STORE/zarr/` is a Zarr v3 group with arrays ``labels`` (N, D, H, W) and ``views``
(N, V, D, H, W); one inner chunk per sample (random access decodes one sample), shards of
`zarr_shard` samples (a divisor of the task size, so a task covers whole shards). The client
writes the metadata (`zarr.json`) once; a task encodes each shard through a private temporary
array with identical metadata, then `os.replace`s the shard file into place: no two attempts
ever write the same file, and a shard appears only complete. Compression: the views' plane-delta
filter (`codecs.PlaneDelta`, zarr codec `synthvox.plane_delta`) and `zarr.codecs.ZstdCodec` (with
its checksum) inside the sharding codec. Sample meta lives in `STORE/zarr-meta/` (JSON lines).
A `labels` store has no ``views`` array; `ZarrReader` paints the views from labels and meta
(the `labels.painted` stage). The metadata files are written atomically, and a rerun repairs
any that are missing or torn. A shard whose samples are all empty (fill value) is written like
any other (zarr would skip it). `ZarrReader` reads only tasks the records vouch for and names
the shard file of any sample that does not decode.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from synthvox.core.atomic import WriteError, explain_oserror, new_tmp_dir, write_bytes

from .codecs import DELTA_KINDS, LEVELS, open_meta, seal_meta
from .errors import DamagedShard, StoreError, StoreMismatch, repair_hint
from .labels import painted
from .layout import zarr_meta_path, zarr_shard_key
from .store import open_store
from .zarr_codec import PlaneDelta  # importing zarr_codec registers synthvox.plane_delta with zarr

__all__ = ["create_zarr_arrays", "write_zarr_shard", "write_zarr_meta", "ZarrReader"]


def _codecs(name: str) -> dict[str, Any]:
    """create_array's filters and compressors for array `name`: the tar members' chain."""

    out: dict[str, Any] = {"compressors": ZstdCodec(level=LEVELS[name], checksum=True)}
    if name in DELTA_KINDS:
        out["filters"] = [PlaneDelta(axis=-3)]
    return out


def _create_metadata(zroot: Path, shapes: dict[str, tuple[int, ...]], label_dtype: str, zarr_shard: int) -> None:
    """Write the group and its arrays' metadata (zarr.json files) under `zroot`."""
    dtypes = {"labels": label_dtype, "views": "uint8"}
    group = zarr.open_group(str(zroot), mode="w", zarr_format=3)
    for name, shape in shapes.items():
        group.create_array(
            name, shape=shape, dtype=dtypes[name],
            chunks=(1,) + shape[1:], shards=(zarr_shard,) + shape[1:],
            **_codecs(name), fill_value=0,
            config={"write_empty_chunks": True},
        )


def create_zarr_arrays(root: Path, samples: int, size: int, views: int, label_dtype: str, zarr_shard: int,
                       arrays: tuple[str, ...] = ("labels", "views")) -> None:
    """Create, grow or repair the group's metadata (written by the client once per run).

    The metadata files are generated in a private directory and each one that is missing,
    torn or of a smaller sample count is replaced atomically: a run killed (or a disk full)
    while writing them leaves nothing a rerun cannot repair. Growing only rewrites the
    arrays' zarr.json (shard file names depend on the sample index alone).
    """
    zroot = Path(root) / "zarr"
    shapes = {"labels": (samples, size, size, size), "views": (samples, views, size, size, size)}
    shapes = {k: v for k, v in shapes.items() if k in arrays}
    tmp = new_tmp_dir(zroot)  # a private scratch directory beside zarr/
    try:
        _create_metadata(tmp, shapes, label_dtype, zarr_shard)
        for rel in ["zarr.json"] + [f"{name}/zarr.json" for name in shapes]:
            want = (tmp / rel).read_bytes()
            final = zroot / rel
            try:
                have: bytes | None = final.read_bytes()
            except FileNotFoundError:
                have = None
            if have == want:
                continue
            if have is not None and rel != "zarr.json":
                _check_growth(final, have, shapes[rel.split("/")[0]])
            write_bytes(final, want)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_growth(path: Path, have: bytes, shape: tuple[int, ...]) -> None:
    """An existing array's metadata may only differ by a smaller sample count (a torn file is repaired)."""
    try:
        old = tuple(json.loads(have)["shape"])
    except (ValueError, KeyError, TypeError):
        return  # unreadable: a torn write, replaced
    if old[1:] != shape[1:] or old[0] > shape[0]:
        raise StoreMismatch(f"{path}: existing shape {old} cannot become {shape}; use another --out")


def write_zarr_shard(root: Path, array: str, shard: int, zarr_shard: int, data: np.ndarray,
                     on_write: Callable[[], None] | None = None) -> str:
    """Encode shard `shard` of `array` from `data` (all its samples) and move it into place.

    Returns the store-relative path of the shard file. The shard is encoded by a temporary
    array (same `zarr.json`) in a private directory beside the final one, in one write call.
    """

    root = Path(root)
    final_meta = root / "zarr" / array / "zarr.json"
    tmp_dir = root / "zarr" / f".tmp-{array}-{shard}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    try:
        tmp_dir.mkdir(parents=True)
        shutil.copyfile(final_meta, tmp_dir / "zarr.json")
        arr = zarr.open_array(str(tmp_dir), mode="r+", zarr_format=3)
        if not data.any():
            # every sample equals the fill value: zarr would write no shard at all; store its
            # chunks anyway, so this shard has a file and a record like any other
            arr = arr.with_config({"write_empty_chunks": True})
        start = shard * zarr_shard
        arr[start:start + data.shape[0]] = data
        if on_write is not None:
            on_write()  # the fault-injection hook: a failure here leaves only the private temporary
        rel = zarr_shard_key(array, shard)
        produced = tmp_dir / Path(rel).relative_to(Path("zarr") / array)
        if not produced.is_file():
            raise RuntimeError(f"zarr wrote no shard file at {produced}; the chunk key encoding changed?")
        final = root / rel
        final.parent.mkdir(parents=True, exist_ok=True)
        with open(produced, "rb") as f:
            os.fsync(f.fileno())
        os.replace(produced, final)
        return rel
    except OSError as e:
        if isinstance(e, WriteError):
            raise
        raise explain_oserror(e, root / zarr_shard_key(array, shard)) from e
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def write_zarr_meta(root: Path, task: int, samples: list[tuple[int, dict[str, Any]]]) -> Path:
    """The metas of one task's samples as sorted JSON lines (each sealed with its checksum), atomically."""
    lines = [json.dumps({"index": i, "meta": seal_meta(m)}, sort_keys=True, separators=(",", ":")) for i, m in samples]
    path = zarr_meta_path(root, task)
    write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path


def read_zarr_meta(path: Path) -> dict[int, dict[str, Any]]:
    """index -> meta of one task's zarr-meta file, each checked against its checksum; a
    missing, unreadable or damaged file raises DamagedShard naming it."""
    try:
        out = {}
        for line in path.read_text().splitlines():
            if line:
                d = json.loads(line)
                out[int(d["index"])] = open_meta(d["meta"])
        return out
    except (OSError, ValueError, KeyError, TypeError) as e:
        problem = f"sample meta does not read ({type(e).__name__}: {e})"
        raise DamagedShard(f"{path}: {problem}; {repair_hint(path.parent.parent)}", path, problem=problem) from None


class ZarrReader:
    """Random access by sample index into a store's Zarr arrays: `len(r)`, `r[i]` -> sample dict.

    Opens lazily and drops its handles when pickled, so each DataLoader worker opens its own.
    Refuses an incomplete store unless `allow_partial=True`. With `check_files` (the default)
    the first access to a task checks that its record exists and its shard files have their
    recorded sizes (a missing shard would read as fill values); any sample that does not
    decode raises DamagedShard naming its shard file and the fix. In a labels store `r[i]`
    paints the views on CPU from labels and meta, unless render_views=False (then: labels,
    index, meta).
    """

    def __init__(self, store_path: str | Path, allow_partial: bool = False, render_views: bool = True,
                 check_files: bool = True) -> None:
        self.path = Path(store_path)
        self.store = open_store(self.path)
        m = self.store.manifest
        if "zarr" not in m.formats:
            raise StoreError(f"{self.path} has no Zarr format (formats: {list(m.formats)}); render it with --formats zarr")
        if not allow_partial and not self.store.complete:
            raise StoreError(f"{self.path} is incomplete ({len(self.store.record_map)}/{m.tasks} tasks recorded); "
                             "rerun the same synth-shards command to finish it")
        self.num_samples = m.samples
        self.task_size = m.task_size
        self.zarr_shard = m.zarr_shard
        self.content = m.content
        self.render_views = render_views
        self.check_files = check_files
        self._arrays: dict[str, Any] | None = None
        self._pid = os.getpid()
        self._checked: set[int] = set()
        self._meta_task = -1
        self._meta: dict[int, dict[str, Any]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"] = None
        return state

    def _open(self) -> dict[str, Any]:
        if self._arrays is None or self._pid != os.getpid():  # reopen in a forked DataLoader worker
            try:
                g = zarr.open_group(str(self.path / "zarr"), mode="r", zarr_format=3)
                self._arrays = {name: g[name] for name in self.store.manifest.arrays}
            except Exception as e:  # noqa: BLE001 - zarr raises several kinds for damaged metadata
                raise DamagedShard(f"{self.path / 'zarr'}: the Zarr group does not open ({type(e).__name__}: {e}); "
                                   f"rerun the same synth-shards command to repair its metadata", self.path / "zarr") from None
            self._pid = os.getpid()
        return self._arrays

    def __len__(self) -> int:
        return self.num_samples

    def _check(self, i: int) -> None:
        task = i // self.task_size
        if self.check_files and task not in self._checked:
            self.store.check_task(task, "zarr")
            self._checked.add(task)

    def _meta_of(self, i: int) -> dict[str, Any]:
        task = i // self.task_size
        if task != self._meta_task:
            self._meta = read_zarr_meta(zarr_meta_path(self.path, task))
            self._meta_task = task
        try:
            return self._meta[i]
        except KeyError:
            path = zarr_meta_path(self.path, task)
            raise DamagedShard(f"{path}: no meta for sample {i}; {repair_hint(self.path)}", path, task) from None

    def _read(self, name: str, arr: Any, sel: Any, first: int) -> np.ndarray:
        try:
            return np.asarray(arr[sel])
        except Exception as e:  # noqa: BLE001 - zarr/zstd raise several kinds for a damaged chunk
            path = self.path / zarr_shard_key(name, first // self.zarr_shard)
            raise DamagedShard(f"{path}: {name} of sample {first} does not decode ({type(e).__name__}: {e}); "
                               f"{repair_hint(self.path)}", path, first // self.task_size) from None

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i)
        if not 0 <= i < self.num_samples:
            raise IndexError(f"sample {i} out of range [0, {self.num_samples}) of {self.path}")
        self._check(i)
        s: dict[str, Any] = {name: self._read(name, arr, i, i) for name, arr in self._open().items()}
        s.update(index=i, meta=self._meta_of(i))
        return next(painted([s])) if self.render_views else s

    def read_range(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Labels (n, D, H, W) and views (n, V, D, H, W) of samples [start, stop) in one read each
        (a labels store: views painted per sample, or left out with render_views=False)."""
        for t in range(start // self.task_size, (stop - 1) // self.task_size + 1):
            self._check(t * self.task_size)
        out = {name: self._read(name, arr, slice(start, stop), start) for name, arr in self._open().items()}
        if "views" not in out and self.render_views:
            samples = ({"labels": lab, "index": i, "meta": self._meta_of(i)} for i, lab in zip(range(start, stop), out["labels"]))
            out["views"] = np.stack([s["views"] for s in painted(samples)])
        return out
