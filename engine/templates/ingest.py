"""Ingest real label maps (NIfTI) into a template bank.

Sources (each SRC argument):
- a directory: per-structure binary masks. Every `segmentations/` folder below it is one subject
  (TotalSegmentator layout `SUBJECT/segmentations/NAME.nii.gz`); without any, the directory's
  own `*.nii[.gz]` files are one subject's masks. The structure name is the file name.
- a NIfTI file: a multi-label atlas; each integer value > 0 is one structure (label value kept
  as int32 in the index), named from a sidecar `NAME.nii.txt` / `NAME.txt` (lines
  "VALUE NAME ...", as mricron's `aal.nii.txt`) when present, else `STEM_label<VALUE>`.

Each structure is cropped to its bounding box, optionally resampled to an isotropic spacing
(voxel axes kept as stored: templates are rotated and flipped at random later anyway), dropped
(and reported) when empty or below `min_voxels`. `merge` maps name patterns (fnmatch) to one
merged structure per subject or atlas, e.g. {"rib_*": "ribs"}. A trailing singleton 4th axis
is accepted; true 4D files and non-integral values are refused with the file named.

Work is parallel over files (a process pool) and resumable: each file's (or merge group's)
result is kept in `.OUT.ingest-work/` beside the bank, keyed by its path, size, mtime and the
options, so a rerun after a failure skips finished files; the work dir is removed once the
bank is committed.
"""
from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from synthvox.core.atomic import write_bytes

from .bank import FORMAT_VERSION, BankError, open_bank
from .labelfiles import IngestError, is_nifti, load_label_volume, nifti_stem, read_label_names
from .writer import BankWriter, crop_to_bbox, pack_mask

__all__ = ["ingest", "IngestError", "read_label_names", "load_label_volume", "parse_merge"]

_WORK_VERSION = 1


@dataclass(frozen=True)
class _Unit:
    """One piece of work: an atlas file, or one structure (or merge group) of one subject."""

    kind: str                     # "atlas" or "masks"
    files: tuple[str, ...]        # absolute paths
    rels: tuple[str, ...]         # paths relative to the source's parent (what the index records)
    name: str                     # structure name ("" for atlases)


def parse_merge(merge: Mapping[str, str] | Sequence[str] | Sequence[tuple[str, str]] | None) -> list[tuple[str, str]]:
    """Merge rules as (pattern, merged name) pairs from a dict, ("PATTERN=NAME", ...) or pairs."""
    if merge is None:
        return []
    items = merge.items() if isinstance(merge, Mapping) else merge
    out = []
    for item in items:
        if isinstance(item, str):
            if "=" not in item:
                raise IngestError(f"merge rule {item!r} must look like PATTERN=NAME, e.g. 'rib_*=ribs'")
            item = tuple(item.split("=", 1))
        pat, name = item  # type: ignore[misc]
        if not pat or not name:
            raise IngestError(f"merge rule {pat!r}={name!r}: pattern and name must be non-empty")
        out.append((str(pat), str(name)))
    return out


def _merged_name(name: str, rules: list[tuple[str, str]]) -> str | None:
    for pat, merged in rules:
        if fnmatch.fnmatchcase(name, pat):
            return merged
    return None


def _discover(sources: Sequence[str | Path], rules: list[tuple[str, str]]) -> list[_Unit]:
    units: list[_Unit] = []
    for src in sources:
        src = Path(src).expanduser()
        if not src.exists():
            raise IngestError(f"source {src} does not exist")
        base = src.resolve().parent
        if src.is_file():
            if not is_nifti(src):
                raise IngestError(f"source {src} is not a NIfTI file (.nii or .nii.gz)")
            units.append(_Unit("atlas", (str(src.resolve()),), (str(src.resolve().relative_to(base)),), ""))
            continue
        subjects = sorted(p for p in src.resolve().rglob("segmentations") if p.is_dir()) or [src.resolve()]
        n_before = len(units)
        for subj in subjects:
            groups: dict[str, list[Path]] = {}
            for f in sorted(p for p in subj.iterdir() if p.is_file() and is_nifti(p)):
                stem = nifti_stem(f)
                key = _merged_name(stem, rules) or stem
                groups.setdefault(key, []).append(f)
            for name, files in groups.items():
                units.append(_Unit("masks", tuple(str(f) for f in files),
                                   tuple(str(f.relative_to(base)) for f in files), name))
        if len(units) == n_before:
            raise IngestError(f"source folder {src} holds no NIfTI masks (expected SUBJECT/segmentations/*.nii.gz "
                              f"or *.nii.gz files in it)")
    return units


