"""Commands of the pipelines part: synth-shards, verify, info, convert (thin: parse, call, print)."""
from __future__ import annotations

import json
import sys

import click

__all__ = ["synth_shards", "verify", "info", "convert"]


@click.command("synth-shards")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Store directory (created, resumed or grown).")
@click.option("--samples", required=True, type=click.IntRange(min=1), help="Total samples in the store.")
@click.option("--task-size", type=click.IntRange(min=1), default=None,
              help="Samples per task / tar shard (fixed per store; default: the store's, or for a new one at most 256, "
                   "small enough for about 4 tasks per worker).")
@click.option("--size", type=click.IntRange(min=8), default=None, help="Volume side D = H = W (overrides the config).")
@click.option("--formats", default="wds", show_default=True, help="wds, zarr or wds,zarr.")
@click.option("--content", type=click.Choice(["full", "labels"]), default="full", show_default=True,
              help="full: labels and views; labels: label maps and meta only (~40x smaller at 128^3), views rendered on load.")
@click.option("--config", "config", type=click.Path(dir_okay=False), default=None, help="YAML config (its engine: section).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Global seed.")
@click.option("--bank", default=None, help="Template bank directory (default: the built-in procedural bank).")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="LocalCluster worker processes (default: one per core; 0: in-process, no Dask).")
@click.option("--scheduler", default=None, help="Address of an existing Dask scheduler (tcp://host:8786).")
@click.option("--max-failures", type=click.IntRange(min=0), default=0, show_default=True, help="Failed tasks tolerated before the run stops.")
@click.option("--task-timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds a task may run on a Dask worker before it is resubmitted to another one (a hung or "
                   "stopped worker); default: 10x the median task time of the run, at least 60 s.")
@click.option("--dashboard-address", default=":8787", show_default=True,
              help="Where the embedded LocalCluster's Dask dashboard listens (host:port; a free port if taken; "
                   "'none' for no dashboard). With --scheduler, the cluster's own dashboard is printed.")
@click.option("--reverify", is_flag=True, help="On resume, check the sha256 of finished shards, not only their sizes.")
@click.option("--dry-run", is_flag=True, help="Print the plan (tasks, bytes, disk, CPU-hours) and exit.")
@click.option("--quiet", is_flag=True, help="No progress output.")
def synth_shards(out, samples, task_size, size, formats, content, config, seed, bank, workers, scheduler, max_failures,
                 task_timeout, dashboard_address, reverify, dry_run, quiet) -> None:
    """Render samples into a sharded WebDataset / Zarr v3 store; rerun the same command to resume."""
    from synthvox.engine.config import load_engine_config
    from synthvox.pipelines.runner import parse_formats, synth_shards as run

    cfg = load_engine_config(config, size=size, bank=bank)
    fmts = parse_formats(formats)
    if dry_run:
        from synthvox.pipelines.plan import format_plan, plan

        click.echo(format_plan(plan(out, samples, task_size, cfg, fmts, seed=seed, workers=workers, content=content)))
        return
    summary = run(out, samples, task_size=task_size, cfg=cfg, seed=seed, formats=fmts, workers=workers,
                  scheduler=scheduler, max_failures=max_failures, reverify=reverify, progress=not quiet,
                  content=content, task_timeout=task_timeout,
                  dashboard_address=None if dashboard_address.lower() == "none" else dashboard_address)
    click.echo(f"done: {summary['tasks_done']}/{summary['tasks']} tasks ({summary['tasks_skipped']} already there, "
               f"{summary['tasks_rendered']} rendered) in {summary['seconds']:.1f} s, "
               f"{summary['samples_per_s']:.2f} samples/s -> {summary['store']}")


@click.command("verify")
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--quick", is_flag=True, help="Sizes only (no checksums) and a few random samples decoded.")
@click.option("--rerender", type=click.IntRange(min=0), default=0, show_default=True, help="Re-render K random samples and compare.")
@click.option("--scheduler", default=None, help="Run the per-shard checks on this Dask scheduler.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify(store, quick, rerender, scheduler, as_json) -> None:
    """Check a store: counts, sizes, checksums, decoding, re-rendering; exits 1 naming bad shards."""
    from synthvox.pipelines.verify import format_report, verify as run

    report = run(store, quick=quick, rerender=rerender, scheduler=scheduler)
    click.echo(json.dumps(report, indent=1) if as_json else format_report(report))
    if not report["ok"]:
        sys.exit(1)


@click.command("info")
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(store, as_json) -> None:
    """Summarise a store: samples, tasks, bytes per sample per format, config hash, device type."""
    from synthvox.pipelines.info import format_info, info as run

    d = run(store)
    click.echo(json.dumps(d, indent=1) if as_json else format_info(d))


@click.command("convert")
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--content", type=click.Choice(["full", "labels"]), required=True,
              help="Content of the copy: full (paint the views from labels and meta) or labels (drop the views).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="The new store (created or resumed).")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="LocalCluster worker processes (default: one per core; 0: in-process, no Dask).")
@click.option("--scheduler", default=None, help="Address of an existing Dask scheduler (tcp://host:8786).")
@click.option("--quiet", is_flag=True, help="No progress output.")
def convert(store, content, out, workers, scheduler, quiet) -> None:
    """Copy STORE with the other content: labels -> full renders views, full -> labels drops them."""
    from synthvox.pipelines.convert import convert as run

    summary = run(store, out, content, workers=workers, scheduler=scheduler, progress=not quiet)
    click.echo(f"done: {summary['tasks_done']}/{summary['tasks']} tasks ({summary['tasks_skipped']} already there, "
               f"{summary['tasks_rendered']} converted) in {summary['seconds']:.1f} s -> {summary['store']} "
               f"(content {content})")
