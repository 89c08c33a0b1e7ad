"""`synthvox pretrain` (one process; the same options as torchrun train/pretrain.py) and `synthvox plot-log`."""
from __future__ import annotations

from typing import Any

import click

from synthvox.train.options import pretrain_options

__all__ = ["pretrain", "plot_log"]


@click.command("pretrain")
@pretrain_options
def pretrain(**kw: Any) -> None:
    """Contrastive pretraining in this process. For several GPUs/processes:
    torchrun --nproc_per_node=G train/pretrain.py (same options), or
    torchrun --nproc_per_node=G -m synthvox.cli.main pretrain (also with --probes)."""
    from synthvox.train.options import run_options

    run_options(kw, log=click.echo, probe_factory=_probe_hook)


def _probe_hook(cfg: Any, kw: dict[str, Any]) -> Any:
    """The representation probes (synthvox.downstream.probes) as the trainer's validation hook."""
    from synthvox.downstream.probes import ProbeConfig, make_probe_hook

    size = int(kw["probe_size"])
    # the probe crop: a multiple of the network's size divisor between half the probe side and the side
    crops = [c for c in range(cfg.divisor, size, cfg.divisor) if c > size / 2]
    if not crops:
        raise click.BadParameter(f"{size}: no crop of a multiple of {cfg.divisor} lies between half of it and it; "
                                 f"pass a larger --probe-size", param_hint="--probe-size")
    pcfg = ProbeConfig(size=size, crop=min(crops, key=lambda c: abs(c - 2 * size / 3)), samples=int(kw["probe_samples"]),
                       registration=bool(kw["probe_real"]), pca=bool(kw["probe_real"]))
    return make_probe_hook(pcfg, {"taps": list(cfg.taps) if cfg.taps else None})


@click.command("plot-log")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), help="PNG path (default RUN/loss.png).")
@click.option("--smooth", type=int, default=10, show_default=True, help="Running-mean window, steps.")
def plot_log(run: str, out: str | None, smooth: int) -> None:
    """Plot the loss curves of RUN (its log.jsonl) as a PNG, with the probe values when the run logged them."""
    from synthvox.train.plot import plot_log as plot

    path = plot(run, out, smooth)
    click.echo(f"wrote {path}")
