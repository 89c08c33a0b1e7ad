"""Zarr v3 store: arrays indexed by sample, sharded, written one whole shard per call.

`STORE/zarr/` is a Zarr v3 group with arrays ``labels`` (N, D, H, W) and ``views``
(N, V, D, H, W); one inner chunk per sample (random access decodes one sample), shards of
`zarr_shard` samples (a divisor of the task size, so a task covers whole shards). The client
writes the metadata (`zarr.json`) once; a task encodes each shard through a private temporary
array with identical metadata, then `os.replace`s the shard file into place: no two attempts
ever write the same file, and a shard appears only complete. Compression: the views' plane-delta
filter (`codecs.PlaneDelta`, zarr codec `synthvox.plane_delta`) and `zarr.codecs.ZstdCodec` (with
its checksum) inside the sharding codec. Sample meta lives in `STORE/zarr-meta/` (JSON lines).
A `labels` store has no ``views`` array; `ZarrReader` re-renders the views from labels and meta.
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

from synthvox.core.atomic import WriteError, explain_oserror, write_bytes
from synthvox.engine.schema import check_schema_version

from .codecs import DELTA_KINDS, LEVELS
from .labels import views_from_meta
from .layout import MANIFEST, stored_arrays, zarr_meta_path, zarr_shard_key
from .zarr_codec import PlaneDelta  # importing zarr_codec registers synthvox.plane_delta with zarr

__all__ = ["create_zarr_arrays", "write_zarr_shard", "write_zarr_meta", "ZarrReader"]


def _codecs(name: str) -> dict[str, Any]:
    """create_array's filters and compressors for array `name`: the tar members' chain."""

    out: dict[str, Any] = {"compressors": ZstdCodec(level=LEVELS[name], checksum=True)}
    if name in DELTA_KINDS:
        out["filters"] = [PlaneDelta(axis=-3)]
    return out


def create_zarr_arrays(root: Path, samples: int, size: int, views: int, label_dtype: str, zarr_shard: int,
                       arrays: tuple[str, ...] = ("labels", "views")) -> None:
    """Create (or grow) the group and its arrays; metadata only, written by the client once."""
    zroot = Path(root) / "zarr"
    shapes = {"labels": (samples, size, size, size), "views": (samples, views, size, size, size)}
    shapes = {k: v for k, v in shapes.items() if k in arrays}
    dtypes = {"labels": label_dtype, "views": "uint8"}
    if (zroot / "zarr.json").exists():
        group = zarr.open_group(str(zroot), mode="r+", zarr_format=3)
        for name, shape in shapes.items():
            arr = group[name]
            if tuple(arr.shape) != shape:
                if shape[0] < arr.shape[0] or tuple(arr.shape[1:]) != shape[1:]:
                    raise ValueError(f"{zroot / name}: existing shape {arr.shape} cannot become {shape}")
                arr.resize(shape)  # growing only rewrites zarr.json; shard names depend on the index alone
        return
    group = zarr.open_group(str(zroot), mode="w", zarr_format=3)
    for name, shape in shapes.items():
        group.create_array(
            name, shape=shape, dtype=dtypes[name],
            chunks=(1,) + shape[1:], shards=(zarr_shard,) + shape[1:],
            **_codecs(name), fill_value=0,
            config={"write_empty_chunks": True},
        )


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
    """The metas of one task's samples as sorted JSON lines, atomically."""
    lines = [json.dumps({"index": i, "meta": m}, sort_keys=True, separators=(",", ":")) for i, m in samples]
    path = zarr_meta_path(root, task)
    write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path


class ZarrReader:
    """Random access by sample index into a store's Zarr arrays: `len(r)`, `r[i]` -> sample dict.

    Opens lazily and drops its handles when pickled, so each DataLoader worker opens its own.
    Refuses an incomplete store unless `allow_partial=True` (missing shards would read as zeros).
    In a labels store `r[i]` renders the views on CPU from labels and meta, unless
    render_views=False (then: labels, index, meta).
    """

    def __init__(self, store_path: str | Path, allow_partial: bool = False, render_views: bool = True) -> None:
        self.path = Path(store_path)
        manifest = json.loads((self.path / MANIFEST).read_text())

        check_schema_version(manifest.get("schema_version"), str(self.path / MANIFEST))
        if "zarr" not in manifest["formats"]:
            raise ValueError(f"{self.path} has no Zarr format (formats: {manifest['formats']}); render it with --formats zarr")
        if not manifest.get("complete") and not allow_partial:
            raise ValueError(f"{self.path} is incomplete ({manifest.get('tasks_done', 0)}/{manifest['tasks']} tasks); rerun synth-shards to finish it")
        self.num_samples = int(manifest["samples"])
        self.task_size = int(manifest["task_size"])
        self.content = str(manifest.get("content", "full"))
        self.render_views = render_views
        self._arrays: dict[str, Any] | None = None
        self._pid = os.getpid()
        self._meta_task = -1
        self._meta: dict[int, dict[str, Any]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"] = None
        return state

    def _open(self) -> dict[str, Any]:
        if self._arrays is None or self._pid != os.getpid():  # reopen in a forked DataLoader worker


            g = zarr.open_group(str(self.path / "zarr"), mode="r", zarr_format=3)
            self._arrays = {name: g[name] for name in stored_arrays(self.content)}
            self._pid = os.getpid()
        return self._arrays

    def __len__(self) -> int:
        return self.num_samples

    def _meta_of(self, i: int) -> dict[str, Any]:
        task = i // self.task_size
        if task != self._meta_task:
            text = zarr_meta_path(self.path, task).read_text()
            self._meta = {}
            for line in text.splitlines():
                if line:
                    d = json.loads(line)
                    self._meta[d["index"]] = d["meta"]
            self._meta_task = task
        return self._meta[i]

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i)
        if not 0 <= i < self.num_samples:
            raise IndexError(f"sample {i} out of range [0, {self.num_samples}) of {self.path}")
        a = self._open()
        s = {name: np.asarray(arr[i]) for name, arr in a.items()}
        s.update(index=i, meta=self._meta_of(i))
        return views_from_meta(s) if self.render_views else s

    def read_range(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Labels (n, D, H, W) and views (n, V, D, H, W) of samples [start, stop) in one read each
        (a labels store: views rendered per sample, or left out with render_views=False)."""
        a = self._open()
        out = {name: np.asarray(arr[start:stop]) for name, arr in a.items()}
        if "views" not in out and self.render_views:
            out["views"] = np.stack([views_from_meta({"labels": lab, "index": i, "meta": self._meta_of(i)})["views"]
                                     for i, lab in zip(range(start, stop), out["labels"])])
        return out