def _resample(mask: np.ndarray, zooms: tuple[float, float, float], spacing: float | None, interp: str) -> np.ndarray:
    """Resample a cropped 0/1 mask from `zooms` mm to isotropic `spacing` mm."""
    if spacing is None:
        return mask
    from scipy import ndimage as ndi  # lazily: ~18 MB in every worker, for this step only

    factors = [z / spacing for z in zooms]
    if all(abs(f - 1) < 1e-6 for f in factors):
        return mask
    if interp == "nearest":
        return ndi.zoom(mask, factors, order=0, mode="grid-constant", grid_mode=True)
    return (ndi.zoom(mask.astype(np.float32), factors, order=1, mode="grid-constant", grid_mode=True) >= 0.5).astype(np.uint8)


def _finish(mask: np.ndarray, zooms, opts: dict[str, Any], name: str, label: int, source: str,
            out: list[dict[str, Any]], dropped: list[dict[str, Any]]) -> None:
    """Resample, crop and filter one structure, appending to `out` or `dropped`."""
    m = _resample(mask, zooms, opts["spacing"], opts["interp"])
    if not m.any():
        dropped.append({"source": source, "name": name, "label": label,
                        "reason": "empty" if not mask.any() else f"empty after resampling to {opts['spacing']} mm"})
        return
    m = crop_to_bbox(m)
    vox = int(np.count_nonzero(m))
    if vox < opts["min_voxels"]:
        dropped.append({"source": source, "name": name, "label": label, "reason": f"{vox} voxels < min_voxels {opts['min_voxels']}"})
        return
    out.append({"name": name, "label": int(label), "source": source, "shape": m.shape, "voxels": vox, "packed": pack_mask(m)})


def _bbox_slices(a: np.ndarray) -> tuple[slice, ...] | None:
    sl = []
    for ax in range(3):
        other = tuple(x for x in range(3) if x != ax)
        nz = np.flatnonzero(a.any(axis=other))
        if nz.size == 0:
            return None
        sl.append(slice(int(nz[0]), int(nz[-1]) + 1))
    return tuple(sl)


