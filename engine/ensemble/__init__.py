"""Random label ensembles from the template bank (engine stage "ensemble").

`sample_ensemble` draws small JSON-able parameters with numpy; `apply_ensemble` renders them
with torch on any device: templates placed with random affines (nearest neighbour, later on
top), 3x3x3 strict-majority smoothing, an optional warped-sphere foreground mask with an
envelope shell, ids compacted to 1..K.

Label count K (foreground ids present = the map's maximum, with compaction), default config,
benchmark template set (600 tight masks), measured here (seeds 0, indices 0..N-1):

    size    draws   K min   p5    median   p95   max
    8^3     200     3       6     14       22    29
    32^3    200     6       13    21       32    37
    128^3   40      14      15    22.5     33    38

20-39 shapes are drawn; occlusion, the foreground mask (p 2/3) and smoothing remove some, and
the envelope (p 1/3) adds one. K never exceeds cfg.max_labels (= shapes[1] + 1 = 40); ids
never wrap (uint8 work buffers up to 255 labels, int16/int32 beyond). Background covers
~55% of a volume when the mask is drawn (median), ~6-15% without it. tests/test_ensemble.py
checks 3 <= K <= 40 at 32^3 (and 8 <= K <= 40 at 128^3, slow tier) with a stand-in bank;
benchmarks/bench_ensemble.py reports the range it sees on the benchmark set.
"""
from .apply import apply_ensemble, compact_ids, label_map
from .config import EnsembleConfig
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
]
