"""Resolve `--ckpt PATH|RUN|bundled|random` to a model, with messages that say what to do."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from synthvox.core.errors import SynthvoxError
from synthvox.train.checkpoint import Checkpoint, open_checkpoint

__all__ = ["open_network", "load_network", "CheckpointLoadError"]


class CheckpointLoadError(SynthvoxError, ValueError):
    """A checkpoint could not be resolved or loaded; the message names it and says what to do."""


def _wrap(spec: str, e: Exception) -> CheckpointLoadError:
    if isinstance(e, CheckpointLoadError):
        return e
    if isinstance(e, ValueError):  # the loader's CheckpointError: already says what to do
        return CheckpointLoadError(f"--ckpt {spec}: {e}")
    # safetensors, torch and JSON errors all mean the same to a user
    hint = " (no bundled checkpoint yet? pass --ckpt random or a run directory)" if spec == "bundled" else ""
    return CheckpointLoadError(f"--ckpt {spec}: could not load the checkpoint: {type(e).__name__}: {e}{hint}")


def open_network(spec: str | Path | Checkpoint, verify_weights: bool = True) -> Checkpoint:
    """`open_checkpoint(spec)` (resolve once, read record.json once); errors name `--ckpt spec`."""
    try:
        return open_checkpoint(spec, verify_weights=verify_weights)
    except Exception as e:
        raise _wrap(str(spec), e) from e


def load_network(spec: str | Path | Checkpoint, device: str | torch.device = "cpu",
                 echo: Callable[[str], Any] | None = print, *,
                 verify_weights: bool = True) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The network of a checkpoint (spec or resolved `Checkpoint`) in eval mode on `device`, with
    a copy of its record, printing what was resolved.

    Raises `CheckpointLoadError` naming the spec for a missing, corrupt or incompatible checkpoint
    (a different model config than its weights, unreadable safetensors, no bundled checkpoint,
    no weights hash without `verify_weights=False`).
    """
    ck = open_network(spec, verify_weights)
    label = ck.spec if isinstance(spec, Checkpoint) else str(spec)
    try:
        model = ck.build(str(device))
    except Exception as e:
        raise _wrap(label, e) from e
    if ck.model_config.get("in_channels", 1) != 1:
        raise CheckpointLoadError(f"--ckpt {label}: the network takes {ck.model_config['in_channels']} input channels; "
                                  "features need a single-channel network")
    if echo is not None:
        sha = ck.sha256
        echo(f"checkpoint: {label} -> {ck.name} (sha256 {sha[:12] if sha else 'none: random init' if ck.is_random else 'none: not verified'})")
    return model, ck.record_dict()
