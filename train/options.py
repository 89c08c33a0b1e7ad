"""The one option definition of the trainer, shared by its two front ends.

`synthvox pretrain` (cli/train_cmds.py) and `torchrun train/pretrain.py` (its `main`) both
decorate a click command with `pretrain_options` and call `run_options`. Options that set a
`train:` field default to None, so the YAML config (`--config`) wins where a flag is not
given; the help shows the default that then applies.
"""
from __future__ import annotations

import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable

import click
from torch import nn

from synthvox.core.errors import SynthvoxError

from synthvox.engine.config import EngineConfig, load_engine_config

from .config import TrainConfig, load_train_config
from .ddp import teardown
from .rundir import SETTINGS_FIELDS, parse_fields
from .runlog import ConsoleConfig
from .trainer import pretrain

__all__ = ["pretrain_options", "config_from_options", "run_options", "parse_widths", "ProbeFactory", "main"]

#: builds the validation probe hook of a run (`hook(model, step) -> {"probe/<key>": value}`) from
#: its config and the options; injected by a front end that may import the probes (cli/)
ProbeFactory = Callable[[TrainConfig, dict[str, Any]], Callable[[nn.Module, int], dict[str, float]]]

_DEFAULTS = {f.name: f.default for f in fields(TrainConfig)}


def _d(name: str, none: str = "") -> str:
    v = _DEFAULTS[name]
    if v is None:
        return none
    if isinstance(v, tuple):
        return ",".join(map(str, v))
    return str(v)


def parse_widths(ctx: click.Context | None, param: Any, value: str | None) -> list[int] | None:
    """`--widths 16,32,64` -> [16, 32, 64]; a message naming the value otherwise."""
    if value is None:
        return None
    try:
        widths = [int(w) for w in value.split(",")]
    except ValueError:
        widths = []
    if len(widths) < 2 or any(w < 1 for w in widths):
        raise click.BadParameter(f"{value!r}: give two or more positive integers separated by commas, "
                                 f"e.g. {_d('widths')}", ctx, param)
    return widths


_OPTIONS = [
    # data
    click.option("--store", type=click.Path(file_okay=False), show_default="none: needed with --source store", help="Store directory (made by synthvox synth-shards)."),
    click.option("--source", type=click.Choice(["store", "engine"]), show_default=_d("source"),
                 help="Stream a store, or render samples on the fly on the training device."),
    click.option("--format", "format", type=click.Choice(["auto", "wds", "zarr"]), show_default=_d("format"),
                 help="Store format to read (auto: WebDataset if the store has it)."),
    click.option("--size", type=int, show_default="the engine config's", help="Engine source: volume side (engine.size)."),
    click.option("--workers", type=int, show_default=_d("workers"), help="DataLoader workers per rank (store source)."),
    click.option("--allow-incomplete", is_flag=True, default=False, show_default="off",
                 help="Train on a store whose synth-shards has not finished (its finished tasks only; logged)."),
    click.option("--skip-bad-shards", is_flag=True, default=False, show_default="off",
                 help="Skip a damaged shard with a warning (counted in the log) instead of stopping."),
    # run
    click.option("--out", required=True, type=click.Path(file_okay=False),
                 help="Run directory: checkpoints/, log.jsonl, config.json."),
    click.option("--config", type=click.Path(dir_okay=False), show_default="none: the built-in defaults",
                 help="YAML config (train: and engine: sections); flags override it."),
    click.option("--steps", type=int, show_default=_d("steps"), help="Optimizer steps (the lr schedule's length)."),
    click.option("--stop-after", type=int, show_default="--steps",
                 help="Stop with a checkpoint after this many steps (the schedule keeps --steps)."),
    click.option("--resume", is_flag=True, default=False, show_default="off",
                 help="Continue from RUN's latest checkpoint, exactly."),
    click.option("--overwrite", is_flag=True, default=False, show_default="off",
                 help="Start afresh in an --out that holds a run: the old run is moved aside to RUN.old-<time>, never deleted."),
    click.option("--resume-with-changes", metavar="FIELD,...", show_default="none",
                 help=f"With --resume: allow these recorded settings to differ ({', '.join(SETTINGS_FIELDS)}); "
                      "any other difference is refused."),
    click.option("--elastic", is_flag=True, default=False, show_default="off",
                 help="Allow resuming with another world size or worker count (restarts the stream at the next epoch)."),
    click.option("--device", type=click.Choice(["cpu", "cuda"]), show_default="cuda if available, else cpu",
                 help="Training device (under torchrun: cuda:LOCAL_RANK)."),
    click.option("--seed", type=int, show_default=_d("seed"), help="Seed of the model init, stream order and augmentation."),
    # model, loss, schedule
    click.option("--widths", callback=parse_widths, show_default=_d("widths"), help="UNet widths per level, comma-separated."),
    click.option("--crop", type=int, show_default="the whole volume", help="Random cubic crop side (a multiple of 2**depth)."),
    click.option("--batch-size", type=int, show_default=_d("batch_size"), help="Samples (each with all its views) per rank per step."),
    click.option("--lr", type=float, show_default=_d("lr"), help="Peak learning rate (after the linear warm-up)."),
    click.option("--n-voxels", type=int, show_default=_d("n_voxels"), help="Sampled voxels per view per tap."),
    click.option("--no-augment", is_flag=True, default=False, show_default="off", help="Turn training-time augmentation off."),
    click.option("--compile", is_flag=True, default=False, show_default="off", help="torch.compile the UNet."),
    # validation and logs
    click.option("--val-samples", type=int, show_default=_d("val_samples"), help="Held-out samples (the store's last indices)."),
    click.option("--val-every", type=int, show_default=_d("val_every"), help="Validate (and probe) every this many steps."),
    click.option("--ckpt-every", type=int, show_default=_d("ckpt_every"), help="Checkpoint every this many steps."),
    click.option("--log-every", type=click.IntRange(min=1), default=100, show_default=True,
                 help="Without a terminal: a progress line every this many steps (log.jsonl keeps train.log_every)."),
    click.option("--log-every-s", type=click.FloatRange(min=0), default=60.0, show_default=True,
                 help="Without a terminal: also a progress line when this many seconds passed (0: off)."),
    click.option("--tensorboard", is_flag=True, default=False, show_default="off",
                 help="Also log to RUN/tb (if tensorboard is installed)."),
    click.option("--probes", is_flag=True, default=False, show_default="off",
                 help="Representation probes at every validation (rank 0), logged in log.jsonl as probe/<key>."),
    click.option("--probe-size", type=click.IntRange(min=8), default=96, show_default=True, help="--probes: side of the synthetic probe samples."),
    click.option("--probe-samples", type=click.IntRange(min=1), default=4, show_default=True, help="--probes: synthetic probe pairs."),
    click.option("--probe-real/--no-probe-real", default=True, show_default=True,
                 help="--probes: also the real-data probes (Colin27 registration, PCA image), where their data are installed."),
]


