"""The checkpoint contract: write atomically, keep the last k, resolve and load for downstream use.

Layout::

    RUN/checkpoints/step-000123/model.safetensors   weights (the model's state_dict)
    RUN/checkpoints/step-000123/state.pt            optimizer, scaler, schedule, RNG, stream position;
                                                    tensors and plain containers only, loads with
                                                    torch.load(weights_only=True)
    RUN/checkpoints/step-000123/record.json         model config, step, engine config hash, store
                                                    manifest hash, input normalisation, schema version
    RUN/checkpoints/latest                          one line: the name of the newest complete checkpoint

A checkpoint directory is written under a private temporary name and renamed when complete;
`latest` is replaced atomically last. Specs: a checkpoint dir, a run dir (its latest),
"bundled" (the package data in train/bundled/), "random" (the reference config, deterministic
init). `open_checkpoint(spec)` resolves a spec ONCE into a frozen `Checkpoint` (path, record,
name, is_random, divisor, ...) that consumers take; its `build()` rebuilds the network from
`record.json` alone (weights read and sha256-checked once per Checkpoint). A record without a
weights hash is refused unless `verify_weights=False` (`--no-verify-weights`).
`load_model(spec)` = `open_checkpoint(spec).build()` plus a copy of the record.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import torch
from safetensors.torch import load_file, save_file

from synthvox.core.atomic import atomic_dir, write_json, write_text
from synthvox.core.errors import SynthvoxError

from .model import DEFAULT_CONFIG, build_model

__all__ = [
    "CHECKPOINT_SCHEMA_VERSION", "DEFAULT_NORMALISATION", "CheckpointError", "Checkpoint", "open_checkpoint",
    "save_checkpoint", "resolve_checkpoint", "load_model", "load_record", "load_state", "load_weights", "list_checkpoints", "describe", "file_sha256", "BUNDLED_DIR",
]

CHECKPOINT_SCHEMA_VERSION = 1
DEFAULT_NORMALISATION: dict[str, Any] = {"kind": "minmax", "clip": None}
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
RANDOM_SEED = 0
RANDOM, BUNDLED = "random", "bundled"
_STEP_RE = re.compile(r"^step-(\d{6,})$")


class CheckpointError(SynthvoxError, ValueError):
    """A checkpoint spec cannot be resolved or a checkpoint is corrupt or incompatible."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def step_name(step: int) -> str:
    return f"step-{int(step):06d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint dirs of a run (those with a record.json), oldest step first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_RE.match(p.name)) and (p / "record.json").is_file()]
    return [p for _, p in sorted(found)]


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: torch.nn.Module,
    state: dict[str, Any],
    record: dict[str, Any] | None = None,
    keep: int = 3,
) -> Path:
    """Write `RUN/checkpoints/step-XXXXXX/` atomically, update `latest`, keep the last `keep`.

    `model` must carry `.config` (UNet3D, or DDP/compiled wrappers of one); `state` holds
    tensors and plain containers only (checked by re-loading with weights_only=True is left
    to tests). `record` adds fields to record.json (engine_config_hash, store_manifest_hash,
    train config, ...). Returns the checkpoint directory.
    """
    inner = _unwrap(model)
    root = Path(run_dir) / "checkpoints"
    name = step_name(step)
    final = root / name
    # overwrite: the same step saved again (e.g. a resumed run stopped at once) replaces it
    with atomic_dir(final, overwrite=True) as tmp:
        weights = {k: v.detach().to("cpu").contiguous() for k, v in inner.state_dict().items()}
        save_file(weights, str(tmp / "model.safetensors"))
        torch.save(state, tmp / "state.pt")
        rec = {
            "schema_version": CHECKPOINT_SCHEMA_VERSION,
            "name": name,
            "step": int(step),
            "model": dict(inner.config),
            "normalisation": dict(DEFAULT_NORMALISATION),
            "engine_config_hash": None,
            "store_manifest_hash": None,
            "torch": torch.__version__.split("+")[0],
        }
        rec.update(record or {})
        rec["sha256"] = file_sha256(tmp / "model.safetensors")
        write_json(tmp / "record.json", rec, indent=2)
    write_text(root / "latest", name + "\n")
    if keep > 0:
        for old in list_checkpoints(run_dir)[:-keep]:
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
    return final


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    while True:
        if hasattr(model, "module") and not hasattr(model, "config"):
            model = model.module  # DDP
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod  # torch.compile
        else:
            break
    if not hasattr(model, "config"):
        raise CheckpointError(f"{type(model).__name__} has no .config; save a UNet3D (or a DDP/compiled wrapper of one)")
    return model


