"""The store manifest: a typed, frozen contract, validated on read, and its compatibility check.

`manifest.json` describes the store (schema and layout version, content `full` or `labels`,
engine config and hash, seed, sample count, task size, formats, shapes, codecs, versions)
plus three progress fields the client refreshes now and then (`complete`, `tasks_done`,
`bytes`). Nothing time- or host-dependent is stored here (that goes to `logs/`), so a
finished store is byte-reproducible. The per-task records are in `records.py`.

    m = read_manifest(store)          # a Manifest; a damaged or wrong one is a ManifestError
    m.samples, m.task_size, m.formats, m.label_shape, m.views, m.engine()   # typed fields
    m.to_dict()                       # the JSON object, as written
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import torch
import zarr

from synthvox.core.atomic import write_json
from synthvox.core.errors import SynthvoxError
from synthvox.engine.config import EngineConfig
from synthvox.engine.schema import SCHEMA_VERSION

from .codecs import describe_codecs
from .errors import ManifestError, StoreMismatch
from .layout import CONTENTS, FORMATS, MANIFEST, RECORD_BLOCK, num_tasks, stored_arrays, task_range, zarr_shard_samples

__all__ = [
    "STORE_VERSION", "BYTE_DECIDING", "Manifest", "StoreMismatch", "ManifestError", "software_versions",
    "make_manifest", "read_manifest", "write_manifest", "check_compatible", "compatibility_problems",
]

#: layout version of pipelines stores (bump on any layout change; 2: plane-delta views;
#: 3: every stored meta carries its own checksum, `meta_sha256`)
STORE_VERSION = 3

#: packages whose version decides a store's bytes (the engine: synthvox, torch; the encoder:
#: numcodecs' zstd): a resume and every worker must match the store
BYTE_DECIDING = ("synthvox", "torch", "numcodecs")
LABEL_DTYPES = ("uint8", "uint16")


def software_versions() -> dict[str, str]:
    """Versions that decide the bytes of a store (compared at resume and across workers)."""
    try:
        sv = version("synthvox")
    except PackageNotFoundError:
        sv = "unknown"
    return {
        "synthvox": sv, "torch": torch.__version__.split("+")[0], "numpy": np.__version__,
        "zarr": zarr.__version__, "numcodecs": numcodecs.__version__,
    }


@dataclass(frozen=True)
class Manifest:
    """What `manifest.json` holds (see the module docstring); progress fields change through
    `with_progress`, never in place."""

    schema_version: int
    store_version: int
    content: str
    engine_config: dict[str, Any]
    engine_config_hash: str
    bank_hash: str | None
    seed: int
    samples: int
    task_size: int
    tasks: int
    zarr_shard: int
    formats: tuple[str, ...]
    label_dtype: str
    label_shape: tuple[int, int, int]
    views_shape: tuple[int, int, int, int]
    codecs: dict[str, dict[str, str]]
    record_block: int
    versions: dict[str, str]
    complete: bool = False
    tasks_done: int = 0
    bytes: dict[str, int] = field(default_factory=dict)

    @property
    def views(self) -> int:
        """Views per sample (stored in a full store, painted on load from a labels store)."""
        return self.views_shape[0]

    @property
    def arrays(self) -> tuple[str, ...]:
        """The arrays the store holds: ("labels", "views") or ("labels",) in a labels store."""
        return stored_arrays(self.content)

    def shape(self, array: str) -> tuple[int, ...]:
        """The per-sample shape of `array` ("labels" or "views")."""
        return self.label_shape if array == "labels" else self.views_shape

    def task_range(self, task: int) -> tuple[int, int]:
        return task_range(task, self.samples, self.task_size)

    def engine(self) -> EngineConfig:
        return EngineConfig.from_dict(self.engine_config)

    def with_progress(self, tasks_done: int, byte_counts: dict[str, int]) -> "Manifest":
        return dataclasses.replace(self, tasks_done=int(tasks_done), complete=tasks_done == self.tasks,
                                   bytes={k: int(v) for k, v in byte_counts.items()})

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of manifest.json (lists, not tuples)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["formats"] = list(self.formats)
        d["shapes"] = {"labels": list(d.pop("label_shape")), "views": list(d.pop("views_shape"))}
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = MANIFEST) -> "Manifest":
        """Validate the JSON object `d` (read from `where`) and build the Manifest.

        A wrong shape, a missing or unknown key, a value of the wrong type or out of range
        raises ManifestError naming `where`, the key and the value.
        """
        return _parse(d, where)


def _bad(where: str, what: str) -> ManifestError:
    return ManifestError(f"{where}: {what}; the manifest is damaged or was not written by synthvox "
                         "(move the store aside and render it again with synthvox synth-shards)")


def _ints(v: Any, n: int) -> bool:
    return isinstance(v, list) and len(v) == n and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v)


def _is_int(v: Any, lo: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _str_map(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) for k in v)


#: key -> (check, what is expected): checked in this order, so later checks may rely on earlier keys
_CHECKS: dict[str, tuple[Any, str]] = {
    "schema_version": (lambda v, d: v == SCHEMA_VERSION, f"{SCHEMA_VERSION}"),
    "store_version": (lambda v, d: v == STORE_VERSION, f"{STORE_VERSION}"),
    "content": (lambda v, d: v in CONTENTS, f"one of {list(CONTENTS)}"),
    "engine_config": (lambda v, d: _str_map(v), "a mapping (the engine config)"),
    "engine_config_hash": (lambda v, d: isinstance(v, str) and v != "", "a hash string"),
    "bank_hash": (lambda v, d: v is None or isinstance(v, str), "a hash string or null"),
    "seed": (lambda v, d: _is_int(v), "an integer >= 0"),
    "samples": (lambda v, d: _is_int(v, 1), "an integer >= 1"),
    "task_size": (lambda v, d: _is_int(v, 1), "an integer >= 1"),
    "tasks": (lambda v, d: v == num_tasks(d["samples"], d["task_size"]), "ceil(samples / task_size)"),
    "zarr_shard": (lambda v, d: v == zarr_shard_samples(d["task_size"]), "the Zarr shard size of the task size"),
    "formats": (lambda v, d: isinstance(v, list) and v and v == [f for f in FORMATS if f in v] and len(set(v)) == len(v),
                f"a non-empty list of {list(FORMATS)} in that order"),
    "label_dtype": (lambda v, d: v in LABEL_DTYPES, f"one of {list(LABEL_DTYPES)}"),
    "shapes": (lambda v, d: isinstance(v, dict) and set(v) == {"labels", "views"} and _ints(v["labels"], 3)
               and _ints(v["views"], 4), '{"labels": [D, H, W], "views": [V, D, H, W]}'),
    "codecs": (lambda v, d: _str_map(v) and all(_str_map(c) for c in v.values()), "a mapping per format"),
    "record_block": (lambda v, d: v == RECORD_BLOCK, f"{RECORD_BLOCK}"),
    "versions": (lambda v, d: _str_map(v) and all(isinstance(x, str) for x in v.values()), "a mapping of package versions"),
    "complete": (lambda v, d: isinstance(v, bool), "true or false"),
    "tasks_done": (lambda v, d: _is_int(v) and v <= d["tasks"], "an integer in [0, tasks]"),
    "bytes": (lambda v, d: _str_map(v) and all(_is_int(x) for x in v.values()), "a mapping of byte counts"),
}


def _parse(d: Any, where: str) -> Manifest:
    if not isinstance(d, dict):
        raise _bad(where, f"holds a JSON {type(d).__name__}, not an object")
    for key, current in (("schema_version", SCHEMA_VERSION), ("store_version", STORE_VERSION)):
        if key in d and d[key] != current:
            what = "schema version" if key == "schema_version" else "store layout version"
            raise ManifestError(f"{where} has {what} {d[key]!r}, this synthvox reads {current}: re-render the store "
                                "with this synthvox, or install the synthvox that wrote it")
    unknown = sorted(set(d) - set(_CHECKS))
    if unknown:
        raise _bad(where, f"unknown key(s) {', '.join(unknown)}")
    for key, (ok, expected) in _CHECKS.items():
        if key not in d:
            raise _bad(where, f"no {key!r}")
        if not ok(d[key], d):
            raise _bad(where, f"{key} = {json.dumps(d[key])[:80]}, expected {expected}")
    try:
        EngineConfig.from_dict(d["engine_config"])
    except (SynthvoxError, ValueError, TypeError) as e:
        raise _bad(where, f"engine_config does not parse ({e})") from None
    kw = {k: v for k, v in d.items() if k != "shapes"}
    kw["formats"] = tuple(d["formats"])
    kw["label_shape"] = tuple(d["shapes"]["labels"])
    kw["views_shape"] = tuple(d["shapes"]["views"])
    return Manifest(**kw)


def make_manifest(*, cfg_dict: dict[str, Any], cfg_hash: str, bank_hash: str | None, seed: int, samples: int,
                  task_size: int, formats: tuple[str, ...], label_dtype: str, views: int, size: int,
                  content: str = "full") -> Manifest:
    """The manifest of a new run (no task done yet)."""
    arrays = stored_arrays(content)  # `shapes` keep the views' shape: readers of a labels store render them
    return Manifest(
        schema_version=SCHEMA_VERSION, store_version=STORE_VERSION, content=content, engine_config=cfg_dict,
        engine_config_hash=cfg_hash, bank_hash=bank_hash, seed=int(seed), samples=int(samples),
        task_size=int(task_size), tasks=num_tasks(samples, task_size), zarr_shard=zarr_shard_samples(task_size),
        formats=tuple(formats), label_dtype=label_dtype, label_shape=(size,) * 3, views_shape=(views,) + (size,) * 3,
        codecs={f: describe_codecs(arrays, f) for f in FORMATS}, record_block=RECORD_BLOCK,
        versions=software_versions(), complete=False, tasks_done=0, bytes={f: 0 for f in formats},
    )


def read_manifest(root: str | Path) -> Manifest:
    """The manifest of the store `root`; a missing, unreadable or invalid one raises naming the path."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {root} is not a synthvox store (create one with synthvox synth-shards)")
    try:
        d = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise _bad(str(path), "is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise _bad(str(path), f"is not valid JSON ({e})") from None
    except OSError as e:
        raise ManifestError(f"{path}: cannot be read ({e.strerror or e})") from None
    return Manifest.from_dict(d, str(path))


def write_manifest(root: str | Path, m: Manifest) -> None:
    write_json(Path(root) / MANIFEST, m.to_dict())


#: manifest fields that must match for a run to continue or grow a store, with what to do
_MUST_MATCH = {
    "content": "pass the store's --content, or another --out; `synthvox convert` copies a store with the other content",
    "engine_config_hash": "use the same --config/--size/--bank as before, or another --out",
    "seed": "use the same --seed, or another --out",
    "task_size": "use the same --task-size (the store's layout depends on it), or another --out",
    "formats": "use the same --formats, or another --out",
    "label_dtype": "use the same config, or another --out",
}


def compatibility_problems(old: Manifest, new: Manifest) -> list[str]:
    """Each reason why a run with the settings of `new` may not resume or grow `old`."""
    problems = []
    for key, todo in _MUST_MATCH.items():
        a, b = getattr(old, key), getattr(new, key)
        if a != b:
            a, b = (list(a), list(b)) if key == "formats" else (a, b)
            problems.append(f"{key}: store has {a!r}, this run has {b!r} ({todo})")
    for pkg in BYTE_DECIDING:
        a, b = old.versions.get(pkg), new.versions.get(pkg)
        if a != b:
            problems.append(f"{pkg} version: store was written by {a}, this is {b} (install {pkg} {a}, or use another --out)")
    if new.samples < old.samples:
        problems.append(f"samples: store has {old.samples}, this run asks for {new.samples} "
                        f"(a store only grows; pass --samples >= {old.samples})")
    return problems


def check_compatible(old: Manifest, new: Manifest, root: str | Path) -> None:
    """Refuse to resume or grow `old` with the settings of `new`, naming each difference."""
    problems = compatibility_problems(old, new)
    if problems:
        raise StoreMismatch(f"{Path(root) / MANIFEST} does not match this run:\n  " + "\n  ".join(problems))
