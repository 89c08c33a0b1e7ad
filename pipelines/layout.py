"""Store layout: every file name of a store, from the task or shard index alone.

```
STORE/manifest.json                      the store description (manifest.py)
STORE/records/task-000003.json           one small record per finished task (written by the task)
STORE/records/block-00000.jsonl          RECORD_BLOCK consolidated records (written by the client)
STORE/wds/shard-000003.tar               one WebDataset tar per task
STORE/zarr/                              a Zarr v3 group: arrays `labels` (N,D,H,W), `views` (N,V,D,H,W)
                                         (a `labels` store has no `views` array)
STORE/zarr/labels/c/7/0/0/0              one Zarr shard file (ZARR_SHARD samples) per shard index
STORE/zarr-meta/task-000003.jsonl        the samples' `meta` for the Zarr format, one line per sample
STORE/logs/                              run logs (hosts, times) and client.lock (one client per store,
                                         lock.py): not part of the reproducible store
```
Temporaries live beside their final name (same file system, so `os.replace` is atomic) and
carry a private random suffix (`synthvox.core.atomic.tmp_name`), so two attempts of one task
never write the same file.
"""
from __future__ import annotations

from pathlib import Path

__all__ = [
    "MANIFEST", "RECORD_BLOCK", "FORMATS", "DEFAULT_TASK_SIZE", "ZARR_SHARD", "ARRAYS", "CONTENTS", "stored_arrays",
    "record_path", "block_path", "wds_path", "zarr_shard_key", "zarr_meta_path",
    "zarr_shard_samples", "task_range", "num_tasks", "REPRODUCIBLE_EXCLUDE", "TASKS_PER_WORKER", "choose_task_size",
]

MANIFEST = "manifest.json"
RECORD_BLOCK = 1024            # task records per consolidated block file
DEFAULT_TASK_SIZE = 256        # the largest task size chosen when --task-size is not given (choose_task_size)
TASKS_PER_WORKER = 4           # without --task-size, a new store gets about this many tasks per worker
ZARR_SHARD = 32                # samples per Zarr shard (at most)
ARRAYS = ("labels", "views")
FORMATS = ("wds", "zarr")      # store formats, in canonical order
#: store content kinds: `full` keeps labels and views; `labels` keeps labels and each sample's
#: meta (the recorded appearance parameters and noise seeds), and readers re-render the views
CONTENTS = ("full", "labels")
#: top-level entries that hold run logs and temporaries, excluded from byte comparisons
REPRODUCIBLE_EXCLUDE = ("logs",)


def stored_arrays(content: str) -> tuple[str, ...]:
    """The arrays a store of `content` holds (views are re-rendered on load in a `labels` store)."""
    if content not in CONTENTS:
        raise ValueError(f"content {content!r}: choose from {', '.join(CONTENTS)}")
    return ARRAYS if content == "full" else ("labels",)


def record_path(root: Path, task: int) -> Path:
    return Path(root) / "records" / f"task-{task:06d}.json"


def block_path(root: Path, block: int) -> Path:
    return Path(root) / "records" / f"block-{block:05d}.jsonl"


def wds_path(root: Path, task: int) -> Path:
    return Path(root) / "wds" / f"shard-{task:06d}.tar"


def zarr_meta_path(root: Path, task: int) -> Path:
    return Path(root) / "zarr-meta" / f"task-{task:06d}.jsonl"


def zarr_shard_key(array: str, shard: int) -> str:
    """The store-relative path of Zarr shard `shard` of `array` (default chunk key encoding, '/')."""
    ndim = 4 if array == "labels" else 5
    return "/".join(["zarr", array, "c", str(shard)] + ["0"] * (ndim - 1))


def zarr_shard_samples(task_size: int) -> int:
    """Samples per Zarr shard: the largest divisor of `task_size` that is <= ZARR_SHARD.

    A task then covers a whole number of Zarr shards, never part of one.
    """
    for z in range(min(ZARR_SHARD, task_size), 0, -1):
        if task_size % z == 0:
            return z
    return 1


def num_tasks(samples: int, task_size: int) -> int:
    return -(-samples // task_size)


def task_range(task: int, samples: int, task_size: int) -> tuple[int, int]:
    """[start, stop) of `task`; the last task may be shorter."""
    start = task * task_size
    return start, min(start + task_size, samples)


def choose_task_size(samples: int, workers: int) -> int:
    """The task size of a new store when --task-size is not given: at most DEFAULT_TASK_SIZE,
    and small enough that each of `workers` gets about TASKS_PER_WORKER tasks (every worker
    has work and the load evens out). The store's layout then depends on the worker count:
    the manifest records the size, a resume reads it back, and `--task-size N` reproduces it
    with any worker count."""
    per = -(-samples // (TASKS_PER_WORKER * max(1, workers)))
    return max(1, min(DEFAULT_TASK_SIZE, per))
