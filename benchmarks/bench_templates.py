"""Template bank benchmark: ingest of the 600-mask benchmark set, and open / draw / memory on a
50,000-template bank.

The 50,000-template bank is the ingested benchmark set (`make_template_bank.py --variant tight
--n_masks 600 --seed 0`) replicated: entry i holds the packed bytes of ingested template
i % 600, so it has the size spread (and the ~2.8 GB of packed data) of a TotalSegmentator-sized
bank of organ masks. Open, draw and memory are measured in a fresh child process; the page
cache may be warm (the bank was just written or read), which is the steady state of a worker.
RSS is split into anonymous (private to a worker) and file-backed (the memory map: shared
page cache, reclaimable) memory.

    python -m benchmarks.bench_templates [--work /tmp] [--count 50000] [--draws 1000]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.harness import fmt_table, record

BENCH_SCRIPT = Path(__file__).resolve().parent / "make_template_bank.py"
_HERE = Path(__file__).resolve().parent.parent

_CHILD = r"""
import json, sys, time
import numpy as np
t0 = time.perf_counter()
from synthvox.engine.templates import open_bank
t_import = time.perf_counter() - t0

def rss():
    d = {}
    for line in open("/proc/self/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "RssAnon", "RssFile"):
            d[k] = int(v.split()[0]) / 1024
    return d

r0 = rss()
t0 = time.perf_counter()
bank = open_bank(sys.argv[1])
t_open = time.perf_counter() - t0
r1 = rss()
rng = np.random.default_rng(0)
ids = rng.integers(0, len(bank), int(sys.argv[2]))
times, vox = [], 0
for i in ids:
    t = time.perf_counter()
    m = bank.get(int(i))
    times.append(time.perf_counter() - t)
    vox += m.size
    del m
r2 = rss()
t = np.array(times) * 1e3
print(json.dumps({"count": len(bank), "import_s": t_import, "open_s": t_open, "get_median_ms": float(np.median(t)),
                  "get_p99_ms": float(np.percentile(t, 99)), "get_max_ms": float(t.max()), "mean_voxels": vox / len(ids),
                  "rss_before": r0, "rss_open": r1, "rss_draws": r2}))
"""


def _ensure_bench_set(work: Path) -> Path:
    root = work / "bench_tight"
    if (root / "manifest.csv").is_file():
        return root
    print(f"generating the benchmark template set into {root} (a few minutes)", flush=True)
    tmp = work / "bench_tight.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run([sys.executable, str(BENCH_SCRIPT), "--root", str(tmp), "--variant", "tight", "--n_masks", "600",
                    "--seed", "0"], check=True)
    os.rename(tmp, root)
    return root


def _replicate(src_bank, out: Path, count: int) -> None:
    from synthvox.engine.templates import BankWriter

    n = len(src_bank)
    with BankWriter(out, sources=[str(src_bank.path)], created_by=f"bench_templates: {count} x replicated") as w:
        for i in range(count):
            j = i % n
            off, nb = int(src_bank._offset[j]), int(src_bank._nbytes[j])
            r = src_bank.records[j]
            w.add_packed(bytes(src_bank._data[off:off + nb]), r.shape, voxels=r.voxels, name=r.name,
                         source=f"{r.source}#{i // n}", label=r.label)
        w.commit()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", type=Path, default=Path("/tmp"), help="where the benchmark set and banks live (reused)")
    ap.add_argument("--count", type=int, default=50_000)
    ap.add_argument("--draws", type=int, default=1000)
    args = ap.parse_args(argv)

    from synthvox.engine.templates import ingest, make_procedural_bank, open_bank

    src = _ensure_bench_set(args.work)
    # 1) ingest of the 600-mask set, one process
    out = args.work / "bench_templates_ingest_tmp"
    shutil.rmtree(out, ignore_errors=True)
    c0, t0 = time.process_time(), time.perf_counter()
    s = ingest([src], out, workers=1, resume=False)
    ingest_wall, ingest_cpu = time.perf_counter() - t0, time.process_time() - c0
    ingested = open_bank(out)
    # 2) the 50,000-template bank (reused when present with the right count and source hash)
    big = args.work / f"bench_bank_{args.count}"
    stamp = big / "bench_source_hash"
    if not (stamp.is_file() and stamp.read_text() == ingested.content_hash):
        shutil.rmtree(big, ignore_errors=True)
        t0 = time.perf_counter()
        _replicate(ingested, big, args.count)
        stamp.write_text(ingested.content_hash)
        print(f"wrote {big} in {time.perf_counter() - t0:.1f} s", flush=True)
    child = subprocess.run([sys.executable, "-c", _CHILD, str(big), str(args.draws)], capture_output=True, text=True,
                           check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    m = json.loads(child.stdout.strip().splitlines()[-1])
    # 3) the built-in default bank's first-use build, one core
    dflt = args.work / "bench_templates_default_tmp"
    shutil.rmtree(dflt, ignore_errors=True)
    from synthvox.engine.templates import builtin as bank_mod

    c0, t0 = time.process_time(), time.perf_counter()
    make_procedural_bank(dflt, bank_mod.DEFAULT_COUNT, bank_mod.DEFAULT_SEED, workers=1)
    dflt_wall, dflt_cpu = time.perf_counter() - t0, time.process_time() - c0
    shutil.rmtree(dflt, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)

    big_bytes = sum(p.stat().st_size for p in big.iterdir())
    rows = [
        {"measure": "ingest 600-mask tight set (1 process)", "value": f"{ingest_wall:.1f} s wall, {ingest_cpu:.1f} CPU-s",
         "target": "-"},
        {"measure": f"bank of {m['count']:,} templates on disk", "value": f"{big_bytes / 2**30:.2f} GiB", "target": "-"},
        {"measure": "open_bank (fresh process)", "value": f"{m['open_s'] * 1e3:.1f} ms", "target": "< 1 s"},
        {"measure": f"get(i), {args.draws} random draws: median / p99 / max",
         "value": f"{m['get_median_ms']:.2f} / {m['get_p99_ms']:.2f} / {m['get_max_ms']:.2f} ms", "target": "< 5 ms"},
        {"measure": "mean voxels per drawn template", "value": f"{m['mean_voxels']:,.0f}", "target": "-"},
        {"measure": "RSS after import (anon / file)",
         "value": f"{m['rss_before']['VmRSS']:.0f} MiB ({m['rss_before']['RssAnon']:.0f} / {m['rss_before']['RssFile']:.0f})", "target": "-"},
        {"measure": "RSS after open (anon / file)",
         "value": f"{m['rss_open']['VmRSS']:.0f} MiB ({m['rss_open']['RssAnon']:.0f} / {m['rss_open']['RssFile']:.0f})", "target": "< 500 MB"},
        {"measure": f"RSS after {args.draws} draws (anon / file)",
         "value": f"{m['rss_draws']['VmRSS']:.0f} MiB ({m['rss_draws']['RssAnon']:.0f} / {m['rss_draws']['RssFile']:.0f})", "target": "< 500 MB"},
        {"measure": f"default procedural bank first-use build ({bank_mod.DEFAULT_COUNT} templates, 1 core)",
         "value": f"{dflt_wall:.1f} s wall, {dflt_cpu:.1f} CPU-s", "target": "< 10 s"},
    ]
    body = fmt_table(rows) + (f"\n\nIngested set: {s['templates']} templates, content hash {s['content_hash'][:16]}; "
                              f"the {m['count']:,}-template bank replicates it (entry i = template i % {s['templates']}).")
    record("Template bank: ingest, open, draw, memory", body,
           command="python -m benchmarks.bench_templates " + " ".join(argv or []),
           notes="shared 2-core machine, other engineers' jobs running; page cache warm (steady state of a worker); "
                 "file-backed RSS is the shared memory map")


if __name__ == "__main__":
    main()
