"""Run directories: never mix two runs, never lose one, resume only what was meant.

`prepare_run_dir` is what the trainer calls once at start, before it writes anything into
its `--out` directory RUN:

- RUN holds a run (`log.jsonl`, `checkpoints/`, `config.json` or `run.json`) and neither
  `resume` nor `overwrite` is given: refused (`RunExistsError`, naming RUN and the fix
  `--resume` / `--overwrite`).
- `overwrite`: the old run is moved aside to `RUN.old-<UTC timestamp>` (never deleted); a
  note says where. A RUN without a run is used as it is.
- `resume`: the settings recorded by the run (`RUN/run.json`; for a run written before it
  existed, the latest checkpoint's `record.json`, else `config.json`) are compared with
  `settings`; every difference is refused (`ResumeMismatchError`, naming each field
  `old -> new` and the fix `--resume-with-changes FIELD,...`) unless the field is in
  `allow_changes`; allowed changes are recorded in `run.json` (`history`).
  Resuming a RUN that holds no run starts a fresh one (a note says so).
- On start (fresh or resumed) temporaries a kill left behind (`core.atomic` temporaries such
  as `checkpoints/.step-000004.<pid>-<id>.tmp`, moved-aside `.step-*.old-*` directories, old
  `.tmp-step-*` directories, `.log.jsonl.<pid>-<id>.tmp`) are removed from RUN and
  RUN/checkpoints, with a note; on resume a torn last line of `log.jsonl` (a kill during
  the write) is dropped, with a note naming the file; an unreadable line before the last
  one is refused (`RunLogError`, naming file and line).
- `run.json` is (re)written with the settings in force.

How the trainer calls it (train/pretrain.py), after the data source is open (so the store
manifest hash and the world size are known) and before `config.json` / `log.jsonl` are
written or a checkpoint is read, on EVERY rank::

    settings = run_settings(cfg, store_manifest_hash=source.manifest_hash,
                            engine_config_hash=source.engine_config_hash, world_size=world)
    allow = tuple(resume_with_changes) + (("world_size",) if elastic else ())
    prep = prepare_run_dir(out, resume=resume, overwrite=overwrite, settings=settings,
                           allow_changes=allow, rank0=(rank == 0))
    for note in prep.notes: say(note)
    barrier()          # the other ranks read RUN only after rank 0 has cleaned / moved it

Every rank runs the checks (read only; the same files give every rank the same answer, so
all ranks refuse together and none waits in a collective); only `rank0=True` changes files.
`resume_with_changes` comes from `--resume-with-changes FIELD,...` (`parse_fields` splits
it); unknown field names are refused with the known ones.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from synthvox.core.atomic import write_json, write_text
from synthvox.core.errors import SynthvoxError

from .checkpoint import list_checkpoints, load_record
from .config import TrainConfig

__all__ = ["RunDirError", "RunExistsError", "ResumeMismatchError", "RunLogError", "RunDir", "SETTINGS_FIELDS",
           "RUN_FILE", "LOG_FILE", "prepare_run_dir", "run_settings", "recorded_settings", "holds_run",
           "parse_fields", "clean_temporaries", "repair_log"]

RUN_SCHEMA = "synthvox.run/1"
RUN_FILE = "run.json"
LOG_FILE = "log.jsonl"
#: the settings a resume must keep (unless allowed): what `run_settings` records
SETTINGS_FIELDS = ("store_manifest_hash", "engine_config_hash", "source", "format", "seed", "batch_size", "lr",
                   "world_size", "model")
_MARKERS = (LOG_FILE, "checkpoints", "config.json", RUN_FILE)
# core.atomic temporaries (".NAME.<pid>-<12 hex>.tmp[suffix]"), commit_dir's moved-aside
# directories (".NAME.old-<pid>-<8 hex>") and the older ".tmp-step-*" checkpoint temporaries
_TMP_RE = re.compile(r"^\.(tmp-.+|.+\.\d+-[0-9a-f]{12}\.tmp.*|.+\.old-\d+-[0-9a-f]{8})$")


class RunDirError(SynthvoxError, ValueError):
    """A run directory cannot be used as asked; the message names it and the fix."""


class RunExistsError(RunDirError):
    """The run directory holds a run and neither --resume nor --overwrite was given."""


class ResumeMismatchError(RunDirError):
    """--resume with settings other than the run's, not allowed by --resume-with-changes."""


class RunLogError(RunDirError):
    """log.jsonl has an unreadable line that is not a torn last line."""


@dataclass(frozen=True)
class RunDir:
    """What `prepare_run_dir` did: the directory, whether a run continues, notes to print."""

    path: Path
    resumed: bool                                   # True: RUN held a run and resume was asked
    moved_to: Path | None = None                    # overwrite: where the old run went
    notes: tuple[str, ...] = ()
    changes: Mapping[str, tuple[Any, Any]] = field(default_factory=dict)   # allowed: field -> (old, new)
    settings: Mapping[str, Any] = field(default_factory=dict)             # the settings now recorded


