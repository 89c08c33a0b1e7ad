"""The sweep file: a base config, axes of values, checkpoints and probe settings (YAML).

    name: anchors-and-temperature          # optional, printed in the table's title
    base:                                   # a config file's sections, shared by every point
      engine: {size: 32}
      train: {steps: 200, crop: 32, widths: [8, 16, 32, 64], source: engine}
    axes:                                   # the grid: every combination of the values
      train.temperature: [0.1, 0.33]
      train.anchor_bg_max: [1.0, 0.3]
    points:                                 # optional: extra points, each a dict of overrides
      - {train.balanced: true}
    checkpoints: [50, 100, 200]             # steps probed (default: 4 evenly spaced); saved every gcd
    threads: 1                              # torch threads per training (also an axis key)
    store: null                             # a store folder, for points with train.source: store
    probe: {samples: 2, registration: true, pca: false}   # `synthvox probe` settings
    baseline: true                          # probe a random init of each point's architecture

An axis (or point) key is `train.<field>` or `engine.<field>[.<field>...]` (any key of those
config sections, nested ones dotted), `threads` or `store`. Every point's config is
validated when the file is read, so a typo fails before anything runs.
"""
from __future__ import annotations

import copy
import itertools
import math
import re
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any

import yaml

from synthvox.engine.config import EngineConfig
from synthvox.core.configbase import ConfigError, from_dict, stable_hash
from synthvox.train.config import TrainConfig

__all__ = ["SweepError", "SweepSpec", "Point", "load_sweep", "PROBE_FLAGS"]

#: probe settings a sweep may set -> the `synthvox probe` flag that carries it
PROBE_FLAGS = {"size": "--size", "crop": "--crop", "samples": "--samples", "per_label": "--per-label",
               "reg_spacing": "--reg-spacing", "registration": "--registration", "pca": "--pca"}
_TOP = {"name", "base", "axes", "points", "checkpoints", "threads", "store", "probe", "baseline"}


class SweepError(ValueError):
    """The sweep file or a sweep run is wrong; the message names the file, key or point."""


@dataclass(frozen=True)
class Point:
    """One training of the grid: its name, the overrides that define it and its resolved sections."""

    name: str
    overrides: dict[str, Any]
    engine: dict[str, Any]
    train: dict[str, Any]
    threads: int
    store: str | None

    def config_hash(self, checkpoints: tuple[int, ...], probe: dict[str, Any]) -> str:
        """What makes a finished point reusable: same config, checkpoints and probe settings."""
        return stable_hash({"engine": self.engine, "train": self.train, "threads": self.threads, "store": self.store,
                            "checkpoints": list(checkpoints), "probe": probe})


