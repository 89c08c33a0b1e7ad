"""Few-shot splits: which labelled cases support and validate each (shots, seed) run.

Persisted as JSON next to the outputs (`splits.json`) and reused by later runs, so a rerun or a
second initialisation trains on exactly the same cases. Per seed a permutation of the labelled
cases is drawn from `SeedSequence(split_seed, spawn_key=(seed,))`: the validation case is its
first entry, the support set the next `shots` (so the 1-shot set is inside the 3-shot set of the
same seed). With no spare case the validation case is None and the last step is kept.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from synthvox.core.atomic import write_json

from ..datasets import DatasetError

__all__ = ["SPLITS_FILE", "draw_split", "load_or_make_splits", "split_key"]

SPLITS_FILE = "splits.json"


def split_key(shots: int, seed: int) -> str:
    return f"{int(shots)}shot-seed{int(seed)}"


def draw_split(case_ids: Sequence[str], shots: int, seed: int, split_seed: int = 0) -> dict[str, Any]:
    """{"shots", "seed", "train": [ids], "val": id | None} for one run (pure, deterministic)."""
    ids = sorted(case_ids)
    if shots < 1:
        raise ValueError(f"shots = {shots} must be >= 1")
    if len(ids) < shots:
        raise DatasetError(f"the dataset has {len(ids)} labelled cases ({ids}); cannot draw {shots} shots")
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(split_seed), spawn_key=(int(seed),))))
    perm = [ids[i] for i in rng.permutation(len(ids))]
    if len(ids) > shots:
        val, train = perm[0], perm[1 : 1 + shots]
    else:
        val, train = None, perm[:shots]
    return {"shots": int(shots), "seed": int(seed), "train": sorted(train), "val": val}


def load_or_make_splits(
    path: str | Path, dataset_name: str, case_ids: Sequence[str], shots: Sequence[int], seeds: Sequence[int], split_seed: int = 0
) -> dict[str, dict[str, Any]]:
    """The splits for every (shots, seed), read from `path` when present, drawn (and saved) otherwise.

    A file made for other labelled cases is an error (delete it or pick another output folder);
    missing (shots, seed) entries are added. Returns {split_key: split}.
    """
    path = Path(path)
    ids = sorted(case_ids)
    data: dict[str, Any] = {"dataset": dataset_name, "train_cases": ids, "split_seed": int(split_seed), "splits": {}}
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path} is not valid JSON ({e}); delete it to draw new splits") from None
        if old.get("train_cases") != ids or old.get("split_seed") != int(split_seed):
            raise DatasetError(
                f"{path} was made for labelled cases {old.get('train_cases')} (split_seed {old.get('split_seed')}), "
                f"not {ids} (split_seed {split_seed}); delete it or use another output folder"
            )
        data = old
    changed = False
    for k in shots:
        for s in seeds:
            key = split_key(k, s)
            if key not in data["splits"]:
                data["splits"][key] = draw_split(ids, k, s, split_seed)
                changed = True
    if changed or not path.exists():
        write_json(path, data, newline=False)
    return {split_key(k, s): data["splits"][split_key(k, s)] for k in shots for s in seeds}