def run_settings(cfg: TrainConfig, *, store_manifest_hash: str | None, engine_config_hash: str | None,
                 world_size: int) -> dict[str, Any]:
    """The settings of a run that a resume must keep (`SETTINGS_FIELDS`), JSON-able."""
    return _plain({"store_manifest_hash": store_manifest_hash, "engine_config_hash": engine_config_hash,
                   "source": cfg.source, "format": cfg.format, "seed": cfg.seed, "batch_size": cfg.batch_size,
                   "lr": cfg.lr, "world_size": int(world_size), "model": cfg.model_config()})


def parse_fields(text: str | Iterable[str] | None) -> tuple[str, ...]:
    """`--resume-with-changes lr,batch_size` -> ("lr", "batch_size"); dashes read as underscores."""
    if text is None:
        return ()
    items = text.split(",") if isinstance(text, str) else list(text)
    return tuple(s.strip().replace("-", "_") for s in items if s.strip())


def holds_run(run: str | Path) -> bool:
    """True when `run` holds (part of) a run: log.jsonl, checkpoints/, config.json or run.json."""
    run = Path(run)
    return run.is_dir() and any((run / m).exists() for m in _MARKERS)


def recorded_settings(run: str | Path) -> tuple[dict[str, Any], str]:
    """(settings, the file they came from) of the run in `run`; ({}, "") when none is recorded.

    run.json when present; else the latest checkpoint's record.json (runs written before
    run.json existed); else config.json (a run killed before its first checkpoint).
    """
    run = Path(run)
    rf = run / RUN_FILE
    if rf.is_file():
        doc = _read_json(rf)
        if not isinstance(doc, dict) or not isinstance(doc.get("settings"), dict):
            raise RunDirError(f"{rf} has no 'settings' object; the run directory is damaged: "
                              "repair or remove the file, or start afresh with --overwrite")
        return dict(doc["settings"]), str(rf)
    ckpts = list_checkpoints(run)
    if ckpts:
        rec = load_record(ckpts[-1])
        tc = rec.get("train_config") or {}
        out = {"store_manifest_hash": rec.get("store_manifest_hash"), "engine_config_hash": rec.get("engine_config_hash"),
               "source": rec.get("source", tc.get("source")), "format": tc.get("format"), "seed": tc.get("seed"),
               "batch_size": tc.get("batch_size"), "lr": tc.get("lr"), "world_size": rec.get("world_size"),
               "model": rec.get("model")}
        return {k: v for k, v in out.items() if v is not None or k.endswith("_hash")}, str(ckpts[-1] / "record.json")
    cf = run / "config.json"
    if cf.is_file():
        doc = _read_json(cf)
        tc = doc.get("train") if isinstance(doc, dict) else None
        if isinstance(tc, dict):
            model = {"in_channels": 1, "out_channels": tc.get("out_channels"), "widths": tc.get("widths"),
                     "convs_per_level": tc.get("convs_per_level"), "norm": tc.get("norm")}
            out = {"source": tc.get("source"), "format": tc.get("format"), "seed": tc.get("seed"),
                   "batch_size": tc.get("batch_size"), "lr": tc.get("lr"), "world_size": doc.get("world_size"),
                   "model": model}
            return _plain({k: v for k, v in out.items() if v is not None}), str(cf)
    return {}, ""


def prepare_run_dir(out: str | Path, *, resume: bool, overwrite: bool, settings: Mapping[str, Any],
                    allow_changes: Iterable[str] = (), rank0: bool = True) -> RunDir:
    """Check (every rank) and prepare (rank 0) the run directory `out`; see the module doc.

    `settings`: `run_settings(...)` of the new start (any JSON-able mapping works; the fields
    compared are the keys both runs recorded). `allow_changes`: fields a resume may change.
    Raises `RunExistsError`, `ResumeMismatchError`, `RunLogError` or `RunDirError`.
    """
    run = Path(out)
    new = _plain(dict(settings))
    allow = parse_fields(allow_changes)
    known = sorted(set(SETTINGS_FIELDS) | set(new))
    unknown = [f for f in allow if f not in known]
    if unknown:
        raise RunDirError(f"--resume-with-changes {','.join(unknown)}: unknown field(s); the settings a resume keeps are "
                          f"{', '.join(known)}")
    if resume and overwrite:
        raise RunDirError(f"--resume and --overwrite both given for {run}: --resume continues the run there, "
                          "--overwrite moves it aside and starts afresh; pass one")
    if run.exists() and not run.is_dir():
        raise RunDirError(f"--out {run} is a file, not a directory; choose another --out")
    notes: list[str] = []
    if not holds_run(run):
        if resume:
            notes.append(f"--resume: {run} holds no run yet; starting a new run there")
        return _start(run, new, notes, rank0, resumed=False)
    if not resume and not overwrite:
        raise RunExistsError(f"{run} already holds a run ({', '.join(m for m in _MARKERS if (run / m).exists())}); "
                             f"pass --resume to continue it, --overwrite to move it aside (to {run.name}.old-<time>) "
                             "and start afresh, or choose another --out")
    if overwrite:
        aside = _aside_name(run)
        if rank0:
            try:
                os.rename(run, aside)
            except OSError as e:
                raise RunDirError(f"cannot move the old run {run} aside to {aside}: {e.strerror or e}; "
                                  "move or remove it yourself, or choose another --out") from e
            notes.append(f"--overwrite: the old run in {run} was moved to {aside}")
        return _start(run, new, notes, rank0, resumed=False, moved_to=aside if rank0 else None)
    old, source = recorded_settings(run)
    changes: dict[str, tuple[Any, Any]] = {}
    refused: list[str] = []
    for key in sorted(set(old) & set(new)):
        if old[key] != new[key]:
            changes[key] = (old[key], new[key])
            if key not in allow:
                refused.append(key)
    if refused:
        lines = "; ".join(f"{k}: {_short(old[k])} -> {_short(new[k])}" for k in refused)
        raise ResumeMismatchError(f"--resume {run}: the run was started with other settings ({source}): {lines}. "
                                  f"Resume with the run's settings, or allow the changes you mean with "
                                  f"--resume-with-changes {','.join(refused)}, or start afresh with --overwrite")
    unrecorded = sorted(set(new) - set(old))
    if unrecorded and source:
        notes.append(f"--resume: {source} does not record {', '.join(unrecorded)}; not compared")
    for k, (a, b) in changes.items():
        notes.append(f"--resume-with-changes: {k} {_short(a)} -> {_short(b)} (recorded in {run / RUN_FILE})")
    if rank0:
        dropped = repair_log(run / LOG_FILE)
        if dropped:
            notes.append(f"--resume: dropped a torn last line of {run / LOG_FILE} (a kill during its write): {dropped!r}")
    return _start(run, new, notes, rank0, resumed=True, changes=changes)