@dataclass(frozen=True)
class SweepSpec:
    path: str
    name: str
    base: dict[str, Any]
    axes: dict[str, list[Any]]
    extra_points: list[dict[str, Any]]
    checkpoints: tuple[int, ...]
    threads: int
    store: str | None
    probe: dict[str, Any] = field(default_factory=dict)
    baseline: bool = True

    def points(self) -> list[Point]:
        """The grid's points (cartesian product of the axes, in file order), then the extra points."""
        keys = list(self.axes)
        combos = [dict(zip(keys, vals)) for vals in itertools.product(*(self.axes[k] for k in keys))] if keys else []
        combos += [dict(p) for p in self.extra_points]
        if not combos:
            combos = [{}]
        return [self._point(i, o) for i, o in enumerate(combos)]

    def _point(self, i: int, over: dict[str, Any]) -> Point:
        cfg = copy.deepcopy(self.base)
        threads, store = self.threads, self.store
        for key, value in over.items():
            if key == "threads":
                threads = value
            elif key == "store":
                store = value
            else:
                section, *path = key.split(".")
                _set(cfg.setdefault(section, {}), path, value)
        desc = ",".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in over.items()) or "base"
        name = f"p{i:02d}-" + re.sub(r"[^A-Za-z0-9=,._-]", "", desc)[:80]
        train = dict(cfg.get("train", {}))
        # checkpoints at every step of the list (their gcd), none pruned
        every = reduce(math.gcd, self.checkpoints)
        train.update(ckpt_every=every, keep=max(self.checkpoints) // every + 1, steps=train.get("steps", max(self.checkpoints)))
        point = Point(name, dict(over), dict(cfg.get("engine", {})), train, int(threads), store)
        _validate(point, self.path)
        if max(self.checkpoints) > int(train["steps"]):
            raise SweepError(f"{self.path}: point {name}: checkpoint {max(self.checkpoints)} is beyond train.steps = {train['steps']}")
        return point


def _short(v: Any) -> str:
    return "-".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


def _set(d: dict[str, Any], path: list[str], value: Any) -> None:
    for p in path[:-1]:
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            raise SweepError(f"cannot set {'.'.join(path)}: {p} is not a mapping")
    d[path[-1]] = value


def _validate(p: Point, where: str) -> None:
    try:
        EngineConfig.from_dict(p.engine)
        tc = from_dict(TrainConfig, p.train, "train")
    except ConfigError as e:
        raise SweepError(f"{where}: point {p.name} ({p.overrides or 'base'}): {e}") from None
    if not isinstance(p.threads, int) or p.threads < 1:
        raise SweepError(f"{where}: point {p.name}: threads = {p.threads!r} must be an integer >= 1")
    if tc.source == "store" and not p.store:
        raise SweepError(f"{where}: point {p.name} trains from a store (train.source: store) but no `store:` is given")
    if p.store and not Path(p.store).is_dir():
        raise SweepError(f"{where}: point {p.name}: store {p.store} is not a directory (make one with synthvox synth-shards)")


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file (every point's config is checked)."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SweepError(f"{path}: no such sweep file") from None
    except yaml.YAMLError as e:
        raise SweepError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise SweepError(f"{path}: a sweep file is a mapping with keys {sorted(_TOP)}")
    unknown = sorted(set(doc) - _TOP)
    if unknown:
        raise SweepError(f"{path}: unknown keys {unknown}; known: {sorted(_TOP)}")
    base = doc.get("base") or {}
    if not isinstance(base, dict) or set(base) - {"engine", "train"}:
        raise SweepError(f"{path}: base must be a mapping with `engine:` and/or `train:` sections, got {base!r}")
    axes = doc.get("axes") or {}
    if not isinstance(axes, dict):
        raise SweepError(f"{path}: axes must map keys to lists of values")
    for k, v in axes.items():
        _check_key(k, path)
        if not isinstance(v, list) or not v:
            raise SweepError(f"{path}: axis {k} must be a non-empty list of values, got {v!r}")
    extra = doc.get("points") or []
    if not isinstance(extra, list) or not all(isinstance(p, dict) for p in extra):
        raise SweepError(f"{path}: points must be a list of mappings (key: value overrides)")
    for p in extra:
        for k in p:
            _check_key(k, path)
    steps = int((base.get("train") or {}).get("steps", TrainConfig.steps))
    ck = doc.get("checkpoints") or sorted({max(1, round(steps * f / 4)) for f in (1, 2, 3, 4)})
    if not isinstance(ck, list) or not all(isinstance(c, int) and c >= 1 for c in ck):
        raise SweepError(f"{path}: checkpoints must be a list of step counts >= 1, got {ck!r}")
    every = reduce(math.gcd, ck)
    if max(ck) // every > 2 * len(set(ck)) + 2:
        raise SweepError(f"{path}: checkpoints {ck} are saved every {every} steps (their greatest common divisor): "
                         f"{max(ck) // every} checkpoints; choose steps with a larger common divisor, e.g. multiples of {max(ck) // 4}")
    probe = doc.get("probe") or {}
    bad = sorted(set(probe) - set(PROBE_FLAGS))
    if bad:
        raise SweepError(f"{path}: unknown probe settings {bad}; known: {sorted(PROBE_FLAGS)}")
    spec = SweepSpec(str(path), str(doc.get("name") or path.stem), base, axes, extra, tuple(sorted(set(ck))),
                     doc.get("threads", 1), doc.get("store"), dict(probe), bool(doc.get("baseline", True)))
    names = [p.name for p in spec.points()]  # validates every point
    if len(set(names)) != len(names):
        raise SweepError(f"{path}: two points have the same name; make their overrides differ")
    return spec


def _check_key(key: str, path: Path) -> None:
    if key in ("threads", "store"):
        return
    section = key.split(".")[0]
    if section not in ("train", "engine") or "." not in key:
        raise SweepError(f"{path}: axis key {key!r} must be train.<field>, engine.<field>[.<field>], threads or store")
