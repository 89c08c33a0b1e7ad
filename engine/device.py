"""Device type: the conditions under which "same (config, seed, index) -> identical bytes" holds.

Identical bytes are promised for the same device type: cpu (with the ATen CPU capability)
or cuda (with the GPU architecture), the torch version and the TF32 flags. Stores record it
per shard; `verify` compares exactly when it matches and within a quantisation step otherwise.
"""
from __future__ import annotations

import torch

__all__ = ["device_type", "same_device_type"]


def device_type(device: str | torch.device = "cpu") -> dict[str, str | bool]:
    """A JSON-able description of the rendering device type."""
    dev = torch.device(device)
    info: dict[str, str | bool] = {"torch": torch.__version__.split("+")[0], "kind": dev.type}
    if dev.type == "cuda":
        idx = dev.index if dev.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(idx)
        info["arch"] = f"sm_{major}{minor}"
        info["tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
        info["tf32_cudnn"] = bool(torch.backends.cudnn.allow_tf32)
    else:
        info["arch"] = torch.backends.cpu.get_cpu_capability()
    return info


def same_device_type(a: dict, b: dict) -> bool:
    """True when two recorded device types promise identical bytes."""
    return dict(a) == dict(b)
