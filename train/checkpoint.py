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
`latest` is replaced atomically last. `load_model(spec)` rebuilds the network from
`record.json` alone. Specs: a checkpoint dir, a run dir (its latest), "bundled" (the package
data in train/bundled/), "random" (the reference config, deterministic init).
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from synthvox.core.atomic import atomic_dir, write_json, write_text
from synthvox.core.errors import SynthvoxError

from .model import DEFAULT_CONFIG, build_model

__all__ = [
    "CHECKPOINT_SCHEMA_VERSION",
    "DEFAULT_NORMALISATION",
    "CheckpointError",
    "save_checkpoint",
    "resolve_checkpoint",
    "load_model",
    "load_record",
    "load_state",
    "load_weights",
    "list_checkpoints",
    "describe",
    "file_sha256",
    "BUNDLED_DIR",
]

CHECKPOINT_SCHEMA_VERSION = 1
DEFAULT_NORMALISATION: dict[str, Any] = {"kind": "minmax", "clip": None}
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
RANDOM_SEED = 0
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
        spec = "bundled"
    if str(spec) == "random":
        return None
    if str(spec) == "bundled":
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


def describe(spec: str | Path | None) -> str:
    """One line saying which checkpoint a spec resolved to (callers print it)."""
    p = resolve_checkpoint(spec)
    return "checkpoint: random (reference config, deterministic init)" if p is None else f"checkpoint: {p}"


def load_record(ckpt_dir: str | Path) -> dict[str, Any]:
    """record.json of a checkpoint dir, schema version checked."""
    p = Path(ckpt_dir) / "record.json"
    try:
        rec = json.loads(p.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{p} is missing; {ckpt_dir} is not a complete checkpoint") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{p} is corrupt ({e}); use another checkpoint") from None
    if rec.get("schema_version") != CHECKPOINT_SCHEMA_VERSION:
        raise CheckpointError(
            f"{p} has checkpoint schema version {rec.get('schema_version')!r}; this synthvox reads "
            f"version {CHECKPOINT_SCHEMA_VERSION}: install the synthvox that wrote it or retrain"
        )
    for key in ("model", "step", "normalisation"):
        if key not in rec:
            raise CheckpointError(f"{p} lacks {key!r}; the checkpoint is corrupt")
    return rec


def load_weights(ckpt_dir: str | Path, model: torch.nn.Module, check_hash: bool = True) -> dict[str, Any]:
    """Load model.safetensors of `ckpt_dir` into `model` (same config required); return the record."""
    ckpt_dir = Path(ckpt_dir)
    rec = load_record(ckpt_dir)
    inner = _unwrap(model)
    if dict(rec["model"]) != dict(inner.config):
        raise CheckpointError(
            f"{ckpt_dir} holds a model with config {rec['model']}, not {inner.config}; "
            "build the model from the checkpoint (load_model) or use a matching checkpoint"
        )
    wfile = ckpt_dir / "model.safetensors"
    if not wfile.is_file():
        raise CheckpointError(f"{wfile} is missing; the checkpoint is incomplete")
    if check_hash and rec.get("sha256") and file_sha256(wfile) != rec["sha256"]:
        raise CheckpointError(f"{wfile} does not match the sha256 in record.json: the file is corrupt; use another checkpoint")
    try:
        weights = load_file(str(wfile))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{wfile} cannot be read ({e}); the file is corrupt") from None
    try:
        inner.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{wfile} does not fit the model config in record.json: {str(e)[:400]}") from None
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


def random_record() -> dict[str, Any]:
    return {
        "schema_version": CHECKPOINT_SCHEMA_VERSION,
        "name": "random",
        "step": 0,
        "model": dict(DEFAULT_CONFIG),
        "normalisation": dict(DEFAULT_NORMALISATION),
        "engine_config_hash": None,
        "store_manifest_hash": None,
        "sha256": None,
    }


def load_model(spec: str | Path | None, map_location: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """(model in eval mode on `map_location`, record dict) for a checkpoint spec.

    "random": the reference config initialised from a fixed torch.Generator (the same weights
    every call, the global RNG untouched). The record carries "normalisation", "name" and
    "sha256" (None for random).
    """
    path = resolve_checkpoint(spec)
    if path is None:
        g = torch.Generator().manual_seed(RANDOM_SEED)
        model = build_model(dict(DEFAULT_CONFIG), generator=g)
        rec = random_record()
    else:
        rec = load_record(path)
        try:
            model = build_model(rec["model"], empty=True)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path}/record.json has an unusable model config {rec['model']}: {e}") from None
        load_weights(path, model)
        rec.setdefault("name", path.name)
        rec["path"] = str(path)
    return model.to(map_location).eval(), rec
