"""torchrun plumbing of the trainer: process-group setup, the few collectives it uses, the stop flag.

env:// init when launched by torchrun (nccl on GPU, gloo on CPU); one process without it.
Every collective is a no-op in a single process, so the loop reads the same either way.
"""
from __future__ import annotations

import datetime
import os
import signal
from typing import Any

import torch

from synthvox.core.errors import SynthvoxError

__all__ = ["DeviceError", "setup_distributed", "is_distributed", "all_reduce_sum", "all_gather", "broadcast_object",
           "barrier", "teardown", "StopFlag"]


class DeviceError(SynthvoxError, ValueError):
    """The requested device cannot be used here; the message says what to pass instead."""


def setup_distributed(device_arg: str | None, timeout_s: int) -> tuple[int, int, int, torch.device]:
    """(rank, world, local_rank, device); env:// init when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    want = device_arg or ("cuda" if torch.cuda.is_available() else "cpu")
    if want == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("--device cuda but no CUDA device is available; pass --device cpu")
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend, init_method="env://", timeout=datetime.timedelta(seconds=timeout_s))
    return rank, world, local, device


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """`t` summed over the ranks (in place)."""
    if is_distributed():
        torch.distributed.all_reduce(t)
    return t


def all_gather(t: torch.Tensor, world: int) -> list[torch.Tensor]:
    """Every rank's `t` (equal shapes), in rank order."""
    if not is_distributed():
        return [t]
    out = [torch.zeros_like(t) for _ in range(world)]
    torch.distributed.all_gather(out, t)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank (a picklable value)."""
    if not is_distributed():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    """Wait until every rank is here."""
    if is_distributed():
        torch.distributed.barrier()


def teardown() -> None:
    """Leave the process group, if one was joined."""
    if is_distributed():
        torch.distributed.destroy_process_group()


class StopFlag:
    """Set by SIGTERM/SIGINT; ranks agree on it through a collective each step."""

    def __init__(self) -> None:
        self.set = False
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread (e.g. called from a test thread)
                pass

    def _handler(self, signum: int, frame: Any) -> None:
        self.set = True

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
