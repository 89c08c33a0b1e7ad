"""Random label ensembles from the template bank (engine stage "ensemble").

`sample_ensemble` draws small JSON-able parameters with numpy; `apply_ensemble` renders them
with torch on any device: templates placed with random affines (nearest neighbour, later on
top; magnified by 1/scale per axis as the reference's output->template affine does), 3x3x3
strict-majority smoothing, an optional warped-sphere foreground mask whose uncovered interior
gets a label of its own, with an envelope band across its edge, ids compacted to 1..K.

Density (engine/ensemble/density.py holds the targets, tests/test_density.py checks them,
benchmarks/bench_density.py records them): with the built-in procedural bank, mean over 40
maps per kind, the same at 32^3, 64^3 and 128^3 within 0.005, background 0.19 / 0.64 / 0.60
of the volume for unconstrained / foreground-masked / enveloped maps (the reference's own
generator on the benchmark template set: 0.18 / 0.64 / 0.58), largest label 0.28 / 0.15 /
0.14 (0.29 / 0.13 / 0.13), 24-25 / 18-20 / 19-20 labels (25 / 20 / 21).

Label count K (foreground ids present = the map's maximum, with compaction): 20-39 shapes
are drawn; occlusion, the foreground mask (p 2/3) and smoothing remove some, the interior
label and the envelope (p 1/3) add one each. K never exceeds cfg.max_labels (= shapes[1] + 2
= 41); ids never wrap (uint8 work buffers up to 255 labels, int16/int32 beyond).
tests/test_ensemble.py checks 3 <= K <= max_labels at 32^3 (and 8 <= K at 128^3, slow tier)
with a stand-in bank.
"""
from .apply import apply_ensemble, compact_ids, label_map
from .config import EnsembleConfig
from .density import TARGETS, LabelStats, ensemble_kind, label_stats
from .params import EnsembleParams, ForegroundParams, ShapeParams, sample_ensemble
from .smooth import majority3

__all__ = [
    "EnsembleConfig",
    "EnsembleParams",
    "ShapeParams",
    "ForegroundParams",
    "sample_ensemble",
    "apply_ensemble",
    "compact_ids",
    "label_map",
    "majority3",
    "LabelStats",
    "label_stats",
    "ensemble_kind",
    "TARGETS",
]