def _start(run: Path, settings: dict[str, Any], notes: list[str], rank0: bool, *, resumed: bool,
           moved_to: Path | None = None, changes: dict[str, tuple[Any, Any]] | None = None) -> RunDir:
    changes = changes or {}
    if rank0:
        removed = clean_temporaries(run)
        if removed:
            notes.append(f"removed {len(removed)} temporaries a killed run left in {run}: "
                         + ", ".join(str(p.relative_to(run)) for p in removed[:5]) + (" ..." if len(removed) > 5 else ""))
        _write_run_file(run, settings, resumed, changes)
    return RunDir(path=run, resumed=resumed, moved_to=moved_to, notes=tuple(notes), changes=dict(changes),
                  settings=dict(settings))


def _write_run_file(run: Path, settings: dict[str, Any], resumed: bool, changes: dict[str, tuple[Any, Any]]) -> None:
    rf = run / RUN_FILE
    history: list[Any] = []
    if resumed and rf.is_file():
        doc = _read_json(rf)
        history = list(doc.get("history") or []) if isinstance(doc, dict) else []
    history.append({"time": _utc_now().isoformat(timespec="seconds"), "event": "resume" if resumed else "start",
                    "changes": {k: [a, b] for k, (a, b) in sorted(changes.items())}})
    write_json(rf, {"schema": RUN_SCHEMA, "settings": settings, "history": history}, indent=2)


def clean_temporaries(run: str | Path) -> list[Path]:
    """Remove the temporaries a killed writer left in `run` and `run/checkpoints`; returns them."""
    run = Path(run)
    removed = []
    for d in (run, run / "checkpoints"):
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            if _TMP_RE.match(p.name):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def repair_log(path: str | Path) -> str | None:
    """Drop a torn last line of a JSONL log (returns it), add a missing final newline.

    An unreadable line before the last is not a torn write: `RunLogError` names file and line.
    """
    path = Path(path)
    if not path.is_file():
        return None
    raw = path.read_bytes()
    if not raw:
        return None
    lines = raw.split(b"\n")
    ends_clean = lines[-1] == b""
    if ends_clean:
        lines = lines[:-1]
    bad = [i for i, ln in enumerate(lines) if ln.strip() and not _parses(ln)]
    if len(bad) > 1 or (bad and bad[0] != len(lines) - 1):
        raise RunLogError(f"{path}: line {bad[0] + 1} is not JSON and is not a torn last line; the log is damaged: "
                          "remove that line, or start afresh with --overwrite")
    dropped = None
    if bad:
        dropped = lines.pop().decode("utf-8", "replace")
    elif ends_clean:
        return None
    write_text(path, "".join(ln.decode("utf-8", "replace") + "\n" for ln in lines))
    return dropped


def _parses(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return False


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RunDirError(f"{path} cannot be read ({e}); the run directory is damaged: repair or remove the file, "
                          "or start afresh with --overwrite") from None


def _aside_name(run: Path) -> Path:
    stamp = _utc_now().strftime("%Y%m%dT%H%M%SZ")
    base = run.with_name(f"{run.name}.old-{stamp}")
    cand, n = base, 1
    while cand.exists():
        cand = base.with_name(f"{base.name}-{n}")
        n += 1
    return cand


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _plain(obj: Any) -> Any:
    """JSON-normalised (tuples -> lists), so recorded and new settings compare equal."""
    return json.loads(json.dumps(obj, sort_keys=True))


def _short(v: Any) -> str:
    s = json.dumps(v, sort_keys=True)
    return s if len(s) <= 80 else s[:77] + "..."
