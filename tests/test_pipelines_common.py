"""Helpers shared by the pipelines tests (no tests here): renderers, store comparison, CLI runs."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from synthvox.engine.config import EngineConfig
from synthvox.engine.seeds import numpy_rng

REPO = Path(__file__).resolve().parents[1]
SYNTHVOX = [sys.executable, "-m", "synthvox.cli.main"]


def engine_works() -> bool:
    """True once the real engine renders (it is being written in parallel)."""
    try:
        from synthvox.engine.render import render_sample, sample_to_numpy

        sample_to_numpy(render_sample(EngineConfig(size=8), 0, 0))
        return True
    except Exception:  # noqa: BLE001 - any failure: fall back to the stand-in
        return False


def fake_render(cfg, seed, index, bank):
    """A stand-in renderer with the sample contract, a pure function of (seed, index)."""
    rng = numpy_rng(seed, index, "fake")
    d = cfg.size
    labels = rng.integers(0, 6, size=(d, d, d), dtype=np.uint8)
    views = rng.integers(0, 256, size=(cfg.views, d, d, d), dtype=np.uint8)
    return {"labels": labels, "views": views, "index": index, "meta": {"n_labels": 5, "index": index, "p": [0.5, 1.25]}}


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
    env = dict(os.environ)
    env.update(env_extra or {})
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run(SYNTHVOX + args, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)


def run_synth(out: Path, samples: int, task_size: int, *, formats: str = "wds", workers: int = 0,
              size: int = 8, fake: bool = True, faults: str = "", timeout: float = 300) -> subprocess.CompletedProcess:
    """synth_shards in a fresh process (so an injected death kills that process, not pytest)."""
    script = (
        "import sys; sys.path.insert(0, %r)\n"
        "import test_pipelines_common as c, synthvox.pipelines.task as T\n"
        "from synthvox.engine.config import EngineConfig\n"
        "from synthvox.pipelines.runner import synth_shards\n"
        "if %r: T.render_numpy = c.fake_render\n"
        "print(synth_shards(%r, %d, task_size=%d, cfg=EngineConfig(size=%d), formats=%r, workers=%d, progress=False))\n"
    ) % (str(Path(__file__).parent), fake, str(out), samples, task_size, size, formats, workers)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if faults:
        env["SYNTHVOX_FAULTS"] = faults
    else:
        env.pop("SYNTHVOX_FAULTS", None)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)


def patch_workers_with_fake(client) -> None:
    """Make every (current and restarted) Dask worker use the stand-in renderer."""
    import cloudpickle
    from distributed.diagnostics.plugin import WorkerPlugin

    cloudpickle.register_pickle_by_value(sys.modules[__name__])

    class FakeRender(WorkerPlugin):
        name = "synthvox-test-fake-render"

        def setup(self, worker):
            import synthvox.pipelines.task as t

            t.render_numpy = fake_render

    client.register_plugin(FakeRender())
