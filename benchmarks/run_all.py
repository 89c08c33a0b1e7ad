"""`make bench`: run every benchmark module listed here (an explicit list, no scanning)."""
from __future__ import annotations

import importlib
import sys
import time

#: module names under benchmarks/, in order; each has main(argv=None)
BENCHMARKS: list[str] = [
    "bench_templates",
    "bench_ensemble",
    "bench_engine",
    "bench_density",
    "bench_pipelines",
    "bench_labels_store",
    "bench_train",
    "bench_registration",
    "bench_peer_registration",
    "bench_bundled",
    "bench_fewshot",
]


def main(argv: list[str] | None = None) -> int:
    only = set(argv if argv is not None else sys.argv[1:])
    failed = []
    for name in BENCHMARKS:
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            importlib.import_module(f"benchmarks.{name}").main([])
        except Exception as e:  # keep going; report at the end
            failed.append(f"{name}: {type(e).__name__}: {e}")
        print(f"== {name} done in {time.perf_counter() - t0:.0f}s", flush=True)
    for f in failed:
        print("FAILED", f, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