def pretrain_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a click command with every trainer option (the same for both front ends)."""
    for opt in reversed(_OPTIONS):
        f = opt(f)
    return f


def config_from_options(kw: dict[str, Any]) -> tuple[TrainConfig, EngineConfig]:
    """(TrainConfig, EngineConfig) from the YAML file and the flags (flags win)."""
    names = ("steps", "crop", "batch_size", "lr", "workers", "seed", "source", "format", "val_samples", "val_every",
             "ckpt_every", "n_voxels", "widths")
    over: dict[str, Any] = {k: kw.get(k) for k in names}
    if kw.get("no_augment"):
        over["augment.enabled"] = False
    if kw.get("compile"):
        over["compile"] = True
    if kw.get("tensorboard"):
        over["tensorboard"] = True
    return load_train_config(kw.get("config"), **over), load_engine_config(kw.get("config"), size=kw.get("size"))


def run_options(kw: dict[str, Any], log: Callable[[str], None] = print, probe_factory: ProbeFactory | None = None,
                front: str = "synthvox pretrain") -> dict[str, Any]:
    """Train with the parsed options `kw`; rank 0 prints the summary (JSON) last."""
    cfg, ecfg = config_from_options(kw)
    hook = None
    if kw.get("probes"):
        if probe_factory is None:
            raise click.UsageError(f"--probes needs the probes of synthvox.downstream, which {front} does not load: run "
                                   "`torchrun ... -m synthvox.cli.main pretrain --probes ...` instead")
        hook = probe_factory(cfg, kw)
    console = ConsoleConfig(log_every=max(1, int(kw.get("log_every") or 100)), log_every_s=float(kw.get("log_every_s") or 0),
                            live=sys.stdout.isatty())
    summary = pretrain(Path(kw["out"]), cfg, kw.get("store"), resume=kw["resume"], elastic=kw["elastic"],
                       device=kw.get("device"), engine_cfg=ecfg, stop_after=kw.get("stop_after"), log=log,
                       console=console, probe_hook=hook, allow_incomplete=kw["allow_incomplete"],
                       skip_bad_shards=kw["skip_bad_shards"], overwrite=kw.get("overwrite", False),
                       resume_with_changes=parse_fields(kw.get("resume_with_changes")))
    if summary["rank"] == 0:
        log(json.dumps(summary))
    return summary


@click.command("pretrain", context_settings={"help_option_names": ["-h", "--help"]})
@pretrain_options
def _torchrun_command(**kw: Any) -> None:
    """Contrastive pretraining, one process of a torchrun run (the options of `synthvox pretrain`;
    --probes needs `torchrun ... -m synthvox.cli.main pretrain`)."""
    run_options(kw, front="train/pretrain.py")


def main(argv: list[str] | None = None) -> int:
    """The torchrun entry (`torchrun --nproc_per_node=G train/pretrain.py ...`): a user error is a
    message and exit status 2, with no traceback."""
    try:
        _torchrun_command.main(args=argv, prog_name="pretrain", standalone_mode=False)
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.Abort:
        print("pretrain: aborted", file=sys.stderr)
        return 1
    except click.ClickException as e:
        e.show()
        return 2
    except (SynthvoxError, ValueError, OSError) as e:
        print(f"pretrain: error: {e}", file=sys.stderr)
        return 2
    finally:
        teardown()
    return 0
