"""Shared test setup: tiny volumes, few threads (CI has 2 cores, no GPU)."""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

MRICRON = "/usr/share/mricron/templates"


@pytest.fixture
def mricron_dir():
    """The Colin27/AAL templates of Debian's mricron-data, or skip when not installed."""
    if not os.path.isdir(MRICRON):
        pytest.skip("Debian package mricron-data is not installed (make data installs it)")
    return MRICRON
