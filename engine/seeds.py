"""The seed tree: every random draw of sample `i` derives from (global seed, i, stage, view).

Small parameters come from a numpy Generator on `SeedSequence(seed, spawn_key=(i, stage, view))`;
voxel noise comes from a `torch.Generator` on the rendering device seeded from that same
child. Keying by stage name (hashed to a stable integer) and view means that adding a step or a
view never shifts the other streams. Never do arithmetic on seeds.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

__all__ = ["stage_key", "seed_sequence", "numpy_rng", "torch_generator", "child_seed"]


def stage_key(stage: str) -> int:
    """A stable 32-bit integer for a stage name (the same in every process and version)."""
    return int.from_bytes(hashlib.sha256(stage.encode()).digest()[:4], "little")


def seed_sequence(seed: int, index: int, stage: str, view: int = 0) -> np.random.SeedSequence:
    """The SeedSequence of (run seed, sample index, stage, view)."""
    if seed < 0 or index < 0 or view < 0:
        raise ValueError(f"seed, index and view must be >= 0, got seed={seed} index={index} view={view}")
    return np.random.SeedSequence(int(seed), spawn_key=(int(index), stage_key(stage), int(view)))


def numpy_rng(seed: int, index: int, stage: str, view: int = 0) -> np.random.Generator:
    """A numpy Generator for the small parameters of one stage of one sample (and view)."""
    return np.random.Generator(np.random.PCG64(seed_sequence(seed, index, stage, view)))


def child_seed(seed: int, index: int, stage: str, view: int = 0) -> int:
    """A 63-bit integer seed derived from the tree (for torch generators; recorded in meta)."""
    state = seed_sequence(seed, index, stage, view).generate_state(2, np.uint32)
    return int((int(state[0]) << 32 | int(state[1])) & ((1 << 63) - 1))


def torch_generator(seed: int, index: int, stage: str, view: int = 0, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator on `device` for voxel noise, seeded from the tree."""
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(child_seed(seed, index, stage, view))
    return g
