"""`synthvox demo`: the whole flow end to end (what `make demo` runs)."""
from __future__ import annotations

import click

__all__ = ["demo"]


@click.command("demo")
@click.option("--out", default="out/demo", show_default=True, type=click.Path(file_okay=False), help="output folder")
@click.option("--quick", is_flag=True, help="the test-suite miniature: tiny volumes, two steps (checks the flow only)")
def demo(out: str, quick: bool) -> None:
    """Bank -> previews -> Dask store -> CPU pretraining -> features, registration and 1-shot
    segmentation on real brains -> HTML report. Prints per-stage times and what to open first."""
    from .demo import run_demo

    run_demo(out, quick=quick, echo=click.echo)
