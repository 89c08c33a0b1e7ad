"""`synthvox fewshot`, `synthvox report` and `synthvox eval`: thin wrappers over downstream/."""
from __future__ import annotations

import click

__all__ = ["fewshot", "report", "eval_cmd"]


def _int_list(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        out = [int(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers, e.g. 1,3") from None
    if not out or any(v < 1 for v in out):
        raise click.BadParameter(f"{value!r}: give positive integers, e.g. 1,3")
    return out


@click.command("fewshot")
@click.option("--ckpt", "ckpts", multiple=True, required=True,
              help="Checkpoint dir | run dir | bundled | random; repeat for a grid (e.g. --ckpt RUN --ckpt random).")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False), help="nnU-Net v2 raw dataset folder.")
@click.option("--shots", default="1,3", show_default=True, callback=_int_list, help="Labelled volumes per run, comma-separated.")
@click.option("--seeds", default=3, show_default=True, type=click.IntRange(min=1), help="Seeds 0..N-1 per shot count.")
@click.option("--protocol", type=click.Choice(["cpu", "reference"]), default="cpu", show_default=True,
              help="cpu: 2 mm, 64^3 crops, batch 2, 300 steps; reference: 128^3, batch 4, 37,500 steps (GPU).")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Override the protocol's step count.")
@click.option("--device", default=None, help="torch device (default: cuda when available, else cpu).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder (splits, records, overlays).")
@click.option("--overwrite", is_flag=True, help="Re-run runs whose records already exist.")
@click.option("--no-verify-weights", is_flag=True, help="Load a checkpoint whose record.json has no weights hash (unchecked).")
def fewshot(ckpts: tuple[str, ...], data: str, shots: list[int], seeds: int, protocol: str, steps: int | None,
            device: str | None, out: str, overwrite: bool, no_verify_weights: bool) -> None:
    """Few-shot segmentation: fine-tune with a 1x1x1 head on k labelled volumes, score the test volumes."""
    from synthvox.downstream.fewshot import run_fewshot
    from synthvox.train.checkpoint import open_checkpoint

    inits = [open_checkpoint(c, verify_weights=not no_verify_weights) for c in ckpts]
    for ck in inits:
        click.echo(ck.describe())
    recs = run_fewshot(data, inits, shots, seeds, out, protocol=protocol, steps=steps, device=device,
                       overwrite=overwrite, log=click.echo)
    click.echo(f"{len(recs)} records under {out}/records; splits in {out}/splits.json")


@click.command("report")
@click.argument("records", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder for report.md / report.html.")
@click.option("--title", default="synthvox evaluation report", show_default=True)
@click.option("--label-names", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Names for labels the records leave as numbers: an atlas sidecar (mricron's aal.nii.txt "
                   "'id name' lines, a BIDS dseg.tsv, or JSON {id: name}).")
def report(records: tuple[str, ...], out: str, title: str, label_names: str | None) -> None:
    """Markdown and self-contained HTML report from results records (files or folders)."""
    from synthvox.downstream.labelnames import read_label_names
    from synthvox.downstream.report import build_report
    from synthvox.downstream.results import read_records

    recs = read_records(records)
    names = read_label_names(label_names) if label_names else None
    paths = build_report(recs, out, title=title, label_names=names)
    click.echo(f"{len(recs)} records -> {paths['markdown']} and {paths['html']}")


@click.command("eval")
@click.option("--ckpt", default="bundled", show_default=True, help="Checkpoint dir | run dir | bundled | random.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder (datasets, records, report).")
@click.option("--quick", is_flag=True, help="A few steps and seeds: checks the flow, the numbers mean little.")
@click.option("--device", default=None, help="torch device (default: cuda when available, else cpu).")
@click.option("--no-verify-weights", is_flag=True, help="Load a checkpoint whose record.json has no weights hash (unchecked).")
def eval_cmd(ckpt: str, out: str, quick: bool, device: str | None, no_verify_weights: bool) -> None:
    """The real-data evaluation (Colin27, MNI152, held-out synthetic tasks) of a checkpoint plus baselines."""
    from synthvox.downstream.evaluate import run_eval
    from synthvox.train.checkpoint import open_checkpoint

    ck = open_checkpoint(ckpt, verify_weights=not no_verify_weights)
    click.echo(ck.describe())
    paths = run_eval(ck, out, quick=quick, device=device, log=click.echo)
    click.echo(f"report: {paths['html']}")
