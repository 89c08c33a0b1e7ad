"""Label names from the sidecar files atlases ship beside their label maps.

Formats (the first that exists beside `LABELS.nii.gz` / `LABELS.nii`, in this order)::

    LABELS.nii.txt, LABELS.txt, LABELS.lut   "id name [more columns]" per line: mricron's aal.nii.txt
                                             ("1 Precentral_L 2001"), FreeSurfer-style LUTs
                                             ("17 Left-Hippocampus 220 216 20 0"); '#' comments
    LABELS.tsv                               BIDS dseg.tsv: a header with "index" and "name" columns
    LABELS.json                              {"id": "name", ...} or {"labels": {...}} (nnU-Net's
                                             dataset.json {"name": id} is recognised and inverted)

Names are returned as {int id: str name}; background (0) is left out unless the file names it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from synthvox.core.atomic import write_text

__all__ = ["SIDECAR_SUFFIXES", "sidecar_for", "read_label_names", "label_names_for", "write_label_names"]

SIDECAR_SUFFIXES = (".nii.txt", ".txt", ".lut", ".tsv", ".json")


def _stem(path: Path) -> str:
    name = path.name
    for suf in (".nii.gz", ".nii"):
        if name.endswith(suf):
            return name[: -len(suf)]
    return path.stem


def sidecar_for(labels_path: str | Path) -> Path | None:
    """The names file beside a label map, or None."""
    p = Path(labels_path)
    stem = _stem(p)
    for suf in SIDECAR_SUFFIXES:
        cand = p.with_name(stem + suf)
        if cand.is_file() and cand != p:
            return cand
    return None


def read_label_names(path: str | Path) -> dict[int, str]:
    """{id: name} from a sidecar file (formats in the module docstring); ValueError naming the file if unreadable."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise ValueError(f"{p}: cannot read label names ({e.strerror})") from None
    if p.suffix == ".json":
        return _from_json(p, text)
    if p.suffix == ".tsv":
        return _from_tsv(p, text)
    names: dict[int, str] = {}
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) >= 2 and parts[0].lstrip("-").isdigit():
            names[int(parts[0])] = parts[1]
    if not names:
        raise ValueError(f"{p}: no 'id name' lines found; expected e.g. '1 Precentral_L' per line")
    return names


def _from_json(p: Path, text: str) -> dict[int, str]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON ({e})") from None
    obj = obj.get("labels", obj) if isinstance(obj, dict) else obj
    if not isinstance(obj, dict):
        raise ValueError(f"{p}: expected an object {{id: name}} (or {{'labels': {{...}}}})")
    out: dict[int, str] = {}
    for k, v in obj.items():
        if str(k).lstrip("-").isdigit():
            out[int(k)] = str(v)
        elif isinstance(v, int) and not isinstance(v, bool):  # nnU-Net's {"name": id}
            out[v] = str(k)
    if not out:
        raise ValueError(f"{p}: no integer label ids found")
    return out


def _from_tsv(p: Path, text: str) -> dict[int, str]:
    rows = [line.split("\t") for line in text.splitlines() if line.strip()]
    if not rows or "index" not in rows[0] or "name" not in rows[0]:
        raise ValueError(f"{p}: a .tsv needs a header with 'index' and 'name' columns (BIDS dseg.tsv)")
    i, n = rows[0].index("index"), rows[0].index("name")
    return {int(r[i]): r[n] for r in rows[1:] if len(r) > max(i, n) and r[i].strip().lstrip("-").isdigit()}


def label_names_for(labels_path: str | Path | None, ids: Iterable[int]) -> dict[int, str]:
    """{id: name} for `ids`: the sidecar's names where it has them, the id as text otherwise.

    Names only label reports: an unreadable sidecar warns (naming the file) instead of failing the run.
    """
    names: dict[int, str] = {}
    side = sidecar_for(labels_path) if labels_path is not None else None
    if side is not None:
        try:
            names = read_label_names(side)
        except ValueError as e:
            import warnings

            warnings.warn(f"label names not used: {e}", stacklevel=2)
    return {int(i): names.get(int(i), str(int(i))) for i in ids}


def write_label_names(path: str | Path, names: dict[int, str]) -> Path:
    """Write `names` as an 'id name' text sidecar (mricron's format); spaces in names become '_'."""
    lines = [f"{int(i)} {str(n).replace(' ', '_')}" for i, n in sorted(names.items())]
    path = Path(path)
    write_text(path, "\n".join(lines) + "\n")
    return path
