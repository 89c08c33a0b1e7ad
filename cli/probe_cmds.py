"""`synthvox probe` (representation probes of checkpoints) and `synthvox sweep` (a grid of short trainings)."""
from __future__ import annotations

import click

__all__ = ["probe", "sweep"]


@click.command("probe")
@click.option("--ckpt", "ckpts", multiple=True, default=("bundled",), show_default=True,
              help="PATH | RUN | bundled | random; repeat to probe several checkpoints with one data load.")
@click.option("--out", default="probe", show_default=True, type=click.Path(file_okay=False),
              help="Folder for probe-<name>.json records and pca-<name>.png images.")
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Also probe a random init (fixed seed) of each checkpoint's architecture.")
@click.option("--registration/--no-registration", default=True, show_default=True,
              help="The Colin27 known-warp registration probe (needs mricron-data).")
@click.option("--pca/--no-pca", default=True, show_default=True, help="The PCA image of a real brain's features.")
@click.option("--size", type=int, default=96, show_default=True, help="Side of the synthetic probe samples.")
@click.option("--crop", type=int, default=64, show_default=True, help="Crop side per view (the views overlap by 2*crop-size).")
@click.option("--samples", type=int, default=4, show_default=True, help="Synthetic probe pairs.")
@click.option("--per-label", type=int, default=32, show_default=True, help="Sampled voxels per label per pair.")
@click.option("--reg-spacing", type=float, default=3.0, show_default=True, help="Registration probe resolution, mm.")
@click.option("--threads", type=int, help="torch threads (default: torch's).")
@click.option("--no-verify-weights", is_flag=True, help="Load a checkpoint whose record.json has no weights hash (unchecked).")
def probe(ckpts: tuple[str, ...], out: str, baseline: bool, registration: bool, pca: bool, size: int, crop: int,
          samples: int, per_label: int, reg_spacing: float, threads: int | None, no_verify_weights: bool) -> None:
    """Representation probes of CKPT beside a random init of the same architecture:
    cross-view voxel retrieval on held-out synthetic pairs (per tap), Colin27 known-warp
    registration with network features alone, and the PCA image of a real brain."""
    import torch

    from synthvox.downstream.network import CheckpointLoadError
    from synthvox.downstream.probe_run import probe_checkpoints
    from synthvox.downstream.probes import ProbeConfig

    if threads:
        torch.set_num_threads(threads)
    try:
        cfg = ProbeConfig(size=size, crop=crop, samples=samples, per_label=per_label, registration=registration,
                          pca=pca, reg_spacing=reg_spacing)
        res = probe_checkpoints(list(ckpts), out, cfg, baseline=baseline, echo=click.echo,
                                verify_weights=not no_verify_weights)
    except (CheckpointLoadError, ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"wrote {len(res['records'])} records to {out}")


@click.command("sweep")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Sweep folder: runs/, probes/, table.md/.csv/.json, plot.png.")
@click.option("--scheduler", help="Address of an existing Dask scheduler (default: an embedded LocalCluster).")
@click.option("--cores", type=int, help="Cores the LocalCluster may use (default: all of this machine's).")
@click.option("--dry-run", is_flag=True, help="List the grid's points and exit.")
def sweep(config: str, out: str, scheduler: str | None, cores: int | None, dry_run: bool) -> None:
    """Short trainings over a grid of train.* / engine.* settings (YAML), run as Dask tasks;
    probes on each saved checkpoint; a table of probe values per CPU-minute and a plot."""
    from synthvox.downstream.sweep import SweepError, load_sweep, run_sweep

    try:
        spec = load_sweep(config)
        if dry_run:
            for p in spec.points():
                click.echo(f"{p.name}: {p.overrides}")
            return
        res = run_sweep(spec, out, scheduler=scheduler, cores=cores, echo=click.echo)
    except (SweepError, ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"wrote {res['table_md']} and {res['plot']}")
