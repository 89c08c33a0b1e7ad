"""synthvox.pipelines: Dask-distributed rendering into sharded WebDataset and Zarr v3 stores.

    from synthvox.pipelines import synth_shards, open_store, iter_wds_shard, ZarrReader, verify, convert
    synth_shards("out/store", 10_000, task_size=256, formats=("wds", "zarr"))   # LocalCluster
    st = open_store("out/store"); st.wds_shards(); st.task_ranges()
    for s in iter_wds_shard(st.wds_shards()[0]): ...        # streaming, index order
    ZarrReader("out/store")[1234]                          # random access
    verify("out/store", rerender=4)["ok"]
    synth_shards("out/labels", 10_000, content="labels")   # label maps + meta only, ~40x smaller at 128^3
    convert("out/labels", "out/full", "full")              # paint the views (or "labels": drop them)

Store format (docs/ARCHITECTURE.md, "Store"; file names in `layout`)::

    manifest.json                  schema/store version, content (full|labels), engine config
                                   and hash, bank hash, seed, samples, task size, Zarr shard,
                                   formats, label dtype, shapes, codecs, versions, totals
    records/                       one record per task (range, files, bytes, sha256, device type),
                                   folded into block files of 1024 tasks
    wds/shard-NNNNNN.tar           one tar per task: {i:010d}.labels.npy.zst,
                                   {i:010d}.views.npy.zst (full content only), {i:010d}.meta.json
    zarr/labels, zarr/views        Zarr v3 arrays (N,D,H,W) and (N,V,D,H,W); no views in a labels store
    zarr-meta/task-NNNNNN.jsonl    each sample's meta, for the Zarr format
    logs/                          run logs (hosts, times): not part of the reproducible store

Content. `full` stores hold every sample's views. `labels` stores (`content="labels"`,
`--content labels`) hold the label maps and each sample's meta, which records every view's
appearance parameters and noise seeds; their tasks draw those parameters without painting
(about twice as fast) and the readers (`iter_wds_shard`, `ZarrReader`, `views_from_meta`, the
trainer's StoreSource) paint the views on load with the engine's own `render_views_from_meta`:
equal byte for byte to a full store's views on the same device type, within one quantisation
step in a few voxels on another (labels always equal). A labels store is byte for byte the full
store of the same run without its views members/array (see `convert`).

Modules: `layout` (file names), `manifest` (the typed `Manifest`, validated on read, and the
compatibility check), `records` (per-task records, their consolidation), `errors` (the store's
errors), `store` (what the records vouch for), `wds_io` / `zarr_io` (writers and readers),
`labels` (labels content: the one stage that paints views from meta), `task` (one task, its
`TaskSpec`: render a range, write its shards), `skeleton` (the store's manifest, directories and
Zarr metadata, written atomically or repaired), `cluster` (LocalCluster or an existing
scheduler, the dashboard), `worker_check`, `run` (bounded window, retries, task deadlines,
progress within tasks), `runner` (`synth_shards`), `convert` (full <-> labels through the
runner), `plan` (--dry-run), `verify`, `info`, `progress`, `faults` (deterministic fault
injection for tests, `SYNTHVOX_FAULTS`). Every file is written through `synthvox.core.atomic`
(private temporary, fsync, rename).

Integrity on the read side: readers use only tasks whose record exists and whose files have
their recorded sizes; a missing or damaged shard, a meta failing its checksum or a truncated
tar raises `DamagedShard` naming the file and the fix, never fill values or fewer samples;
an incomplete store is refused (`IncompleteStore`) unless the caller allows it.

Byte-reproducibility: a finished store (everything but `logs/`) is a pure function of
(engine config, bank content, seed, samples, task size, formats, content, versions, device type).

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
from .convert import convert
from .info import info
from .plan import plan
from .errors import DamagedShard, IncompleteStore, ManifestError, PipelineError, StoreError, StoreMismatch
from .manifest import Manifest, read_manifest
from .runner import synth_shards
from .store import Store, open_store
from .verify import verify
from .wds_io import decode_wds_sample, iter_wds_shard
from .labels import paint_batch, painted, views_from_meta
from .task import TaskSpec
from .zarr_io import ZarrReader

__all__ = [
    "synth_shards", "PipelineError", "open_store", "Store", "iter_wds_shard", "decode_wds_sample",
    "ZarrReader", "verify", "info", "plan", "convert", "views_from_meta", "painted", "paint_batch", "Manifest",
    "read_manifest", "TaskSpec", "StoreError", "ManifestError", "StoreMismatch", "IncompleteStore", "DamagedShard",
]
