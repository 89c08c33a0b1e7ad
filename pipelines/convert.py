"""`convert(store, out, content)`: copy a store with the other content kind.

    convert("full_store", "labels_store", "labels")   # drop the views (keeps labels and meta)
    convert("labels_store", "full_store", "full")     # paint the views from labels and meta

It runs the ordinary `synth_shards` machinery (same manifest rules, atomic shards, records,
resume, in-process with workers=0 or on a LocalCluster / existing Dask scheduler) with tasks
that read their samples from the source store instead of rendering them. The copy has the
source's engine config, seed, sample count, task size and formats, so its files are those a
direct `synth-shards --content ...` run would write: byte for byte when the views are painted
on the device type that rendered the direct store (CPU here), and when dropping views, always.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from synthvox.engine.config import engine_config_hash
from synthvox.engine.templates import resolve_bank

from .layout import CONTENTS
from .manifest import StoreMismatch
from .runner import synth_shards
from .store import open_store

__all__ = ["convert"]


def convert(store: str | Path, out: str | Path, content: str, *, workers: int | None = None,
            scheduler: str | None = None, client: Any = None, progress: bool = True, stream: Any = None,
            max_failures: int = 0) -> dict[str, Any]:
    """Write `out`, a store with `content` ("full" or "labels") holding the samples of `store`.

    The source must be complete and hold the other content; rerunning the same call resumes.
    Returns synth_shards' summary. Raises ValueError / StoreMismatch with what to do.
    """
    if content not in CONTENTS:
        raise ValueError(f"--content {content!r}: choose from {', '.join(CONTENTS)}")
    src = open_store(store)
    if Path(out).resolve() == src.path.resolve():
        raise ValueError(f"--out {out} is the source store itself; choose another directory")
    if src.content == content:
        raise ValueError(f"{src.path} already holds content {content!r}; nothing to convert (copy the directory instead)")
    if not src.complete:
        raise ValueError(f"{src.path} is incomplete ({len(src.record_map)}/{src.num_tasks} tasks recorded); "
                         "finish it with the same synthvox synth-shards command first")

    cfg = src.engine_config
    here = engine_config_hash(cfg, resolve_bank(cfg.bank).content_hash)
    if here != src.manifest.engine_config_hash:
        # the hash covers the template bank's content: another bank would paint other samples
        raise StoreMismatch(f"{src.path}: its engine config hash {src.manifest.engine_config_hash} differs from "
                            f"this machine's {here} for the same config (another template bank content at "
                            f"{cfg.bank!r}?); use the bank the store was rendered with")
    return synth_shards(out, src.num_samples, task_size=src.task_size, cfg=cfg, seed=src.seed,
                        formats=src.formats, workers=workers, scheduler=scheduler, client=client,
                        max_failures=max_failures, progress=progress, stream=stream, content=content,
                        source=src.path)
