"""Markdown + one self-contained HTML page from results records.

`build_report(records, out_dir)` writes `report.md` (images beside it in `img/`) and
`report.html` (the same content, images embedded as base64: no external assets). Every number
comes from the records; every table row names the record file(s) it comes from (HTML: the
`data-records` attribute; per-case rows also show the file).
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import os
import shutil
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from synthvox.core.atomic import write_text

from .tables import Group, Row, case_rows, dict_metrics, group_records, label_rows, scalar_metrics, summary_rows

__all__ = ["build_report", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif")
MAX_IMAGES_PER_TASK = 24
MAX_BOXPLOTS_PER_TASK = 6
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif"}

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f0f0f0} tr:nth-child(even){background:#fafafa}
td.rec{font-family:monospace;font-size:11px;color:#666}
figure{display:inline-block;margin:6px;vertical-align:top;max-width:460px}
figcaption{font-size:11px;color:#444} img{max-width:100%}
.meta{color:#555;font-size:13px}
"""


class _Doc:
    """Builds the Markdown and HTML bodies in step."""

    def __init__(self) -> None:
        self.md: list[str] = []
        self.html: list[str] = []

    def heading(self, level: int, text: str) -> None:
        self.md.append(f"\n{'#' * level} {text}\n")
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def para(self, text: str) -> None:
        self.md.append(f"{text}\n")
        self.html.append(f"<p class='meta'>{html.escape(text)}</p>")

    def bullets(self, items: list[str]) -> None:
        self.md.append("\n".join(f"- {i}" for i in items) + "\n")
        self.html.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>")

    def table(self, header: list[str], rows: list[Row], kind: str, rec_col: bool = False) -> None:
        if not rows:
            return
        esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
        self.md.append("| " + " | ".join(map(esc, header)) + " |\n|" + "---|" * len(header))
        self.md += ["| " + " | ".join(map(esc, r.cells)) + " |" for r in rows]
        self.md.append("")
        out = [f"<table class='{kind}'><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead><tbody>"]
        for r in rows:
            cells = r.cells
            tds = "".join(f"<td>{html.escape(c)}</td>" for c in (cells[:-1] if rec_col else cells))
            if rec_col:
                tds += f"<td class='rec'>{html.escape(cells[-1])}</td>"
            out.append(f"<tr data-records='{html.escape(' '.join(r.records), quote=True)}'>{tds}</tr>")
        out.append("</tbody></table>")
        self.html.append("".join(out))

    def image(self, data: bytes, suffix: str, md_path: str, caption: str) -> None:
        self.md.append(f"![{caption}]({md_path})\n")
        b64 = base64.b64encode(data).decode()
        self.html.append(
            f"<figure><img alt='{html.escape(caption, quote=True)}' src='data:{_MIME[suffix]};base64,{b64}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )


def _boxplot(groups: dict[Group, list[tuple[str, dict]]], metric: str, title: str) -> bytes | None:
    import matplotlib  # lazily: ~1 s of startup, for figures only

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data, names = [], []
    for g, recs in groups.items():
        vals = [r["metrics"].get(metric) for _, r in recs]
        vals = [float(v) for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if vals:
            data.append(vals)
            setting = textwrap.fill(g.setting, 24) + "\n" if g.setting else ""
            names.append(f"{setting}{g.method}\n{g.checkpoint}\n{g.protocol}/{g.device[:16]}")
    if not data:
        return None
    unit = next((r.get("units", {}).get(metric, "") for v in groups.values() for _, r in v), "")
    fig, ax = plt.subplots(figsize=(max(4.0, 2.0 * len(data) + 1.5), 4.2))
    ax.boxplot(data, showmeans=True)
    for i, vals in enumerate(data, start=1):  # the individual cases over the boxes
        ax.plot([i] * len(vals), vals, "o", ms=3, alpha=0.5, color="k")
    ax.set_xticks(range(1, len(names) + 1), names, fontsize=7)
    ax.set_ylabel(f"{metric} [{unit}]" if unit else metric)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _artifact_images(records: list[tuple[str, dict]]) -> list[tuple[Path, str]]:
    """(image file, caption) for every image artifact that exists (relative to the record file)."""
    out = []
    for rid, r in records:
        for name, rel in sorted((r.get("artifacts") or {}).items()):
            p = Path(rel)
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if not p.is_absolute() and r.get("_path"):
                p = Path(r["_path"]).parent / p
            if p.is_file():
                ck = (r.get("checkpoint") or {}).get("name", "none")
                setting = (r.get("extra") or {}).get("setting", "")
                seed = (r.get("extra") or {}).get("seed")
                cap = f"{r['case']} — {name}: {r['method']} [{ck}] {setting}" + (f" seed {seed}" if seed is not None else "")
                out.append((p, cap))
    return out


def build_report(records: Iterable[dict[str, Any]], out_dir: str | Path, title: str = "synthvox evaluation report",
                 notes: list[str] | None = None) -> dict[str, Path]:
    """Write `report.md`, `img/*.png` and a self-contained `report.html` under `out_dir`.

    Per task: a summary table (mean ± std of each scalar metric per setting, method,
    checkpoint, protocol and device: several checkpoints and baselines side by side), a
    per-label table, a per-case table, box plots, and the image artifacts records point to.
    Returns {"markdown": path, "html": path}.
    """
    records = list(records)
    out = Path(out_dir)
    img_dir = out / "img"
    if img_dir.exists():
        shutil.rmtree(img_dir)
    img_dir.mkdir(parents=True, exist_ok=True)
    rel = lambda rid: os.path.relpath(rid, out) if os.path.exists(rid) else rid  # noqa: E731

    doc = _Doc()
    doc.heading(1, title)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    protos = sorted({str(r.get("protocol") or "-") for r in records})
    devices = sorted({str(r.get("device") or "-") for r in records})
    doc.para(f"Generated {now} from {len(records)} results records. Protocols: {', '.join(protos) or '–'}. "
             f"Devices: {', '.join(devices) or '–'}. Every table row carries the protocol and device of its numbers; "
             "mean ± std is over the cases (and seeds) of a row, std with ddof=1, n = finite values.")
    ckpts = sorted({((r.get("checkpoint") or {}).get("name", "none"), (r.get("checkpoint") or {}).get("sha256") or "–")
                    for r in records if r.get("checkpoint")})
    if ckpts:
        doc.bullets([f"checkpoint {n}: sha256 {s}" for n, s in ckpts])
    if notes:
        doc.bullets(notes)
    by_task: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_task[str(r["task"])].append(r)
    n_img = 0
    for task in sorted(by_task):
        recs = by_task[task]
        groups = group_records(recs)
        # keep record ids identical to the global ones (files), so rows trace to records
        doc.heading(2, f"Task: {task}")
        scal, dic = scalar_metrics(recs), dict_metrics(recs)
        # quality metrics first, timings last; box plots for the quality metrics only
        is_time = {m: any(r.get("units", {}).get(m) == "s" for r in recs) for m in scal}
        scal = sorted(scal, key=lambda m: is_time[m])
        if scal:
            doc.heading(3, "Summary (mean ± std per method, checkpoint, protocol, device)")
            h, rows = summary_rows(groups, scal)
            doc.table(h, rows, "summary")
        if dic:
            doc.heading(3, "Per label")
            h, rows = label_rows(groups, dic)
            doc.table(h, rows, "labels")
        for m in [m for m in scal if not is_time[m]][:MAX_BOXPLOTS_PER_TASK]:
            png = _boxplot(groups, m, f"{task}: {m}")
            if png:
                n_img += 1
                name = f"box_{n_img:03d}_{task}_{m}.png".replace("/", "_")
                (img_dir / name).write_bytes(png)
                doc.image(png, ".png", f"img/{name}", f"{task}: {m} per method (boxes over cases; dots: cases)")
        doc.heading(3, "Per case")
        h, rows = case_rows(groups, scal, rel)
        doc.table(h, rows, "cases", rec_col=True)
        images = _artifact_images([(rid, r) for recs_g in groups.values() for rid, r in recs_g])
        if images:
            doc.heading(3, "Images")
            if len(images) > MAX_IMAGES_PER_TASK:
                doc.para(f"{len(images)} images; showing the first {MAX_IMAGES_PER_TASK}.")
            for p, cap in images[:MAX_IMAGES_PER_TASK]:
                n_img += 1
                name = f"art_{n_img:03d}{p.suffix.lower()}"
                data = p.read_bytes()
                (img_dir / name).write_bytes(data)
                doc.image(data, p.suffix.lower(), f"img/{name}", cap)
    md_path, html_path = out / "report.md", out / "report.html"
    write_text(md_path, "\n".join(doc.md) + "\n")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(doc.html) + "\n</body></html>\n")
    write_text(html_path, page)
    return {"markdown": md_path, "html": html_path}
