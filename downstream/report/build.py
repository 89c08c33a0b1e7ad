"""Markdown + one self-contained HTML page from results records.

`build_report(records, out_dir)` writes `report.md` (images beside it in `img/`) and
`report.html` (the same content, images embedded as base64: no external assets). Every number
comes from the records; every table row names the record file(s) it comes from (HTML: the
`data-records` attribute; per-case rows also show the file).

Layout per task: a summary table (only the group fields that differ are columns; the others
are stated once above it), one strip plot per quality metric, a per-label before/after dot
plot per per-label metric with the full per-label table folded in a `<details>` block, and
the per-case table (folded when long). Tables wrap their cells to the page width.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import os
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from synthvox.core.atomic import write_text

from .plots import label_dot_plot, strip_plot
from .tables import (Row, case_rows, dict_metrics, group_records, label_rows, paired_metrics, pairs_adjacent,
                     scalar_metrics, split_fields, summary_rows)

__all__ = ["build_report", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif")
MAX_IMAGES_PER_TASK = 24
MAX_BOXPLOTS_PER_TASK = 6
MAX_LABEL_PLOTS_PER_TASK = 6
OPEN_CASE_ROWS = 24  # longer per-case tables are folded
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif"}

_CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;margin:1.5em auto;padding:0 1em;max-width:1200px;color:#222;line-height:1.35}
.wrap{max-width:100%;overflow-x:auto}
table{border-collapse:collapse;margin:0.3em 0 1.2em;font-size:13px;max-width:100%}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top;overflow-wrap:break-word}
th{background:#f0f0f0;font-weight:600} tr:nth-child(even){background:#fafafa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.rec{font-family:monospace;font-size:11px;color:#666;word-break:break-all;min-width:12em}
figure{display:inline-block;margin:6px;vertical-align:top;max-width:min(460px,100%)}
figure.plot{max-width:100%;margin:6px 12px 1em 0}
figcaption{font-size:12px;color:#444} img{max-width:100%;height:auto}
.meta{color:#555;font-size:13px} .const{color:#444;font-size:13px;margin:0.2em 0}
details{margin:0.3em 0 1.2em} summary{cursor:pointer;color:#1a4d8f;font-size:14px}
"""


def _head(h: str) -> str:
    """A header cell that may wrap after underscores (long metric names)."""
    return html.escape(h).replace("_", "_<wbr>")


def _is_num(cell: str) -> bool:
    return bool(cell) and (cell[0].isdigit() or cell[:1] in "-–" and cell[1:2].isdigit())


class _Doc:
    """Builds the Markdown and HTML bodies in step."""

    def __init__(self) -> None:
        self.md: list[str] = []
        self.html: list[str] = []

    def heading(self, level: int, text: str) -> None:
        self.md.append(f"\n{'#' * level} {text}\n")
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def para(self, text: str, cls: str = "meta") -> None:
        self.md.append(f"{text}\n")
        self.html.append(f"<p class='{cls}'>{html.escape(text)}</p>")

    def bullets(self, items: list[str]) -> None:
        self.md.append("\n".join(f"- {i}" for i in items) + "\n")
        self.html.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>")

    def open_details(self, summary: str, open_: bool = False) -> None:
        self.md.append(f"<details><summary>{html.escape(summary)}</summary>\n")
        self.html.append(f"<details{' open' if open_ else ''}><summary>{html.escape(summary)}</summary>")

    def close_details(self) -> None:
        self.md.append("</details>\n")
        self.html.append("</details>")

    def constants(self, constant: dict[str, str]) -> None:
        """The group fields every row of the next table shares, stated once."""
        if constant:
            self.para("All rows: " + " · ".join(f"{k} {v}" for k, v in constant.items()), "const")

    def table(self, header: list[str], rows: list[Row], kind: str, rec_col: bool = False) -> None:
        if not rows:
            return
        esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
        self.md.append("| " + " | ".join(map(esc, header)) + " |\n|" + "---|" * len(header))
        self.md += ["| " + " | ".join(map(esc, r.cells)) + " |" for r in rows]
        self.md.append("")
        out = [f"<div class='wrap'><table class='{kind}'><thead><tr>" + "".join(f"<th>{_head(h)}</th>" for h in header)
               + "</tr></thead><tbody>"]
        for r in rows:
            cells = r.cells
            # "mean ± std" stays on one line; " (n=k)" may wrap below it when the page is narrow
            tds = "".join(f"<td class='num'>{html.escape(c).replace(' ± ', '&nbsp;±&nbsp;')}</td>" if _is_num(c)
                          else f"<td>{html.escape(c)}</td>" for c in (cells[:-1] if rec_col else cells))
            if rec_col:
                tds += f"<td class='rec'>{html.escape(cells[-1])}</td>"
            out.append(f"<tr data-records='{html.escape(' '.join(r.records), quote=True)}'>{tds}</tr>")
        out.append("</tbody></table></div>")
        self.html.append("".join(out))

    def image(self, data: bytes, suffix: str, md_path: str, caption: str, plot: bool = False) -> None:
        self.md.append(f"![{caption}]({md_path})\n")
        b64 = base64.b64encode(data).decode()
        cls = " class='plot'" if plot else ""
        self.html.append(
            f"<figure{cls}><img alt='{html.escape(caption, quote=True)}' src='data:{_MIME[suffix]};base64,{b64}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )


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
                 notes: list[str] | None = None, label_names: dict[Any, str] | None = None) -> dict[str, Path]:
    """Write `report.md`, `img/*.png` and a self-contained `report.html` under `out_dir`.

    Per task: a summary table (mean ± std of each scalar metric per setting, method,
    checkpoint, protocol and device: several checkpoints and baselines side by side; n=1
    shows the value and n, no std), strip plots of the quality metrics, per-label dot plots
    (before/after pairs joined) with the full per-label table folded, a per-case table and
    the image artifacts records point to. `label_names` ({id: name}, e.g. from an atlas
    sidecar) names labels the records leave as numbers. Returns {"markdown": path, "html": path}.
    """
    records = list(records)
    names = {str(k): str(v) for k, v in (label_names or {}).items()}
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
             f"Devices: {', '.join(devices) or '–'}. Each table states the protocol and device of its numbers (as "
             "columns where they differ); mean ± std is over the cases (and seeds) of a row, std with ddof=1, "
             "n = finite values (one value: no std).")
    ckpts = sorted({((r.get("checkpoint") or {}).get("name", "none"), (r.get("checkpoint") or {}).get("sha256") or "–")
                    for r in records if r.get("checkpoint")})
    if ckpts:
        doc.bullets([f"checkpoint {n}: sha256 {s}" for n, s in ckpts])
    if notes:
        doc.bullets(notes)
    by_task: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_task[str(r["task"])].append(r)
    counter = [0]

    def add_png(png: bytes | None, stem: str, caption: str) -> None:
        if png:
            counter[0] += 1
            name = f"{stem}_{counter[0]:03d}.png".replace("/", "_").replace(" ", "_")
            (img_dir / name).write_bytes(png)
            doc.image(png, ".png", f"img/{name}", caption, plot=True)

    for task in sorted(by_task):
        _task_section(doc, task, by_task[task], names, rel, add_png, img_dir, counter)
    md_path, html_path = out / "report.md", out / "report.html"
    write_text(md_path, "\n".join(doc.md) + "\n")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n" + "\n".join(doc.html)
            + "\n</body></html>\n")
    write_text(html_path, page)
    return {"markdown": md_path, "html": html_path}