def _process_masks(unit: _Unit, opts: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    out: list[dict] = []
    dropped: list[dict] = []
    union = None
    zooms0 = None
    affine0 = None
    for f, rel in zip(unit.files, unit.rels):
        data, zooms, affine = load_label_volume(f)
        values = np.unique(data)
        nonzero = values[values != 0]
        if nonzero.size > 1:
            raise IngestError(f"{f}: a structure mask holds {nonzero.size} different labels ({nonzero[:5].tolist()}...); "
                              f"pass a multi-label file as a FILE source to split it per label")
        m = data != 0
        if union is None:
            union, zooms0, affine0 = m, zooms, affine
        elif m.shape != union.shape or not np.allclose(affine, affine0, atol=1e-4):
            raise IngestError(f"{f}: grid (shape {m.shape}, affine) differs from {unit.files[0]} (shape {union.shape}); "
                              f"cannot merge them into {unit.name!r}: merge only masks of one subject")
        else:
            union |= m
    assert union is not None
    source = unit.rels[0] if len(unit.rels) == 1 else f"{Path(unit.rels[0]).parent}/[{len(unit.rels)} merged]"
    sl = _bbox_slices(union)
    crop = union[sl].astype(np.uint8) if sl is not None else np.zeros((1, 1, 1), np.uint8)
    _finish(crop, zooms0, opts, unit.name, 1, source, out, dropped)
    return out, dropped


def _neighbour_change(data: np.ndarray) -> float:
    """Fraction of adjacent foreground voxel pairs (along the first axis) whose values differ:
    ~0.02-0.18 for the atlases of mricron-data, > 0.75 for its intensity images."""
    a, b = data[:-1], data[1:]
    both = (a != 0) & (b != 0)
    n = int(both.sum())
    return float(((a != b) & both).sum()) / n if n else 0.0


def _process_atlas(unit: _Unit, opts: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    from scipy import ndimage as ndi  # lazily: ~18 MB in every worker, for this step only

    path = Path(unit.files[0])
    rel = unit.rels[0]
    data, zooms, _ = load_label_volume(path)
    names = read_label_names(path)
    values = [int(v) for v in np.unique(data) if v != 0]
    if not values:
        return [], [{"source": rel, "name": nifti_stem(path), "label": 0, "reason": "empty (no nonzero label)"}]
    if min(values) < 0:
        raise IngestError(f"{path}: negative label value {min(values)}; labels must be >= 0")
    change = _neighbour_change(data)
    if len(values) > 2 and change > 0.5:
        raise IngestError(f"{path}: looks like an intensity image, not a label map ({len(values)} values, "
                          f"{change:.0%} of foreground neighbours differ; label maps have < 20 %); pass label maps only")
    # group labels: merged names collect several values
    groups: dict[str, list[int]] = {}
    for v in values:
        name = names.get(v, f"{nifti_stem(path)}_label{v}")
        groups.setdefault(_merged_name(name, opts["merge"]) or name, []).append(v)
    if max(values) <= 10_000_000:
        objs = ndi.find_objects(data if data.dtype.itemsize < 8 else data.astype(np.int64))
        def box(v: int) -> tuple[slice, ...]:
            return objs[v - 1]
    else:
        def box(v: int) -> tuple[slice, ...]:
            return _bbox_slices(data == v)  # type: ignore[return-value]
    out: list[dict] = []
    dropped: list[dict] = []
    for name, vals in groups.items():
        boxes = [box(v) for v in vals]
        sl = tuple(slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes)) for a in range(3))
        crop = np.isin(data[sl], vals).astype(np.uint8) if len(vals) > 1 else (data[sl] == vals[0]).astype(np.uint8)
        src = rel if len(vals) == 1 else f"{rel}[{len(vals)} merged]"
        _finish(crop, zooms, opts, name, min(vals), src, out, dropped)
    return out, dropped


