"""Write rendered samples to disk: one sample as .npz, PNG montages of a few samples.

Montage layout (one PNG per sample): rows = labels (in colour) then every view; columns =
the three mid-slices, axial (k = W/2, the (i, j) plane), coronal (j = H/2) and sagittal
(i = D/2), displayed with the first in-plane axis to the right and the second up.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from synthvox.core.atomic import atomic_open, write_figure

from .config import EngineConfig
from .ensemble.density import LabelStats, ensemble_kind, label_stats
from .render import render_sample, sample_to_numpy

__all__ = ["write_npz", "render_npz", "write_montage", "write_previews", "preview_line", "label_colours"]


def write_npz(sample: dict[str, Any], out: str | Path) -> Path:
    """Write a (numpy or torch) sample to `out` (.npz: labels, views, index, meta as a JSON string), atomically."""
    out = Path(out)
    s = sample_to_numpy(sample)
    with atomic_open(out, "wb") as f:
        np.savez_compressed(f, labels=s["labels"], views=s["views"], index=np.int64(s["index"]),
                            meta=np.array(json.dumps(s["meta"], sort_keys=True)))
    return out


def render_npz(cfg: EngineConfig, seed: int, index: int, out: str | Path, bank: Any = None, device: str = "cpu") -> Path:
    """Render sample `index` of run `seed` and write it to `out` (see write_npz)."""
    return write_npz(render_sample(cfg, seed, index, bank=bank, device=device), out)


def label_colours(n: int) -> np.ndarray:
    """(n + 1, 3) float RGB: black background, then distinct colours (tab20, then golden-ratio hues)."""
    import matplotlib  # lazily: ~1 s of startup, for figures only

    base = list(matplotlib.colormaps["tab20"].colors)
    cols = [(0.0, 0.0, 0.0)]
    for i in range(n):
        if i < len(base):
            cols.append(tuple(base[i]))
        else:
            h = (i * 0.618033988749895) % 1.0
            cols.append(tuple(matplotlib.colors.hsv_to_rgb((h, 0.65, 0.95))))
    return np.asarray(cols, dtype=np.float64)


def _mid_slices(vol: np.ndarray) -> list[tuple[str, np.ndarray]]:
    d, h, w = vol.shape
    return [("axial", vol[:, :, w // 2]), ("coronal", vol[:, h // 2, :]), ("sagittal", vol[d // 2, :, :])]


def write_montage(labels: np.ndarray, views: np.ndarray, out: str | Path, title: str = "") -> Path:
    """One PNG: labels in colour and each view, three mid-slices each; written atomically."""
    import matplotlib  # lazily: ~1 s of startup, for figures only

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out = Path(out)
    colours = label_colours(int(labels.max()) if labels.size else 0)
    rows = 1 + views.shape[0]
    fig, axes = plt.subplots(rows, 3, figsize=(7.5, 2.5 * rows), squeeze=False)
    for col, (plane, sl) in enumerate(_mid_slices(labels)):
        axes[0, col].imshow(colours[sl.T.astype(np.int64)], origin="lower", interpolation="nearest")
        axes[0, col].set_title(f"labels, {plane}", fontsize=8)
    for v in range(views.shape[0]):
        for col, (plane, sl) in enumerate(_mid_slices(views[v])):
            axes[v + 1, col].imshow(sl.T, cmap="gray", vmin=0, vmax=255, origin="lower", interpolation="nearest")
            axes[v + 1, col].set_title(f"view {v}, {plane}", fontsize=8)
    for ax in axes.flat:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return write_figure(out, fig, format="png", dpi=100)


def preview_line(index: int, stats: LabelStats) -> str:
    """The stats line of one montage: index, kind, background share, label count, largest label."""
    return f"sample {index}: {stats.line()}"


def write_previews(cfg: EngineConfig, seed: int, n: int, out_dir: str | Path, bank: Any = None, device: str = "cpu",
                   indices: Sequence[int] | None = None, report: Callable[[str], None] | None = None) -> list[Path]:
    """Render samples (0..n-1, or `indices`) of run `seed` and write `sample-{index:06d}.png` montages.

    Each montage's title carries its label statistics (engine/ensemble/density.py); `report`,
    when given, receives one line of them per montage (`synthvox preview` prints them).
    """
    out_dir = Path(out_dir)
    paths = []
    for i in (indices if indices is not None else range(n)):
        s = sample_to_numpy(render_sample(cfg, seed, int(i), bank=bank, device=device))
        st = label_stats(s["labels"], ensemble_kind(s["meta"]["ensemble"]))
        title = (f"seed {seed}, index {i}, {cfg.size}^3, {st.kind}: background {st.background:.2f}, "
                 f"{st.labels} labels, largest {st.largest:.2f}")
        paths.append(write_montage(s["labels"], s["views"], out_dir / f"sample-{int(i):06d}.png", title))
        if report is not None:
            report(preview_line(int(i), st))
    return paths
