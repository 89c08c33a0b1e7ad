"""The HTML report fits the page: rendered in headless Chromium, nothing is wider than the viewport.

Needs Debian's `chromium` (`make test` installs it with apt where it runs as root); skipped
with the reason elsewhere. A script added to a copy of the page opens every <details> block,
measures the page, each table against the room its container gives it and each image, and
writes the numbers into the DOM, which `--dump-dom` prints.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from synthvox.downstream.report import build_report
from synthvox.downstream.results import make_record, read_records, write_record

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (`make test` installs it "
                                                           "with apt when run as root; or apt-get install chromium)")

_MEASURE = """<script>
window.addEventListener('load', function () {
  document.querySelectorAll('details').forEach(function (d) { d.open = true; });
  var de = document.documentElement, res = {viewport: window.innerWidth, tables: [], images: []};
  document.querySelectorAll('table').forEach(function (t) {
    res.tables.push({cls: t.className, width: t.scrollWidth, room: t.parentElement.clientWidth});
  });
  document.querySelectorAll('img').forEach(function (i) {
    var r = i.getBoundingClientRect(); res.images.push({right: r.right, width: r.width});
  });
  res.scroll = Math.max(de.scrollWidth, document.body.scrollWidth);
  var pre = document.createElement('pre');
  pre.id = 'widths'; pre.style.display = 'none'; pre.textContent = JSON.stringify(res);
  document.body.appendChild(pre);
});
</script>"""


def measure(page: Path, width: int, tmp: Path) -> dict:
    """Widths of `page` rendered at `width` CSS pixels in headless Chromium."""
    probe = tmp / f"probe-{width}.html"
    probe.write_text(page.read_text().replace("</body>", _MEASURE + "</body>"))
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
           f"--user-data-dir={tmp / 'chromium-profile'}", f"--window-size={width},900", "--virtual-time-budget=5000",
           "--dump-dom", probe.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="widths"[^>]*>(.*?)</pre>', proc.stdout, re.S)
    assert m, f"chromium printed no measurements (rc {proc.returncode}): {proc.stderr[-1500:]}"
    return json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def _records(root: Path) -> list[dict]:
    """Registration records with 116 AAL-like labels left as numbers, 3 methods x 4 cases, long names."""
    rng = np.random.default_rng(0)
    for method, ck in (("net+mind", {"name": "bundled-step-002786-with-a-long-name", "sha256": "65e862a1" * 8}),
                       ("net+mind", {"name": "random", "sha256": None}), ("mind", None)):
        for case in ("colin27-warp-0", "colin27-warp-1", "mni152-2009a-asym-to-colin27-subject-direction", "x"):
            before = {str(i): float(rng.uniform(0.3, 0.7)) for i in range(1, 117)}
            metrics = {"dice_before": before, "dice_after": {k: v + 0.2 for k, v in before.items()},
                       "hd95_before": {k: 6.0 for k in before}, "hd95_after": {k: 3.0 for k in before},
                       "dice_macro_before": 0.5, "dice_macro_after": float(rng.uniform(0.6, 0.7)), "hd95_macro_before": 6.0,
                       "hd95_macro_after": 3.0, "folding_fraction": 0.0, "sdlogj": 0.15, "folding_fraction_mask": 0.0,
                       "sdlogj_mask": 0.1, **{f"seconds_{s}": 1.0 for s in ("header", "features", "affine", "convex", "adam")}}
            units = {k: "s" if k.startswith("seconds") else "mm" if k.startswith("hd95") else "1" for k in metrics}
            rec = make_record(task="registration", method=method, case=case, checkpoint=ck, metrics=metrics, units=units,
                              protocol="convexadam-cpu", device="cpu (AMD EPYC 9B14, 2 cores)",
                              labels={i: str(i) for i in range(1, 117)})
            write_record(rec, root / "recs" / f"{method}-{(ck or {}).get('name', 'none')}-{case}.json")
    for seed in range(2):
        rec = make_record(task="fewshot", method="fewshot-pretrained", case="mni-brain", checkpoint={"name": "b", "sha256": None},
                          metrics={"dice": {"1": 0.8, "2": 0.7}, "dice_mean": 0.75}, units={"dice": "1", "dice_mean": "1"},
                          protocol="cpu", device="cpu", labels={1: "brain", 2: "csf"},
                          extra={"setting": "MNI152 brain extraction, 1 shot, 64^3 crops", "seed": seed})
        write_record(rec, root / "recs" / f"fs-{seed}.json")
    return read_records([root / "recs"])


def test_report_fits_the_page_in_chromium(tmp_path):
    names = {i: f"Region_with_a_long_atlas_name_{i}_L" for i in range(1, 117)}
    out = build_report(_records(tmp_path), tmp_path / "report", label_names=names)
    page = out["html"]
    text = page.read_text()
    assert "Region_with_a_long_atlas_name_7_L (7)" in text and "brain (1)" in text  # names, not numbers
    for width in (1280, 1024):
        m = measure(page, width, tmp_path)
        assert m["viewport"] == width
        assert m["scroll"] <= m["viewport"], f"the page scrolls sideways at {width}px: {m['scroll']}px wide"
        wide = [t for t in m["tables"] if t["width"] > t["room"] + 1]
        assert not wide, f"tables wider than the page at {width}px: {wide}"
        assert len(m["tables"]) >= 6 and m["images"]
        assert all(i["right"] <= width for i in m["images"])


def test_measurement_sees_an_overflowing_page(tmp_path):
    """The check can fail: a page with a table wider than the viewport is caught."""
    page = tmp_path / "wide.html"
    cells = "".join(f"<td>column_{i}_with_an_unbreakable_value_{'x' * 20}</td>" for i in range(12))
    page.write_text(f"<!DOCTYPE html><html><body><div><table><tr>{cells}</tr></table></div></body></html>")
    m = measure(page, 1280, tmp_path)
    assert m["scroll"] > 1280 and m["tables"][0]["width"] > m["tables"][0]["room"]
