"""The CLI maps errors to messages once (cli/main.py): no traceback, exit 1; `--debug` shows it."""
from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from synthvox.cli.main import main
from synthvox.core import SynthvoxError
from synthvox.core.atomic import WriteError
from synthvox.core.configbase import ConfigError
from synthvox.downstream.datasets import DatasetError
from synthvox.downstream.network import CheckpointLoadError
from synthvox.downstream.results import RecordError
from synthvox.engine.schema import SchemaError
from synthvox.engine.templates import BankError, IngestError
from synthvox.pipelines.faults import InjectedFailure
from synthvox.pipelines.lock import StoreBusy
from synthvox.pipelines.manifest import StoreMismatch
from synthvox.pipelines.runner import PipelineError
from synthvox.pipelines.task import FatalTaskError
from synthvox.train.checkpoint import CheckpointError
from synthvox.train.data import DataError

ERRORS = [(BankError, RuntimeError), (IngestError, ValueError), (SchemaError, ValueError), (ConfigError, ValueError),
          (StoreBusy, RuntimeError), (FatalTaskError, RuntimeError), (InjectedFailure, RuntimeError),
          (PipelineError, RuntimeError), (WriteError, OSError), (StoreMismatch, ValueError), (DataError, ValueError),
          (CheckpointError, ValueError), (DatasetError, ValueError), (RecordError, ValueError),
          (CheckpointLoadError, ValueError)]


@pytest.mark.parametrize("cls, builtin", ERRORS, ids=[c.__name__ for c, _ in ERRORS])
def test_every_error_class_derives_from_the_base_and_keeps_its_builtin_base(cls, builtin):
    assert issubclass(cls, SynthvoxError) and issubclass(cls, builtin)


def test_an_error_is_a_message_without_traceback_and_debug_shows_it(tmp_path):
    args = ["render", "--size", "8", "--bank", str(tmp_path / "nope"), "--out", str(tmp_path / "s.npz")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and "Error:" in r.output and "nope" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["--debug"] + args)
    assert r.exit_code == 1 and isinstance(r.exception, BankError) and "Error:" not in r.output


def test_the_installed_command_prints_the_message_on_stderr(tmp_path):
    p = subprocess.run([sys.executable, "-m", "synthvox.cli.main", "info", str(tmp_path)], capture_output=True, text=True)
    assert p.returncode == 1 and p.stdout == "" and "Error:" in p.stderr and str(tmp_path) in p.stderr
    assert "Traceback" not in p.stderr
    p = subprocess.run([sys.executable, "-m", "synthvox.cli.main", "--debug", "info", str(tmp_path)], capture_output=True,
                       text=True)
    assert p.returncode == 1 and "Traceback" in p.stderr
