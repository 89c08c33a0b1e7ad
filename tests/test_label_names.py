"""Label names from atlas sidecars reach the records and the report; n=1 shows no std; plots are drawn."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from synthvox.downstream.labelnames import label_names_for, read_label_names, sidecar_for, write_label_names
from synthvox.downstream.report.tables import fmt_stat, pairs_adjacent, split_fields, group_records
from synthvox.downstream.results import make_record, write_record


def test_sidecar_formats(tmp_path):
    (tmp_path / "aal.nii.txt").write_text("1 Precentral_L 2001\n2 Precentral_R 2002\n# comment\n\n")
    assert read_label_names(tmp_path / "aal.nii.txt") == {1: "Precentral_L", 2: "Precentral_R"}
    assert sidecar_for(tmp_path / "aal.nii.gz") == tmp_path / "aal.nii.txt"
    (tmp_path / "seg.tsv").write_text("index\tname\tcolor\n1\tGM\t#f00\n2\tWM\t#0f0\n")
    assert read_label_names(tmp_path / "seg.tsv") == {1: "GM", 2: "WM"}
    (tmp_path / "a.json").write_text(json.dumps({"labels": {"background": 0, "brain": 1}}))  # nnU-Net style
    assert read_label_names(tmp_path / "a.json") == {0: "background", 1: "brain"}
    (tmp_path / "b.json").write_text(json.dumps({"3": "hippocampus"}))
    assert read_label_names(tmp_path / "b.json") == {3: "hippocampus"}
    (tmp_path / "bad.txt").write_text("no ids here\n")
    with pytest.raises(ValueError, match="bad.txt"):
        read_label_names(tmp_path / "bad.txt")
    assert label_names_for(tmp_path / "aal.nii.gz", [1, 5]) == {1: "Precentral_L", 5: "5"}
    assert label_names_for(tmp_path / "none.nii.gz", [1]) == {1: "1"}
    p = write_label_names(tmp_path / "w.nii.txt", {1: "Left hippocampus"})
    assert read_label_names(p) == {1: "Left_hippocampus"}


@pytest.mark.skipif(not Path("/usr/share/mricron/templates/aal.nii.txt").is_file(), reason="mricron-data not installed")
def test_mricron_aal_sidecar():
    names = read_label_names("/usr/share/mricron/templates/aal.nii.txt")
    assert len(names) == 116 and names[1] == "Precentral_L"
    assert sidecar_for("/usr/share/mricron/templates/aal.nii.gz").name == "aal.nii.txt"


def test_register_files_names_labels_from_the_sidecar(tmp_path):
    from synthvox.downstream.registration import RegistrationConfig, register_files

    g = np.indices((16, 16, 16)).sum(0)
    lab = ((g > 12).astype(np.int16) + (g > 24)).astype(np.int16)
    img = lab.astype(np.float32) + 0.1 * np.random.default_rng(0).random(lab.shape, dtype=np.float32)
    for name, arr in (("f", img), ("m", img), ("fl", lab), ("ml", lab)):
        nib.save(nib.Nifti1Image(arr, np.eye(4)), tmp_path / f"{name}.nii.gz")
    write_label_names(tmp_path / "fl.nii.txt", {1: "cortex", 2: "white_matter"})
    rec = register_files(tmp_path / "f.nii.gz", tmp_path / "m.nii.gz", tmp_path / "out", fixed_labels=tmp_path / "fl.nii.gz",
                         moving_labels=tmp_path / "ml.nii.gz", cfg=RegistrationConfig(features="mind", affine=False),
                         png=False, echo=None)
    assert rec["labels"] == {"1": "cortex", "2": "white_matter"}


def _rec(case: str, method: str, v: float) -> dict:
    return make_record(task="registration", method=method, case=case, checkpoint=None,
                       metrics={"dice_after": {"1": v, "2": v / 2}, "dice_before": {"1": v / 2, "2": v / 4},
                                "dice_macro_after": v, "dice_macro_before": v / 2},
                       units={"dice_after": "1", "dice_before": "1", "dice_macro_after": "1", "dice_macro_before": "1"},
                       protocol="cpu", device="cpu", labels={1: "1", 2: "2"})


def test_report_names_n1_and_plots(tmp_path):
    from synthvox.cli.eval_cmds import report
    from synthvox.cli.main import main

    for i, (case, method) in enumerate((("a", "mind"), ("b", "mind"), ("a", "net+mind"))):
        write_record(_rec(case, method, 0.5 + 0.1 * i), tmp_path / "recs" / f"r{i}.json")
    (tmp_path / "atlas.nii.txt").write_text("1 Precentral_L\n2 Precentral_R\n")
    res = CliRunner().invoke(report, [str(tmp_path / "recs"), "--out", str(tmp_path / "rep"),
                                      "--label-names", str(tmp_path / "atlas.nii.txt")])
    assert res.exit_code == 0, res.output
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "Precentral_L (1)" in html and "Precentral_R (2)" in html
    assert "0.7 (n=1)" in html and "± 0 (n=1)" not in html and "&nbsp;±&nbsp;0&nbsp;(n=1)" not in html
    assert "<details><summary>Per-label table" in html
    assert html.count("<figure class='plot'>") == 2  # dice_macro strip plot, per-label dot plot
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| method | dice_macro_before [1] | dice_macro_after [1] |" in md  # constant columns stated once
    assert "All rows: checkpoint none · protocol cpu · device cpu" in md
    (tmp_path / "notes.txt").write_text("not a label list\n")
    bad = CliRunner().invoke(main, ["report", str(tmp_path / "recs"), "--out", str(tmp_path / "rep2"),
                                      "--label-names", str(tmp_path / "notes.txt")])
    assert bad.exit_code != 0 and "notes.txt" in bad.output and "Traceback" not in bad.output


def test_table_helpers():
    assert fmt_stat([0.5]) == "0.5 (n=1)" and fmt_stat([]) == "–" and fmt_stat([1.0, 3.0]) == "2 ± 1.4 (n=2)"
    assert pairs_adjacent(["x_after", "y", "x_before"]) == ["y", "x_before", "x_after"]
    groups = group_records([_rec("a", "mind", 0.5), _rec("a", "net", 0.5)])
    fields, constant = split_fields(groups)
    assert fields == ["method"] and constant == {"checkpoint": "none", "protocol": "cpu", "device": "cpu"}
