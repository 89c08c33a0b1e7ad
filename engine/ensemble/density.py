"""How full a label map is: per-map statistics and the target distributions they are held to.

The contrastive task samples anchor voxels uniformly, so a map that is mostly background
teaches mostly "background against the rest". The reference's maps are dense: its own label
generator, measured side by side on the benchmark template set (30 maps at 128^3), gives background 0.18 (unconstrained) / 0.61 (foreground masked) /
0.55 (enveloped), largest label 0.27 / 0.14 / 0.15 of the volume, 19-26 labels.

`label_stats(labels)` measures one map; `TARGETS` states, per kind, the ranges that the MEAN
over many maps of the default engine (built-in procedural bank) must fall in, at every volume
size (tests/test_density.py checks them at 32^3 and 128^3; benchmarks/bench_density.py
records them):

- background: the reference's value measured side by side +- 0.07 (the issue's target);
- foreground label count: the reference's mean +- 5;
- largest label: 0.67-1.5x the reference's mean;
- label-size spread: the median foreground label's share 0.5-2x the reference's, and the
  effective label count exp(entropy of the foreground label sizes) +- 2.5 of the reference's.

The reference's means (`REFERENCE_MEASURED`) come from its own generator run here on the
benchmark template set at 128^3 (benchmarks/RESULTS.md, "Label density"); the kinds are
counted as maps of that kind, label 0 as background, every other id as a label (in masked
maps its id 1 is the uncovered interior, here the interior label).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

__all__ = ["KINDS", "LabelStats", "KindTarget", "TARGETS", "REFERENCE", "REFERENCE_MEASURED", "label_stats", "ensemble_kind",
           "summarise", "check_targets"]

#: the three kinds of map, by what the foreground mask did
KINDS = ("unconstrained", "foreground_masked", "enveloped")


@dataclass(frozen=True)
class LabelStats:
    """Statistics of one label map (fractions are of the whole volume)."""
    kind: str               # one of KINDS, or "unknown"
    background: float       # share of label 0
    labels: int             # foreground labels present
    largest: float          # share of the largest foreground label
    median_label: float     # share of the median foreground label (0 when none)
    effective_labels: float # exp(entropy of the foreground label sizes): labels "in use" (0 when none)

    def line(self) -> str:
        """One human-readable line (what `synthvox preview` prints)."""
        return (f"{self.kind}: background {self.background:.2f}, {self.labels} labels, largest {self.largest:.3f}, "
                f"median {self.median_label:.4f}, effective {self.effective_labels:.1f}")


@dataclass(frozen=True)
class KindTarget:
    """Ranges (inclusive) that the mean statistics of one kind must fall in."""
    background: tuple[float, float]
    labels: tuple[float, float]
    largest: tuple[float, float]
    median_label: tuple[float, float]
    effective_labels: tuple[float, float]


#: the reference on the benchmark template set at 128^3 as measured side by side (issue #12) (30 maps)
REFERENCE: dict[str, dict[str, float]] = {
    "unconstrained": {"background": 0.18, "largest": 0.27},
    "foreground_masked": {"background": 0.61, "largest": 0.14},
    "enveloped": {"background": 0.55, "largest": 0.15},
}

#: the reference's means per kind, its own generator run here on the benchmark template set at
#: 128^3 (180 maps: 67 / 50 / 63 by kind; benchmarks/RESULTS.md, "Label density")
REFERENCE_MEASURED: dict[str, dict[str, float]] = {
    "unconstrained": {"background": 0.179, "labels": 24.5, "largest": 0.288, "median_label": 0.0069,
                      "effective_labels": 8.0},
    "foreground_masked": {"background": 0.639, "labels": 19.8, "largest": 0.131, "median_label": 0.0034,
                          "effective_labels": 6.9},
    "enveloped": {"background": 0.583, "labels": 21.1, "largest": 0.125, "median_label": 0.0049,
                  "effective_labels": 7.9},
}

_BG_TOL = 0.07


def _target(kind: str) -> "KindTarget":
    ref, m = REFERENCE[kind], REFERENCE_MEASURED[kind]
    return KindTarget(
        background=(round(ref["background"] - _BG_TOL, 3), round(ref["background"] + _BG_TOL, 3)),
        labels=(m["labels"] - 5, m["labels"] + 5),
        largest=(round(m["largest"] / 1.5, 4), round(m["largest"] * 1.5, 4)),
        median_label=(m["median_label"] / 2, m["median_label"] * 2),
        effective_labels=(m["effective_labels"] - 2.5, m["effective_labels"] + 2.5),
    )


#: mean-over-maps targets per kind, for every volume size (see the module docstring)
TARGETS: dict[str, KindTarget] = {k: _target(k) for k in KINDS}


def ensemble_kind(params: Any) -> str:
    """The kind of an ensemble from its drawn parameters (EnsembleParams or its JSON dict)."""
    fg = params.get("foreground") if isinstance(params, Mapping) else params.foreground
    if fg is None:
        return "unconstrained"
    env = fg.get("envelope") if isinstance(fg, Mapping) else fg.envelope
    return "enveloped" if env else "foreground_masked"


def label_stats(labels: torch.Tensor | np.ndarray, kind: str = "unknown") -> LabelStats:
    """Statistics of one (D, H, W) integer label map (0 = background); `kind` is recorded as given."""
    lab = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    if lab.dim() != 3 or lab.dtype.is_floating_point or lab.dtype == torch.bool:
        raise ValueError(f"label_stats needs a (D, H, W) integer label map, got {tuple(lab.shape)} {lab.dtype}")
    n = lab.numel()
    counts = torch.bincount(lab.reshape(-1).long().cpu()).double()
    bg = float(counts[0]) / n if n else 0.0
    fg = counts[1:]
    fg = fg[fg > 0] / n
    if fg.numel() == 0:
        return LabelStats(kind, bg, 0, 0.0, 0.0, 0.0)
    p = fg / fg.sum()
    entropy = float(-(p * p.log()).sum())
    return LabelStats(kind=kind, background=bg, labels=int(fg.numel()), largest=float(fg.max()),
                      median_label=float(fg.median()), effective_labels=math.exp(entropy))


_FIELDS = ("background", "labels", "largest", "median_label", "effective_labels")


def summarise(stats: Sequence[LabelStats]) -> dict[str, dict[str, float]]:
    """Per kind: the count of maps and the mean, p5 and p95 of each statistic."""
    out: dict[str, dict[str, float]] = {}
    for kind in sorted({s.kind for s in stats}, key=lambda k: (KINDS + (k,)).index(k)):
        rows = [s for s in stats if s.kind == kind]
        d: dict[str, float] = {"maps": float(len(rows))}
        for f in _FIELDS:
            v = np.array([getattr(s, f) for s in rows], dtype=np.float64)
            d[f] = float(v.mean())
            d[f + "_p5"] = float(np.percentile(v, 5))
            d[f + "_p95"] = float(np.percentile(v, 95))
        out[kind] = d
    return out


def check_targets(summary: Mapping[str, Mapping[str, float]],
                  targets: Mapping[str, KindTarget] = TARGETS) -> list[str]:
    """The statistics whose per-kind mean falls outside its target range (empty when all pass)."""
    bad = []
    for kind, t in targets.items():
        if kind not in summary:
            bad.append(f"{kind}: no maps of this kind")
            continue
        for f in _FIELDS:
            lo, hi = getattr(t, f)
            v = summary[kind][f]
            if not lo <= v <= hi:
                bad.append(f"{kind}: mean {f} {v:.4g} outside [{lo:g}, {hi:g}]")
    return bad
