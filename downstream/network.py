"""Resolve `--ckpt PATH|RUN|bundled|random` to a model, with messages that say what to do."""
from __future__ import annotations

from typing import Any, Callable

import torch

from synthvox.core.errors import SynthvoxError
from synthvox.train.checkpoint import load_model

__all__ = ["load_network", "CheckpointLoadError"]


class CheckpointLoadError(SynthvoxError, ValueError):
    """A checkpoint could not be resolved or loaded; the message names it and says what to do."""


def load_network(spec: str, device: str | torch.device = "cpu",
                 echo: Callable[[str], Any] | None = print) -> tuple[torch.nn.Module, dict[str, Any]]:
    """`synthvox.train.checkpoint.load_model(spec)` in eval mode, printing what was resolved.

    Raises `CheckpointLoadError` naming `spec` for a missing, corrupt or incompatible checkpoint
    (a different model config than its weights, unreadable safetensors, no bundled checkpoint).
    """
    try:
        model, record = load_model(spec, map_location=str(device))
    except CheckpointLoadError:
        raise
    except ValueError as e:  # the loader's CheckpointError: already says what to do
        raise CheckpointLoadError(f"--ckpt {spec}: {e}") from e
    except Exception as e:  # safetensors, torch and JSON errors all mean the same to a user
        hint = " (no bundled checkpoint yet? pass --ckpt random or a run directory)" if spec == "bundled" else ""
        raise CheckpointLoadError(f"--ckpt {spec}: could not load the checkpoint: {type(e).__name__}: {e}{hint}") from e
    if getattr(model, "config", {}).get("in_channels", 1) != 1:
        raise CheckpointLoadError(f"--ckpt {spec}: the network takes {model.config['in_channels']} input channels; "
                                  "features need a single-channel network")
    model = model.to(device).eval()
    if echo is not None:
        sha = record.get("sha256")
        echo(f"checkpoint: {spec} -> {record.get('name', spec)} (sha256 {sha[:12] if sha else 'none: random init'})")
    return model, record
