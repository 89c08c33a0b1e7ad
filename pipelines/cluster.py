"""The Dask cluster of a run: the embedded LocalCluster or an existing scheduler, its dashboard.

    with cluster_client(workers=4, scheduler=None, dashboard_address=":8787") as client: ...

`connect` opens the client first, before anything is written to a store, so an unreachable
`--scheduler` fails with a message and leaves no store skeleton behind. The dashboard address
is printed at start (distributed serves the dashboard with bokeh, a dependency).
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Any, Iterator

import torch

from .errors import PipelineError

__all__ = ["local_cluster", "cluster_client", "worker_threads", "worker_addresses", "dashboard_url",
           "DEFAULT_DASHBOARD", "CONNECT_TIMEOUT"]

#: the LocalCluster's dashboard address when none is given (a random port if it is taken)
DEFAULT_DASHBOARD = ":8787"
#: how long the client tries to reach a --scheduler before it gives up
CONNECT_TIMEOUT = "30s"


def local_cluster(workers: int | None, dashboard_address: str | None = DEFAULT_DASHBOARD) -> Any:
    """The embedded LocalCluster: one single-threaded worker process per core (or `workers`).

    Thread limits go into the worker environment before torch is imported; a lost worker
    fails its task at once (allowed-failures 0) so the client resubmits it with a new attempt.
    `dashboard_address` (":8787", "localhost:0", ...; None: no dashboard) is where its
    dashboard listens.
    """
    import dask  # lazily: ~1 s of startup, for cluster runs only
    from distributed import Client, LocalCluster

    n = workers or os.cpu_count() or 1
    env = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               dashboard_address=dashboard_address, silence_logs=logging.ERROR, env=env)
    with Client(cluster) as c:
        c.register_plugin(_thread_limit_plugin())
    return cluster


def _thread_limit_plugin() -> Any:
    from distributed.diagnostics.plugin import WorkerPlugin  # lazily: ~1 s of startup, for cluster runs only

    class ThreadLimit(WorkerPlugin):
        """One torch thread per single-threaded worker process."""

        name = "synthvox-thread-limit"

        def setup(self, worker: Any) -> None:
            torch.set_num_threads(1)

    return ThreadLimit()


@contextmanager
def cluster_client(workers: int | None, scheduler: str | None,
                   dashboard_address: str | None = DEFAULT_DASHBOARD) -> Iterator[Any]:
    """A distributed.Client on an existing `scheduler`, or on a LocalCluster owned by the block.

    An unreachable scheduler raises PipelineError naming the address and the fix.
    """
    from distributed import Client  # lazily: ~1 s of startup, for cluster runs only

    if scheduler:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as e:
            raise PipelineError(f"cannot reach the Dask scheduler at {scheduler} ({type(e).__name__}: {e}); start it "
                                "(see `synthvox.pipelines`' SLURM recipe), check the address, or leave out --scheduler "
                                "to run on this machine") from None
        with client:
            yield client
        return
    with local_cluster(workers, dashboard_address) as cluster, Client(cluster) as client:
        yield client


def worker_threads(client: Any) -> int:
    """Threads over all workers the scheduler knows now (at least 1)."""
    return max(1, sum(w.get("nthreads", 1) for w in client.scheduler_info(n_workers=-1)["workers"].values()))


def worker_addresses(client: Any) -> list[str]:
    return sorted(client.scheduler_info(n_workers=-1)["workers"])


def dashboard_url(client: Any) -> str | None:
    """The address of the cluster's dashboard, as distributed reports it (None when unknown)."""
    try:
        return str(client.dashboard_link)
    except (KeyError, AttributeError):
        return None
