"""WebDataset tar shards: one tar per task, fixed metadata, zstd-compressed `.npy` members.

Members of sample `i` (the key has no dots, as WebDataset requires)::

    {i:010d}.labels.npy.zst    (D, H, W) uint8|uint16, `.npy` then zstd
    {i:010d}.views.npy.zst     (V, D, H, W) uint8, plane-delta filtered, `.npy`, then zstd
    {i:010d}.meta.json         the sample's meta (sorted keys), sealed with its own checksum
                               (`meta_sha256`, codecs.seal_meta); readers check and remove it

A `labels` store has no views member: its meta records each view's appearance parameters and
noise seeds, and `iter_wds_shard` paints the views on load (render_views=True, the default) through
the one painting stage, `labels.painted`.

Every tar header has mtime 0, uid/gid 0, empty user/group names and mode 0644, so the same
samples always give the same bytes. `decode_wds_sample` turns a WebDataset dict of raw member
bytes into the sample contract (undoing the views' delta filter, see codecs.py), for use in `webdataset` pipelines (`.map(decode_wds_sample)`).
"""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from .codecs import decode_array, encode_array, meta_bytes, open_meta
from .errors import DamagedShard, repair_hint
from .labels import painted

__all__ = ["encode_array", "decode_array", "WdsWriter", "iter_wds_shard", "decode_wds_sample", "sample_key"]


def sample_key(index: int) -> str:
    return f"{index:010d}"


class WdsWriter:
    """Appends samples to an open binary file as tar members with fixed metadata.

    The caller owns the file (an `atomic_open` temporary); `on_member` is called after each
    member (the fault-injection hook uses it).
    """

    def __init__(self, fileobj: BinaryIO, on_member: Callable[[], None] | None = None) -> None:
        self._tar = tarfile.open(fileobj=fileobj, mode="w", format=tarfile.USTAR_FORMAT)
        self._on_member = on_member

    def _add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 0
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.type = tarfile.REGTYPE
        self._tar.addfile(info, io.BytesIO(data))
        if self._on_member is not None:
            self._on_member()

    def write(self, sample: dict[str, Any], arrays: tuple[str, ...] = ("labels", "views")) -> None:
        """Append one numpy sample: its `arrays` (("labels",) in a labels store), then its meta."""
        key = sample_key(int(sample["index"]))
        for name in arrays:
            self._add(f"{key}.{name}.npy.zst", encode_array(sample[name], name))
        self._add(f"{key}.meta.json", meta_bytes(sample["meta"]))

    def close(self) -> None:
        self._tar.close()


def decode_wds_sample(raw: dict[str, Any]) -> dict[str, Any]:
    """A WebDataset dict (`__key__` plus raw member bytes by extension) -> the sample dict.

    A labels store's samples come without views: add `.map(views_from_meta)` to paint them.
    A meta that does not match its checksum raises MetaChecksumError (a ValueError).
    """
    key = raw["__key__"]
    key = key.rsplit("/", 1)[-1]
    out: dict[str, Any] = {"index": int(key)}
    for ext, value in raw.items():
        if ext.startswith("__"):
            continue
        if ext.endswith(".npy.zst"):
            name = ext[: -len(".npy.zst")]
            out[name] = decode_array(value, name)
        elif ext == "meta.json":
            out["meta"] = open_meta(json.loads(value))
        elif ext.endswith(".json"):
            out[ext[: -len(".json")]] = json.loads(value)
    return out


def iter_wds_shard(path: str | Path, render_views: bool = True) -> Iterator[dict[str, Any]]:
    """Yield the samples of one tar shard in index order (streaming, one sample in memory).

    Samples of a labels store get their views painted on CPU from labels and meta (the
    `labels.painted` stage) unless render_views=False (then: labels, index, meta).
    A missing, truncated or damaged tar, or a meta that fails its checksum, raises
    DamagedShard naming the file and the fix.
    """
    raw = _iter_tar(Path(path))
    return painted(raw) if render_views else raw


def _iter_tar(path: Path) -> Iterator[dict[str, Any]]:
    try:
        with tarfile.open(path, mode="r|") as tar:
            current: dict[str, Any] = {}
            for member in tar:
                if not member.isfile():
                    continue
                key, _, ext = member.name.partition(".")
                if current and current["__key__"] != key:
                    yield decode_wds_sample(current)
                    current = {}
                f = tar.extractfile(member)
                assert f is not None
                current["__key__"] = key
                current[ext] = f.read()
            if current:
                yield decode_wds_sample(current)
    except (tarfile.TarError, EOFError, RuntimeError, ValueError, OSError, KeyError) as e:
        problem = f"damaged, truncated or missing tar shard ({type(e).__name__}: {e})"
        raise DamagedShard(f"{path}: {problem}; {repair_hint(path.parent.parent)}", path, problem=problem) from e
