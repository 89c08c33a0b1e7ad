"""The report renders from sample records: HTML parses, is self-contained, every row traces to records."""
from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from synthvox.downstream.report import build_report
from synthvox.downstream.results import make_record, read_records, write_record

PNG_1x1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360f8cf00000301010018dd8db40000000049454e44ae426082"
)


class _Tables(HTMLParser):
    """Collects tables (class, rows of (data-records, cells)) and image sources."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[tuple[str, list[tuple[str | None, list[str]]]]] = []
        self.imgs: list[str] = []
        self.links: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables.append((a.get("class", ""), []))
        elif tag == "tr" and self.tables:
            self.tables[-1][1].append((a.get("data-records"), []))
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.imgs.append(a.get("src", ""))
        elif tag in ("link", "script"):
            self.links.append(a.get("href") or a.get("src") or tag)

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][1][-1][1].append("".join(self._cell).replace("\xa0", " "))  # &nbsp; keeps "m ± s" together
            self._cell = None


def _sample_records(root: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    (root / "img" / "overlay.png").write_bytes(PNG_1x1)
    paths = []
    for ck, sha, method in (("stepA", "ab" * 32, "fewshot-pretrained"), ("random", None, "fewshot-scratch")):
        for seed in range(3):
            for case in ("ts0", "ts1"):
                d = {"1": float(rng.uniform(0.5, 0.9)), "2": None if case == "ts1" else float(rng.uniform(0.3, 0.6))}
                rec = make_record(task="fewshot", method=method, case=f"Tiny/{case}", checkpoint={"name": ck, "sha256": sha},
                                  metrics={"dice": d, "hd95": {"1": 3.0, "2": float("inf")},
                                           "dice_mean": float(np.mean([v for v in d.values() if v is not None]))},
                                  units={"dice": "1", "hd95": "mm", "dice_mean": "1"}, protocol="cpu", device="cpu",
                                  labels={1: "blob", 2: "box"}, artifacts={"overlay": "../img/overlay.png"} if seed == 0 else {},
                                  extra={"setting": "Tiny 1-shot", "seed": seed, "shots": 1})
                paths.append(write_record(rec, root / "recs" / f"{ck}-{seed}-{case}.json"))
    for m, ck in (("net+mind", {"name": "stepA", "sha256": "ab" * 32}), ("mind", None)):
        for case in ("colin-warp-0", "colin-warp-1"):
            rec = make_record(task="registration", method=m, case=case, checkpoint=ck,
                              metrics={"dice_mean": float(rng.uniform(0.6, 0.8)), "folding": 0.0, "seconds": 12.5},
                              units={"dice_mean": "1", "folding": "1", "seconds": "s"}, protocol="convexadam-cpu",
                              device="cuda:NVIDIA H100", labels={1: "brain"}, artifacts={"field": "x.nii.gz"})
            paths.append(write_record(rec, root / "recs" / f"reg-{m}-{case}.json"))
    return paths


def test_report_renders_and_traces(tmp_path):
    _sample_records(tmp_path)
    records = read_records([tmp_path / "recs"])
    assert len(records) == 16
    out = build_report(records, tmp_path / "report")
    text = out["html"].read_text()
    p = _Tables()
    p.feed(text)
    p.close()
    # self-contained: every image embedded, no external scripts or stylesheets
    assert p.imgs and all(s.startswith("data:image/") for s in p.imgs) and not p.links
    assert "http://" not in text and "https://" not in text
    ids = {r["_path"] for r in records}
    kinds = [k for k, _ in p.tables]
    assert kinds.count("summary") == 2 and kinds.count("cases") == 2 and kinds.count("labels") >= 1
    seen = set()
    for kind, rows in p.tables:
        header, body = rows[0], rows[1:]
        assert header[0] is None and body
        for rids, cells in body:
            assert rids, f"a {kind} row without records: {cells}"
            cited = set(rids.split(" "))
            assert cited <= ids, cited - ids
            seen |= cited
            assert len(cells) == len(header[1])
    assert seen == ids  # every record reaches the report
    # per-case rows: one per record, the row shows the record's file and values
    case_rows = [r for k, rows in p.tables if k == "cases" for r in rows[1:]]
    assert len(case_rows) == len(records)
    by_id = {r["_path"]: r for r in records}
    for rid, cells in case_rows:
        rec = by_id[rid]
        assert cells[0] == rec["case"] and cells[-1].endswith(Path(rid).name)
        assert f"{rec['metrics']['dice_mean']:.4g}" in cells
    # summary numbers are the mean over the group's records; protocol and device on every row
    summ = next(rows for k, rows in p.tables if k == "summary" and any("fewshot-pretrained" in c for _, c in rows[1:] for c in c))
    hdr = summ[0][1]
    for rids, cells in summ[1:]:
        vals = [by_id[i]["metrics"]["dice_mean"] for i in rids.split(" ")]
        assert cells[hdr.index("dice_mean [1]")].startswith(f"{np.mean(vals):.3g} ± ")
        assert f"(n={len(vals)})" in cells[hdr.index("dice_mean [1]")]
    # protocol and device are the same on every row: stated once above each table, not repeated as columns
    assert "protocol" not in hdr and "device" not in hdr
    assert text.count("All rows: setting Tiny 1-shot · protocol cpu · device cpu") >= 3  # summary, per-label and per-case tables
    assert "All rows: protocol convexadam-cpu · device cuda:NVIDIA H100" in text
    reg = next(rows for k, rows in p.tables if k == "summary" and any("net+mind" in c for _, cs in rows[1:] for c in cs))
    assert {cs[reg[0][1].index("checkpoint")] for _, cs in reg[1:]} == {"stepA (abababab)", "none"}
    # label table: a label with no finite value shows as missing, not as 0
    lab = next(rows for k, rows in p.tables if k == "labels")
    box = [cs for _, cs in lab[1:] if cs[lab[0][1].index("label")] == "box (2)"]
    assert box and all(cs[lab[0][1].index("hd95 [mm]")] == "–" for cs in box)
    # markdown: same tables, images referenced as files that exist
    md = out["markdown"].read_text()
    assert "| case |" in md and md.count("![") == len(p.imgs)
    for line in md.splitlines():
        if line.startswith("!["):
            assert (out["markdown"].parent / line.split("](")[1].rstrip(")")).is_file()
    # the overlay artifact (seed 0 records) is embedded; the .nii.gz field is not an image
    assert len([s for s in p.imgs if s.startswith("data:image/png")]) >= 3


def test_report_empty_and_cli(tmp_path):
    from click.testing import CliRunner

    from synthvox.cli.eval_cmds import report
    from synthvox.cli.main import main

    out = build_report([], tmp_path / "empty")
    assert "0 results records" in out["html"].read_text()
    _sample_records(tmp_path / "s")
    res = CliRunner().invoke(report, [str(tmp_path / "s" / "recs"), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r" / "report.html").is_file() and "16 records" in res.output
    res = CliRunner().invoke(main, ["report", str(tmp_path / "nope"), "--out", str(tmp_path / "r")])
    assert res.exit_code != 0 and "does not exist" in res.output