def resolve_checkpoint(spec: str | Path | None) -> Path | None:
    """The checkpoint directory a spec names; None for "random".

    spec: a checkpoint dir (holds record.json) | a run dir (its checkpoints/latest) |
    "bundled" (train/bundled/) | "random". None means "bundled".
    """
    if spec is None:
        spec = BUNDLED
    if str(spec) == RANDOM:
        return None
    if str(spec) == BUNDLED:
        p = _find_in(BUNDLED_DIR)
        if p is None:
            raise CheckpointError(
                f"no bundled checkpoint in this install ({BUNDLED_DIR} has none yet); "
                "pass --ckpt random or --ckpt RUN_DIR / a checkpoint dir from `synthvox pretrain`"
            )
        return p
    path = Path(spec)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; pass a checkpoint dir, a run dir, 'bundled' or 'random'")
    p = _find_in(path)
    if p is None:
        raise CheckpointError(
            f"{path} is neither a checkpoint dir (no record.json) nor a run dir with checkpoints/latest; "
            "pass RUN (from `synthvox pretrain --out RUN`), RUN/checkpoints/step-XXXXXX, 'bundled' or 'random'"
        )
    return p


def _find_in(path: Path) -> Path | None:
    if (path / "record.json").is_file():
        return path
    for root in (path / "checkpoints", path):
        latest = root / "latest"
        if latest.is_file():
            target = root / latest.read_text().strip()
            if not (target / "record.json").is_file():
                raise CheckpointError(f"{latest} names {target.name} but {target} has no record.json; the run dir is damaged")
            return target
    return None


def describe(spec: "str | Path | Checkpoint | None") -> str:
    """One line saying which checkpoint a spec resolved to (callers print it)."""
    if isinstance(spec, Checkpoint):
        return spec.describe()
    p = resolve_checkpoint(spec)
    return "checkpoint: random (reference config, deterministic init)" if p is None else f"checkpoint: {p}"


def load_record(ckpt_dir: str | Path) -> dict[str, Any]:
    """record.json of a checkpoint dir, schema version checked."""
    p = Path(ckpt_dir) / "record.json"
    try:
        rec = json.loads(p.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{p} is missing; {ckpt_dir} is not a complete checkpoint") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{p} is corrupt ({e}); use another checkpoint") from None
    if not isinstance(rec, dict):
        raise CheckpointError(f"{p} is corrupt (not a JSON object); use another checkpoint")
    if rec.get("schema_version") != CHECKPOINT_SCHEMA_VERSION:
        raise CheckpointError(
            f"{p} has checkpoint schema version {rec.get('schema_version')!r}; this synthvox reads "
            f"version {CHECKPOINT_SCHEMA_VERSION}: install the synthvox that wrote it or retrain"
        )
    for key in ("model", "step", "normalisation"):
        if key not in rec:
            raise CheckpointError(f"{p} lacks {key!r}; the checkpoint is corrupt")
    return rec


def _unhashed(ckpt_dir: Path) -> CheckpointError:
    return CheckpointError(
        f"{ckpt_dir / 'record.json'} has no weights hash ('sha256'), so {ckpt_dir / 'model.safetensors'} cannot be "
        "checked: use a checkpoint written by `synthvox pretrain` (or re-export it), or pass --no-verify-weights "
        "to load it unchecked"
    )


def _read_weights(ckpt_dir: Path, rec: Mapping[str, Any], check_hash: bool) -> dict[str, torch.Tensor]:
    """The tensors of model.safetensors, its sha256 checked against the record (refused without one)."""
    wfile = ckpt_dir / "model.safetensors"
    if not wfile.is_file():
        raise CheckpointError(f"{wfile} is missing; the checkpoint is incomplete")
    if check_hash:
        if not rec.get("sha256"):
            raise _unhashed(ckpt_dir)
        if file_sha256(wfile) != rec["sha256"]:
            raise CheckpointError(f"{wfile} does not match the sha256 in record.json: the file is corrupt; use another checkpoint")
    try:
        return load_file(str(wfile))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{wfile} cannot be read ({e}); the file is corrupt") from None


def _load_into(model: torch.nn.Module, weights: Mapping[str, torch.Tensor], ckpt_dir: Path) -> None:
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{ckpt_dir / 'model.safetensors'} does not fit the model config in record.json: {str(e)[:400]}") from None


def load_weights(ckpt_dir: str | Path, model: torch.nn.Module, check_hash: bool = True) -> dict[str, Any]:
    """Load model.safetensors of `ckpt_dir` into `model` (same config required); return the record.

    With `check_hash` (the default) a record without a weights hash is refused.
    """
    ckpt_dir = Path(ckpt_dir)
    rec = load_record(ckpt_dir)
    inner = _unwrap(model)
    if dict(rec["model"]) != dict(inner.config):
        raise CheckpointError(
            f"{ckpt_dir} holds a model with config {rec['model']}, not {inner.config}; "
            "build the model from the checkpoint (load_model) or use a matching checkpoint"
        )
    _load_into(inner, _read_weights(ckpt_dir, rec, check_hash), ckpt_dir)
    return rec


