"""synthvox.pipelines: Dask-distributed rendering into sharded WebDataset and Zarr v3 stores.

    from synthvox.pipelines import synth_shards, open_store, iter_wds_shard, ZarrReader, verify
    synth_shards("out/store", 10_000, task_size=256, formats=("wds", "zarr"))   # LocalCluster
    st = open_store("out/store"); st.wds_shards(); st.task_ranges()
    for s in iter_wds_shard(st.wds_shards()[0]): ...        # streaming, index order
    ZarrReader("out/store")[1234]                          # random access
    verify("out/store", rerender=4)["ok"]

Modules: `layout` (file names), `atomic` (temp-then-rename writes), `manifest` (manifest,
records, consolidation, compatibility), `wds_io` / `zarr_io` (writers and readers), `task`
(one task: render a range, write its shards), `runner` (the client: LocalCluster or an
existing scheduler, bounded window, retries, resume), `plan` (--dry-run), `verify`, `info`,
`progress`, `faults` (deterministic fault injection for tests, `SYNTHVOX_FAULTS`).

Byte-reproducibility: a finished store (everything but `logs/`) is a pure function of
(engine config, bank content, seed, samples, task size, formats, versions, device type).

SLURM with dask-jobqueue (not a dependency; `pip install dask-jobqueue` on the cluster)::

    # start_cluster.py -- run on the login node, keep it running
    from dask_jobqueue import SLURMCluster
    cluster = SLURMCluster(
        queue="cpu", cores=32, processes=32, memory="128GB", walltime="08:00:00",
        # one single-threaded worker process per core; thread limits before torch is imported
        job_script_prologue=["export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1",
                             "source /path/to/synthvox/.venv/bin/activate"],
        worker_extra_args=["--nthreads", "1"],
        scheduler_options={"port": 8786},
    )
    cluster.adapt(minimum_jobs=1, maximum_jobs=20)   # or cluster.scale(jobs=20)
    print(cluster.scheduler_address); input("press enter to stop\\n")

    # then, from any node that sees the same shared file system:
    synthvox synth-shards --out /shared/store --samples 1000000 --formats wds,zarr \\
        --scheduler tcp://LOGIN_NODE:8786          # or: make synth-shards SAMPLES=1000000 SCHEDULER=...
    synthvox verify /shared/store --rerender 8 --scheduler tcp://LOGIN_NODE:8786

The client checks at start that every worker can write the store and runs the same
synthvox and torch versions. Preempted jobs just lose workers: their tasks are resubmitted;
if the client itself dies, rerun the same command: finished tasks are skipped.
"""
from .info import info
from .plan import plan
from .runner import PipelineError, synth_shards
from .store import Store, open_store
from .verify import verify
from .wds_io import decode_wds_sample, iter_wds_shard
from .zarr_io import ZarrReader

__all__ = [
    "synth_shards", "PipelineError", "open_store", "Store", "iter_wds_shard", "decode_wds_sample",
    "ZarrReader", "verify", "info", "plan",
]