def _unit_key(unit: _Unit, opts: dict[str, Any]) -> str:
    stats = [(r, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f, r in zip(unit.files, unit.rels)]
    blob = json.dumps({"v": _WORK_VERSION, "bank": FORMAT_VERSION, "unit": [unit.kind, unit.name, stats],
                       "opts": opts}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _run_unit(unit: _Unit, opts: dict[str, Any], result_path: str) -> tuple[int, int]:
    """Process one unit and save its result atomically to `result_path`; (kept, dropped)."""
    out, dropped = (_process_atlas if unit.kind == "atlas" else _process_masks)(unit, opts)
    buf = io.BytesIO()
    np.savez(buf, packed=np.frombuffer(b"".join(t["packed"] for t in out), np.uint8),
             nbytes=np.asarray([len(t["packed"]) for t in out], np.int64),
             shape=np.asarray([t["shape"] for t in out], np.int32).reshape(-1, 3),
             voxels=np.asarray([t["voxels"] for t in out], np.int64),
             label=np.asarray([t["label"] for t in out], np.int32),
             meta=np.asarray(json.dumps({"names": [t["name"] for t in out], "sources": [t["source"] for t in out],
                                         "dropped": dropped})))
    write_bytes(result_path, buf.getvalue())
    return len(out), len(dropped)


def ingest(sources: Sequence[str | Path], out: str | Path, *, spacing: float | None = None,
           merge: Mapping[str, str] | Sequence[str] | None = None, min_voxels: int = 1, workers: int = 1,
           resume: bool = True, interp: str = "linear", overwrite: bool = False,
           progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Ingest NIfTI label maps into a new bank at `out`; returns a summary dict
    (path, templates, content_hash, files, units, resumed, dropped: [{source, name, label, reason}], seconds).

    Raises IngestError naming the file on bad input, and when no structure survives.
    """
    t0 = time.perf_counter()
    out = Path(out).expanduser()
    if spacing is not None and not spacing > 0:
        raise IngestError(f"spacing = {spacing} must be > 0 (mm)")
    if interp not in ("linear", "nearest"):
        raise IngestError(f"interp = {interp!r} must be 'linear' or 'nearest'")
    if min_voxels < 1:
        raise IngestError(f"min_voxels = {min_voxels} must be >= 1")
    if workers < 1:
        raise IngestError(f"workers = {workers} must be >= 1")
    if not sources:
        raise IngestError("no sources given")
    if out.exists() and not overwrite:
        raise BankError(f"{out} already exists; choose another --out, remove it, or overwrite it (--force)")
    rules = parse_merge(merge)
    opts = {"spacing": spacing, "interp": interp, "merge": rules, "min_voxels": int(min_voxels)}
    units = _discover(sources, rules)
    work = out.parent / f".{out.name}.ingest-work"
    work.mkdir(parents=True, exist_ok=True)
    paths = [work / f"{_unit_key(u, opts)}.npz" for u in units]
    todo = [i for i, p in enumerate(paths) if not (resume and p.is_file())]
    resumed = len(units) - len(todo)
    say = progress or (lambda s: None)
    n_files = sum(len(u.files) for u in units)
    say(f"ingest: {n_files} files in {len(units)} units from {len(sources)} sources"
        + (f"; {resumed} done already (resuming)" if resumed else ""))
    step = max(1, len(todo) // 20)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if done % step == 0 or done == len(todo):
            say(f"ingest: {done}/{len(todo)} units ({time.perf_counter() - t0:.1f} s)")

    try:
        if workers == 1 or len(todo) <= 1:
            for i in todo:
                _run_unit(units[i], opts, str(paths[i]))
                tick()
        else:
            with ProcessPoolExecutor(workers) as ex:
                futs = [ex.submit(_run_unit, units[i], opts, str(paths[i])) for i in todo]
                for f in as_completed(futs):
                    f.result()  # re-raises the worker's IngestError with the file named
                    tick()
    except BaseException:
        if not any(work.iterdir()):  # nothing worth resuming: leave no litter
            work.rmdir()
        raise
    dropped: list[dict[str, Any]] = []
    with BankWriter(out, sources=[str(s) for s in sources], overwrite=overwrite,
                    created_by=f"ingest(spacing={spacing}, interp={interp}, merge={rules}, min_voxels={min_voxels})") as w:
        for p in paths:
            with np.load(p, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                packed = z["packed"]
                off = 0
                for k, nb in enumerate(z["nbytes"].tolist()):
                    w.add_packed(packed[off:off + nb].tobytes(), z["shape"][k], voxels=int(z["voxels"][k]),
                                 name=meta["names"][k], source=meta["sources"][k], label=int(z["label"][k]))
                    off += nb
                dropped += meta["dropped"]
        for d in dropped:
            say(f"ingest: dropped {d['name']} ({d['source']}): {d['reason']}")
        if len(w) == 0:
            raise IngestError(f"no templates: all {len(dropped)} structures in {', '.join(map(str, sources))} were "
                              f"dropped (empty or below min_voxels={min_voxels}); nothing written to {out}")
        w.commit()
    shutil.rmtree(work, ignore_errors=True)
    bank = open_bank(out)
    summary = {"path": str(out), "templates": len(bank), "content_hash": bank.content_hash, "files": n_files,
               "units": len(units), "resumed": resumed, "dropped": dropped, "seconds": time.perf_counter() - t0}
    say(f"ingest: wrote {len(bank)} templates to {out} ({len(dropped)} dropped, {summary['seconds']:.1f} s)")
    return summary
