"""Stores written with the stand-in renderer, byte comparison of store trees, CLI and subprocess runs."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from synthvox.engine.config import EngineConfig
from synthvox.pipelines.runner import synth_shards

from .render import fake_render

__all__ = ["REPO", "SYNTHVOX", "make_store", "tree_digest", "file_stats", "run_cli", "run_synth"]

REPO = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parents[1]
SYNTHVOX = [sys.executable, "-m", "synthvox.cli.main"]


def make_store(path: Path, samples: int = 16, task_size: int = 2, size: int = 32) -> Path:
    """A complete store (wds + zarr) written by the pipelines code with the stand-in renderer."""
    synth_shards(path, samples, task_size=task_size, cfg=EngineConfig(size=size), workers=0,
                 formats=("wds", "zarr"), progress=False, renderer=fake_render)
    return path


def tree_digest(root: Path, exclude: tuple[str, ...] = ("logs",)) -> dict[str, str]:
    """relative path -> sha256 of every file of a store (logs excluded)."""
    out = {}
    root = Path(root)
    for dirpath, _, files in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir.parts and rel_dir.parts[0] in exclude:
            continue
        for f in files:
            p = Path(dirpath) / f
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def file_stats(root: Path, sub: str) -> dict[str, tuple[int, int]]:
    """relative path -> (inode, mtime_ns) of the files under root/sub."""
    out = {}
    for dirpath, _, files in os.walk(Path(root) / sub):
        for f in files:
            p = Path(dirpath) / f
            st = p.stat()
            out[p.relative_to(root).as_posix()] = (st.st_ino, st.st_mtime_ns)
    return out


def run_cli(args: list[str], env_extra: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`synthvox ARGS` in a fresh process."""
    env = dict(os.environ)
    env.update(env_extra or {})
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run(SYNTHVOX + args, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)


def run_synth(out: Path, samples: int, task_size: int, *, formats: str = "wds", workers: int = 0,
              size: int = 8, fake: bool = True, faults: str = "", timeout: float = 300) -> subprocess.CompletedProcess:
    """synth_shards in a fresh process (so an injected death kills that process, not pytest);
    `fake`: with the stand-in renderer, else the engine."""
    script = (
        "import sys; sys.path.insert(0, %r)\n"
        "from helpers.render import fake_render\n"
        "from synthvox.engine.config import EngineConfig\n"
        "from synthvox.pipelines.runner import synth_shards\n"
        "print(synth_shards(%r, %d, task_size=%d, cfg=EngineConfig(size=%d), formats=%r, workers=%d, progress=False,\n"
        "                   renderer=fake_render if %r else None))\n"
    ) % (str(TESTS), str(out), samples, task_size, size, formats, workers, fake)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if faults:
        env["SYNTHVOX_FAULTS"] = faults
    else:
        env.pop("SYNTHVOX_FAULTS", None)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)
