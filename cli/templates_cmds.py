"""`synthvox templates ...`: build, ingest and inspect shape template banks."""
from __future__ import annotations

import json
import os
from pathlib import Path

import click

__all__ = ["templates", "bank_info"]


@click.group("templates")
def templates() -> None:
    """Build, ingest and inspect shape template banks."""


def _workers(w: int | None) -> int:
    return max(1, w if w is not None else (os.cpu_count() or 1))


@templates.command("procedural")
@click.option("--count", type=click.IntRange(min=1), default=2048, show_default=True, help="Number of templates.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed (same seed and count: same bank).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Bank directory to create.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Processes (default: all cores).")
@click.option("--force", is_flag=True, help="Replace an existing bank at --out.")
def procedural_cmd(count: int, seed: int, out: Path, workers: int | None, force: bool) -> None:
    """Write a deterministic bank of procedural shapes (blobs, ellipsoids, shells, tubes, vessel trees, arcs)."""
    from synthvox.engine.templates import make_procedural_bank, open_bank

    path = make_procedural_bank(out, count, seed, workers=_workers(workers), progress=click.echo, overwrite=force)
    bank = open_bank(path)
    click.echo(f"wrote {len(bank)} templates to {path} (content hash {bank.content_hash})")


@templates.command("ingest")
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Bank directory to create.")
@click.option("--spacing", type=float, default=None, help="Resample to this isotropic spacing, mm (default: keep voxels).")
@click.option("--interp", type=click.Choice(["linear", "nearest"]), default="linear", show_default=True,
              help="Resampling: linear then threshold at 0.5, or nearest.")
@click.option("--merge", "merge", multiple=True, metavar="PATTERN=NAME",
              help="Merge structures whose name matches PATTERN (fnmatch) into one, e.g. 'rib_*=ribs'. Repeatable.")
@click.option("--min-voxels", type=click.IntRange(min=1), default=1, show_default=True, help="Drop smaller structures.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Processes (default: all cores).")
@click.option("--no-resume", is_flag=True, help="Redo files finished by an earlier interrupted run.")
@click.option("--force", is_flag=True, help="Replace an existing bank at --out.")
def ingest_cmd(sources: tuple[Path, ...], out: Path, spacing: float | None, interp: str, merge: tuple[str, ...],
               min_voxels: int, workers: int | None, no_resume: bool, force: bool) -> None:
    """Ingest NIfTI label maps: folders of per-structure masks (SUBJECT/segmentations/*.nii.gz)
    and multi-label atlas files (split per label, names from a sidecar NAME.nii.txt).

    Example: synthvox templates ingest /usr/share/mricron/templates/aal.nii.gz --out aal_bank
    """
    from synthvox.engine.templates import ingest

    s = ingest(list(sources), out, spacing=spacing, interp=interp, merge=list(merge), min_voxels=min_voxels,
               workers=_workers(workers), resume=not no_resume, overwrite=force, progress=click.echo)
    click.echo(f"content hash {s['content_hash']}")


def bank_info(path: str | Path) -> dict:
    """A JSON-able summary of a bank: count, hash, size spread, names and sources."""
    import numpy as np

    from synthvox.engine.templates import open_bank

    bank = open_bank(path)
    shapes = bank.shapes.astype(np.int64)
    vox = bank.voxels
    q = [0, 5, 50, 95, 100]
    names: dict[str, int] = {}
    for r in bank.records:
        names[r.name] = names.get(r.name, 0) + 1
    top = sorted(names.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
    return {
        "path": str(bank.path), "count": len(bank), "content_hash": bank.content_hash,
        "data_bytes": int(bank.meta["data_bytes"]), "sources": bank.meta.get("sources", []),
        "created_by": bank.meta.get("created_by", ""),
        "max_side_percentiles": dict(zip(map(str, q), np.percentile(shapes.max(1), q).round(1).tolist())),
        "min_side_percentiles": dict(zip(map(str, q), np.percentile(shapes.min(1), q).round(1).tolist())),
        "voxels_percentiles": dict(zip(map(str, q), np.percentile(vox, q).round(0).tolist())),
        "distinct_names": len(names), "top_names": dict(top),
    }


@templates.command("info")
@click.argument("bank", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info_cmd(bank: Path, as_json: bool) -> None:
    """Summarise a bank: count, content hash, size spread, sources."""
    d = bank_info(bank)
    if as_json:
        click.echo(json.dumps(d, indent=1))
        return
    click.echo(f"bank          {d['path']}")
    click.echo(f"templates     {d['count']}  ({d['data_bytes'] / 2**20:.1f} MiB packed)")
    click.echo(f"content hash  {d['content_hash']}")
    click.echo(f"sources       {', '.join(d['sources']) or '-'}")
    for key, label in (("max_side_percentiles", "largest side"), ("min_side_percentiles", "smallest side"),
                       ("voxels_percentiles", "voxels")):
        p = d[key]
        click.echo(f"{label:<13} min {p['0']:g}  p5 {p['5']:g}  median {p['50']:g}  p95 {p['95']:g}  max {p['100']:g}")
    names = ", ".join(f"{k} ({v})" for k, v in list(d["top_names"].items())[:10])
    click.echo(f"names         {d['distinct_names']} distinct: {names}")
