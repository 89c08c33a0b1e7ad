"""A store's skeleton: its manifest, directories and Zarr metadata, created or repaired by each run.

`plan_manifest` computes the manifest of a run without writing anything; `check_against`
refuses a store written with other settings; `write_skeleton` takes the client lock, removes
killed attempts' temporaries, and writes what is missing or torn: every file is written
atomically, and a rerun repairs what a kill or a full disk left (a store's skeleton can always
be finished by rerunning the same command).
"""
from __future__ import annotations

import os
import shutil
from contextlib import ExitStack
from pathlib import Path

from synthvox.core.atomic import WriteError, write_bytes
from synthvox.engine.config import EngineConfig, engine_config_hash
from synthvox.engine.schema import label_dtype
from synthvox.engine.templates import resolve_bank

from .layout import MANIFEST
from .lock import store_lock
from .manifest import Manifest, check_compatible, make_manifest, read_manifest
from .records import RecordBook
from .zarr_io import create_zarr_arrays

__all__ = ["plan_manifest", "existing_manifest", "check_against", "probe_writable", "write_skeleton",
           "cleanup_temporaries"]


def plan_manifest(samples: int, task_size: int, cfg: EngineConfig, seed: int, formats: tuple[str, ...],
                  content: str = "full") -> Manifest:
    """The manifest a run with these settings writes (resolves the bank for its content hash)."""
    if samples < 1 or task_size < 1:
        raise ValueError(f"--samples ({samples}) and --task-size ({task_size}) must be >= 1")
    bank = resolve_bank(cfg.bank)
    return make_manifest(cfg_dict=cfg.to_dict(), cfg_hash=engine_config_hash(cfg, bank.content_hash),
                         bank_hash=bank.content_hash, seed=seed, samples=samples, task_size=task_size,
                         formats=formats, label_dtype=str(label_dtype(cfg.max_labels)), views=cfg.views,
                         size=cfg.size, content=content)


def existing_manifest(root: str | Path) -> Manifest | None:
    """The manifest of an existing store at `root` (validated), or None when there is none."""
    return read_manifest(root) if (Path(root) / MANIFEST).is_file() else None


def check_against(root: str | Path, new: Manifest) -> None:
    """Refuse (StoreMismatch) a run whose settings differ from the existing store's."""
    old = existing_manifest(root)
    if old is not None:
        check_compatible(old, new, root)


def probe_writable(root: Path) -> None:
    """Create `root` if needed and check that files can be written there."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        write_bytes(root / ".synthvox-write-probe", b"ok")
        os.unlink(root / ".synthvox-write-probe")
    except OSError as e:
        raise WriteError(e.errno or 0, f"store {root} is not writable ({e.strerror or e}); choose a writable --out") from None


def cleanup_temporaries(root: Path) -> int:
    """Remove temporaries left by killed attempts (never a file under a final name)."""
    n = 0
    for sub in ("wds", "records", "zarr-meta", "zarr", "."):
        d = root / sub
        if not d.is_dir():
            continue
        for name in os.listdir(d):
            p = d / name
            if name.startswith(".") and (name.endswith(".tmp") or (sub == "zarr" and name.startswith(".tmp-"))):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                n += 1
    return n


def write_skeleton(root: Path, manifest: Manifest, reverify: bool = False, lock: ExitStack | None = None) -> RecordBook:
    """Create or repair the store's skeleton for `manifest` and load its intact records.

    With `lock` (an ExitStack), the store's client lock is taken into it before anything is
    cleaned or written (lock.py): a second client stops with StoreBusy.
    """
    if lock is not None:
        lock.enter_context(store_lock(root))
    cleanup_temporaries(root)
    subs = ("records", "logs") + (("wds",) if "wds" in manifest.formats else ()) \
        + (("zarr-meta",) if "zarr" in manifest.formats else ())
    for sub in subs:
        (root / sub).mkdir(exist_ok=True)
    if "zarr" in manifest.formats:
        create_zarr_arrays(root, manifest.samples, manifest.label_shape[0], manifest.views, manifest.label_dtype,
                           manifest.zarr_shard, manifest.arrays)
    book = RecordBook(root, manifest)
    book.load(check_hash=reverify)
    book.write_manifest()
    return book
