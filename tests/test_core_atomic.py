"""The one atomic writer (synthvox.core.atomic): modes honour the umask, failures leave nothing."""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from synthvox.core import SynthvoxError
from synthvox.core.atomic import (WriteError, atomic_dir, atomic_open, write_bytes, write_figure, write_json, write_nifti,
                                  write_text)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_every_kind_of_file_gets_the_umask_mode_and_no_temporary_is_left(tmp_path, umask022):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib

    fig = plt.figure()
    paths = [
        write_bytes(tmp_path / "a.bin", b"x"),
        write_text(tmp_path / "b.txt", "y"),
        write_json(tmp_path / "c.json", {"b": 1, "a": 2}),
        write_figure(tmp_path / "d.png", fig),
        write_nifti(tmp_path / "e.nii.gz", nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4))),
        write_nifti(tmp_path / "f.nii", nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4))),
    ]
    with atomic_dir(tmp_path / "g") as d:
        (d / "inside").write_text("z")
    for p in paths:
        assert _mode(p) == 0o644, p
    assert _mode(tmp_path / "g") == 0o755 and (tmp_path / "g" / "inside").read_text() == "z"
    assert (tmp_path / "c.json").read_text() == '{\n "a": 2,\n "b": 1\n}\n'
    assert nib.load(str(tmp_path / "e.nii.gz")).shape == (2, 2, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.txt", "c.json", "d.png", "e.nii.gz", "f.nii", "g"]


def test_a_failed_write_removes_its_temporary_and_names_the_file(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_open(tmp_path / "x.bin") as f:
            f.write(b"half")
            raise RuntimeError("boom")
    with pytest.raises(WriteError, match=r"cannot write .*y\.bin.*disk is full") as e:
        with atomic_open(tmp_path / "y.bin"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert isinstance(e.value, SynthvoxError) and isinstance(e.value, OSError)
    with pytest.raises(ValueError):
        with atomic_dir(tmp_path / "d"):
            raise ValueError("boom")
    assert list(tmp_path.iterdir()) == []


def test_a_directory_is_replaced_only_with_overwrite(tmp_path):
    with atomic_dir(tmp_path / "d") as d:
        (d / "v").write_text("1")
    with pytest.raises(FileExistsError):
        with atomic_dir(tmp_path / "d") as d:
            (d / "v").write_text("2")
    assert (tmp_path / "d" / "v").read_text() == "1"
    with atomic_dir(tmp_path / "d", overwrite=True) as d:
        (d / "v").write_text("3")
    assert (tmp_path / "d" / "v").read_text() == "3" and sorted(os.listdir(tmp_path)) == ["d"]