def load_state(ckpt_dir: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """state.pt of a checkpoint (weights_only=True)."""
    p = Path(ckpt_dir) / "state.pt"
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{p} is missing; the checkpoint is incomplete") from None
    except Exception as e:
        raise CheckpointError(f"{p} cannot be read ({str(e)[:300]}); the file is corrupt") from None


def random_record(model_config: Mapping[str, Any] | None = None, name: str = RANDOM) -> dict[str, Any]:
    return {
        "schema_version": CHECKPOINT_SCHEMA_VERSION,
        "name": name,
        "step": 0,
        "model": dict(model_config or DEFAULT_CONFIG),
        "normalisation": dict(DEFAULT_NORMALISATION),
        "engine_config_hash": None,
        "store_manifest_hash": None,
        "sha256": None,
    }


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """A checkpoint resolved once (`open_checkpoint(spec)`) and passed to every consumer.

    `path` is the checkpoint directory (None for a random init), `record` its record.json as
    read once (plus "name" and "path"), `spec` what the user gave. The weights are read, and
    their sha256 checked, once per Checkpoint, on the first `build`; every `build` returns a
    fresh model (fine-tuning one does not touch the next).
    """

    spec: str
    path: Path | None
    record: Mapping[str, Any]
    verify_weights: bool = True
    seed: int = RANDOM_SEED                     # random init only: the generator's seed

    @classmethod
    def random(cls, model_config: Mapping[str, Any] | None = None, name: str = RANDOM,
               seed: int = RANDOM_SEED) -> "Checkpoint":
        """A random init of `model_config` (default: the reference config) from a fixed generator."""
        return cls(spec=RANDOM, path=None, record=MappingProxyType(random_record(model_config, name)), seed=seed)

    @property
    def is_random(self) -> bool:
        return self.path is None

    @property
    def name(self) -> str:
        return str(self.record["name"])

    @property
    def sha256(self) -> str | None:
        return self.record.get("sha256")

    @property
    def model_config(self) -> dict[str, Any]:
        return dict(self.record["model"])

    @property
    def normalisation(self) -> dict[str, Any]:
        return dict(self.record.get("normalisation") or DEFAULT_NORMALISATION)

    @property
    def divisor(self) -> int:
        """Input sides of the network must be multiples of this (2**depth)."""
        return int(2 ** (len(self.record["model"]["widths"]) - 1))

    @property
    def tag(self) -> str:
        """A folder- and file-safe form of the name."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name) or "ckpt"

    def info(self) -> dict[str, Any]:
        """{"name", "sha256"}: what a results record cites."""
        return {"name": self.name, "sha256": self.sha256}

    def record_dict(self) -> dict[str, Any]:
        """A mutable copy of the record."""
        return json.loads(json.dumps(dict(self.record)))

    def describe(self) -> str:
        if self.is_random:
            return "checkpoint: random (reference config, deterministic init)"
        return f"checkpoint: {self.path}" + ("" if self.verify_weights else " (weights not verified: --no-verify-weights)")

    @cached_property
    def weights(self) -> dict[str, torch.Tensor]:
        """The tensors of model.safetensors as stored, read and sha256-checked once (not for random)."""
        if self.path is None:
            raise CheckpointError("a random init has no stored weights; build() draws them")
        return _read_weights(self.path, self.record, self.verify_weights)

    def build(self, map_location: str | torch.device = "cpu") -> torch.nn.Module:
        """A fresh model with this checkpoint's weights (or its random init), eval mode."""
        if self.path is None:
            model = build_model(self.model_config, generator=torch.Generator().manual_seed(self.seed))
        else:
            try:
                model = build_model(self.model_config, empty=True)
            except (TypeError, ValueError) as e:
                raise CheckpointError(f"{self.path}/record.json has an unusable model config {self.record['model']}: {e}") from None
            _load_into(model, self.weights, self.path)
        return model.to(map_location).eval()


def open_checkpoint(spec: "str | Path | Checkpoint | None", *, verify_weights: bool = True) -> Checkpoint:
    """Resolve a spec once: a checkpoint dir, a run dir (its latest), "bundled" (None) or "random".

    record.json is read here, once. With `verify_weights` (the default) a record without a
    weights hash is refused (`--no-verify-weights` loads it unchecked). A Checkpoint is
    returned as it is.
    """
    if isinstance(spec, Checkpoint):
        return spec
    path = resolve_checkpoint(spec)
    if path is None:
        return Checkpoint.random()
    rec = load_record(path)
    if verify_weights and not rec.get("sha256"):
        raise _unhashed(path)
    rec.setdefault("name", path.name)
    rec["path"] = str(path)
    return Checkpoint(spec=str(spec or BUNDLED), path=path, record=MappingProxyType(rec), verify_weights=verify_weights)


def load_model(spec: "str | Path | Checkpoint | None", map_location: str | torch.device = "cpu", *,
               verify_weights: bool = True) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(model in eval mode on `map_location`, record dict) for a checkpoint spec or Checkpoint.

    "random": the reference config initialised from a fixed torch.Generator (the same weights
    every call, the global RNG untouched). The record carries "normalisation", "name" and
    "sha256" (None for random).
    """
    ck = open_checkpoint(spec, verify_weights=verify_weights)
    return ck.build(map_location), ck.record_dict()