def _task_section(doc: _Doc, task: str, recs: list[dict], names: dict[str, str], rel: Any, add_png: Any,
                  img_dir: Path, counter: list[int]) -> None:
    groups = group_records(recs)
    fields, constant = split_fields(groups)
    doc.heading(2, f"Task: {task}")
    scal, dic = pairs_adjacent(scalar_metrics(recs)), pairs_adjacent(dict_metrics(recs))
    # quality metrics first, timings apart; plots for the quality metrics only
    is_time = {m: any(r.get("units", {}).get(m) == "s" for r in recs) for m in scal}
    quality = [m for m in scal if not is_time[m]]
    timing = [m for m in scal if is_time[m]]
    if quality:
        doc.heading(3, "Summary (mean ± std over cases)")
        doc.constants(constant)
        doc.table(*summary_rows(groups, quality, fields), "summary")
    if timing:
        doc.open_details(f"Timings ({len(timing)} metrics, seconds)")
        doc.constants(constant)
        doc.table(*summary_rows(groups, timing, fields), "timings")
        doc.close_details()
    for base, before, after in paired_metrics(quality)[:MAX_BOXPLOTS_PER_TASK]:
        cap = f"{task}: {base}" + (" before (hollow) and after (filled)" if before else "") + \
            " per group; dots: cases, bar: mean, box: quartiles where n >= 3"
        add_png(strip_plot(groups, after, before, fields, f"{task}: {base}"), f"strip_{task}_{base}", cap)
    if dic:
        doc.heading(3, "Per label")
        # one plot per setting: label ids of different settings (datasets) are different structures
        by_setting: dict[str, dict] = defaultdict(dict)
        for g, v in groups.items():
            by_setting[g.setting][g] = v
        plots = [(setting, sub, pm) for setting, sub in by_setting.items() for pm in paired_metrics(dic)]
        for setting, sub, (base, before, after) in plots[:MAX_LABEL_PLOTS_PER_TASK]:
            sub_fields = [f for f in fields if f != "setting"]
            name = f"{task}: {base}" + (f" · {setting}" if setting else "")
            cap = f"{name} per label" + (", before (hollow) -> after (filled)" if before else "") + \
                ", mean over the cases of each group"
            add_png(label_dot_plot(sub, after, before, sub_fields, names, name), f"labels_{task}_{base}", cap)
        h, rows = label_rows(groups, dic, fields, names)
        n_labels = len({r.cells[len(fields)] for r in rows})
        doc.open_details(f"Per-label table: {n_labels} labels x {len(groups)} groups, {len(dic)} metrics")
        doc.constants(constant)
        doc.table(h, rows, "labels")
        doc.close_details()
    h, rows = case_rows(groups, quality or scal, rel, fields)
    doc.heading(3, "Per case")
    folded = len(rows) > OPEN_CASE_ROWS
    if folded:
        doc.open_details(f"Per-case table: {len(rows)} records")
    doc.constants(constant)
    doc.table(h, rows, "cases", rec_col=True)
    if folded:
        doc.close_details()
    images = _artifact_images([(rid, r) for recs_g in groups.values() for rid, r in recs_g])
    if images:
        doc.heading(3, "Images")
        if len(images) > MAX_IMAGES_PER_TASK:
            doc.para(f"{len(images)} images; showing the first {MAX_IMAGES_PER_TASK}.")
        for p, cap in images[:MAX_IMAGES_PER_TASK]:
            counter[0] += 1
            name = f"art_{counter[0]:03d}{p.suffix.lower()}"
            data = p.read_bytes()
            (img_dir / name).write_bytes(data)
            doc.image(data, p.suffix.lower(), f"img/{name}", cap)
