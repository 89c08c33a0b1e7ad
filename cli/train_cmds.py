"""`synthvox pretrain` (one process; torchrun train/pretrain.py for DDP) and `synthvox plot-log`."""
from __future__ import annotations

import argparse
import json

import click

__all__ = ["pretrain", "plot_log"]


@click.command("pretrain")
@click.option("--store", type=click.Path(file_okay=False), help="Store directory (synthvox synth-shards).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory: checkpoints/, log.jsonl, config.json.")
@click.option("--config", type=click.Path(dir_okay=False), help="YAML config (train: and engine: sections); flags override it.")
@click.option("--steps", type=int, help="Optimizer steps.")
@click.option("--crop", type=int, help="Random cubic crop side (a multiple of 2**depth).")
@click.option("--batch-size", type=int, help="Samples (each with all its views) per step.")
@click.option("--lr", type=float)
@click.option("--workers", type=int, help="DataLoader workers (store source).")
@click.option("--seed", type=int)
@click.option("--source", type=click.Choice(["store", "engine"]), help="Stream a store or render on the fly.")
@click.option("--format", "format_", type=click.Choice(["auto", "wds", "zarr"]), help="Store format to read.")
@click.option("--val-samples", type=int, help="Held-out samples (the store's last indices).")
@click.option("--val-every", type=int)
@click.option("--ckpt-every", type=int)
@click.option("--n-voxels", type=int, help="Sampled voxels per view per tap.")
@click.option("--widths", help="UNet widths, comma-separated (default 16,32,64,128,256).")
@click.option("--no-augment", is_flag=True)
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model.")
@click.option("--tensorboard", is_flag=True, help="Also log to RUN/tb (if tensorboard is installed).")
@click.option("--resume", is_flag=True, help="Continue from RUN's latest checkpoint, exactly.")
@click.option("--elastic", is_flag=True, help="Allow resuming with another world size or worker count.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]))
@click.option("--size", type=int, help="Engine source: volume side.")
@click.option("--stop-after", type=int, help="Stop with a checkpoint after this many steps (schedule keeps --steps).")
def pretrain(**kw) -> None:
    """Contrastive pretraining in this process. For several GPUs/processes:
    torchrun --nproc_per_node=G train/pretrain.py (same options)."""
    from synthvox.train.pretrain import config_from_args
    from synthvox.train.pretrain import pretrain as run

    ns = argparse.Namespace(**{("format" if k == "format_" else "compile" if k == "compile_" else k): v for k, v in kw.items()})
    cfg, ecfg = config_from_args(ns)
    summary = run(ns.out, cfg, ns.store, resume=ns.resume, elastic=ns.elastic, device=ns.device, engine_cfg=ecfg,
                  stop_after=ns.stop_after, log=click.echo)
    click.echo(json.dumps(summary))


@click.command("plot-log")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), help="PNG path (default RUN/loss.png).")
@click.option("--smooth", type=int, default=10, show_default=True, help="Running-mean window, steps.")
def plot_log(run: str, out: str | None, smooth: int) -> None:
    """Plot the loss curves of RUN (its log.jsonl) as a PNG."""
    from synthvox.train.plot import plot_log as plot

    path = plot(run, out, smooth)
    click.echo(f"wrote {path}")
