"""`synthvox export`: a checkpoint as one TorchScript or ONNX file that runs without synthvox."""
from __future__ import annotations

from pathlib import Path

import click

__all__ = ["export"]


@click.command("export")
@click.option("--ckpt", default="bundled", show_default=True,
              help="Network: a checkpoint dir, a run dir (its latest), 'bundled' or 'random'.")
@click.option("--format", "fmt", type=click.Choice(["torchscript", "onnx"]), default="torchscript", show_default=True,
              help="torchscript: load with torch.jit.load (PyTorch, C++ libtorch). onnx: ONNX Runtime and other "
                   "runtimes; needs the extra: pip install -c constraints.txt 'synthvox[onnx]'.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The file to write (e.g. features.pt, features.onnx).")
@click.option("--clip", nargs=2, type=float, default=None,
              help="Clip window built into the normalisation, e.g. CT: --clip -450 450 (overrides the checkpoint's).")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option("--no-verify-weights", is_flag=True, help="Load a checkpoint whose record.json has no weights hash (unchecked).")
def export(ckpt: str, fmt: str, out: str, clip: tuple[float, float] | None, overwrite: bool, no_verify_weights: bool) -> None:
    """Export a checkpoint as a portable feature model: raw (B, 1, D, H, W) -> features (B, C, D, H, W).

    The checkpoint's input normalisation (min-max per volume, optional clip) and the padding to
    the network's divisor are part of the exported model; its description (checkpoint, sha256,
    normalisation) travels in the file (TorchScript extra file / ONNX metadata 'synthvox').
    """
    from synthvox.downstream.export import export_model
    from synthvox.downstream.network import load_network

    path = Path(out)
    if path.exists() and not overwrite:
        raise click.ClickException(f"{path} exists; pass --overwrite to replace it or choose another --out")
    try:
        model, rec = load_network(ckpt, "cpu", echo=click.echo, verify_weights=not no_verify_weights)
        export_model(model, rec, path, fmt, clip=clip)
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{fmt} model -> {path} ({path.stat().st_size / 2**20:.1f} MiB)")
