"""`synthvox render` and `synthvox preview`: render samples of the data engine to files."""
from __future__ import annotations

from pathlib import Path

import click

__all__ = ["render", "preview"]


def _engine_config(config: Path | None, size: int | None, bank: str | None, device: str):
    import torch

    from synthvox.engine.config import load_engine_config

    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise click.ClickException(f"--device {device!r} is not a torch device: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise click.ClickException(f"--device {device}: CUDA is not available on this machine; use --device cpu")

    return load_engine_config(config, size=size, bank=bank)


def _options(f):
    f = click.option("--device", default="cpu", show_default=True, help="Torch device to render on (cpu, cuda, cuda:1).")(f)
    f = click.option("--bank", type=str, default=None,
                     help="Template bank directory (default: the config's, else the built-in procedural bank).")(f)
    f = click.option("--config", "config", type=click.Path(path_type=Path), default=None,
                     help="YAML config; its engine: section is used.")(f)
    f = click.option("--size", type=click.IntRange(min=8), default=None,
                     help="Volume side D (D^3 voxels); default: the config's (128).")(f)
    return f


@click.command("render")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Run seed.")
@click.option("--index", type=click.IntRange(min=0), default=0, show_default=True, help="Sample index within the run.")
@_options
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output .npz (labels, views, index, meta).")
def render(seed: int, index: int, size: int | None, config: Path | None, bank: str | None, device: str, out: Path) -> None:
    """Render one sample (labels and views) to an .npz file, atomically."""
    from synthvox.engine.preview import render_npz

    cfg = _engine_config(config, size, bank, device)
    path = render_npz(cfg, seed, index, out, device=device)
    click.echo(f"wrote {path} (seed {seed}, index {index}, {cfg.size}^3, {cfg.views} views)")


@click.command("preview")
@click.option("--n", "n", type=click.IntRange(min=1), default=4, show_default=True, help="Number of samples (indices 0..n-1).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Run seed.")
@_options
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Directory for the PNG montages.")
def preview(n: int, seed: int, size: int | None, config: Path | None, bank: str | None, device: str, out: Path) -> None:
    """Write PNG montages (labels in colour and every view, three mid-slices) of a few samples;
    print each one's label statistics (kind, background share, label count, largest label)."""

    from synthvox.engine.preview import write_previews

    cfg = _engine_config(config, size, bank, device)
    paths = write_previews(cfg, seed, n, out, device=device, report=click.echo)
    click.echo(f"wrote {len(paths)} montages to {out}")
