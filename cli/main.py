"""The `synthvox` command group.

Each command lives in the module of its part (`cli/engine_cmds.py`, ...) and is imported
only when it runs, so `synthvox --help` is instant and never imports torch. Commands only
parse arguments and call library functions that the tests also call.

Errors are mapped to messages here, once (`LazyGroup.invoke`): a `SynthvoxError` (and the
`ValueError` / `OSError` that library code raises for a bad value or file) becomes
"Error: <message>" on stderr and exit status 1, with no traceback; `synthvox --debug CMD`
lets it through with its traceback. Any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import importlib

import click

__all__ = ["main", "COMMANDS", "user_error"]

#: command name -> ("module:attribute", one-line help). An explicit registry, no scanning.
COMMANDS: dict[str, tuple[str, str]] = {
    # engine
    "templates": ("synthvox.cli.templates_cmds:templates", "Build, ingest and inspect shape template banks."),
    "render": ("synthvox.cli.engine_cmds:render", "Render one sample (labels and views) to an .npz file."),
    "preview": ("synthvox.cli.engine_cmds:preview", "Write PNG montages of a few samples."),
    # pipelines
    "synth-shards": ("synthvox.cli.pipeline_cmds:synth_shards", "Render samples into a sharded store with Dask."),
    "verify": ("synthvox.cli.pipeline_cmds:verify", "Check a store: counts, checksums, decoding, re-rendering."),
    "info": ("synthvox.cli.pipeline_cmds:info", "Summarise a store."),
    "convert": ("synthvox.cli.pipeline_cmds:convert", "Convert a store between full and labels-only content."),
    # train
    "pretrain": ("synthvox.cli.train_cmds:pretrain", "Contrastive pretraining (single process; torchrun for DDP)."),
    "plot-log": ("synthvox.cli.train_cmds:plot_log", "Plot the loss curves of a run as PNG."),
    "probe": ("synthvox.cli.probe_cmds:probe", "Representation probes of a checkpoint beside a random init."),
    "sweep": ("synthvox.cli.probe_cmds:sweep", "A grid of short trainings (Dask), probed per CPU-minute."),
    # downstream
    "features": ("synthvox.cli.downstream_cmds:features", "Dense features of a NIfTI volume from a checkpoint."),
    "register": ("synthvox.cli.downstream_cmds:register", "Deformable registration of a moving image to a fixed one."),
    "export": ("synthvox.cli.export_cmds:export", "Export a checkpoint as a TorchScript or ONNX file that runs without synthvox."),
    "register-batch": ("synthvox.cli.downstream_cmds:register_batch", "Register every pair of a Learn2Reg-style pairs file."),
    "fewshot": ("synthvox.cli.eval_cmds:fewshot", "Few-shot segmentation fine-tuning and evaluation."),
    "report": ("synthvox.cli.eval_cmds:report", "Markdown and HTML report from results records."),
    "eval": ("synthvox.cli.eval_cmds:eval_cmd", "The real-data evaluation of a checkpoint (make eval)."),
    # the whole flow
    "demo": ("synthvox.cli.demo_cmds:demo", "The whole flow end to end on embedded defaults."),
}


def user_error(e: BaseException) -> bool:
    """True for an error whose message is for the user (printed without a traceback)."""
    from synthvox.core.errors import SynthvoxError  # here, not at the top: `--help` imports nothing

    return isinstance(e, (SynthvoxError, ValueError, OSError))


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use and whose errors become messages."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except Exception as e:
            if ctx.params.get("debug") or not user_error(e):
                raise
            raise click.ClickException(str(e)) from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        target, _ = COMMANDS[name]
        module, attr = target.split(":")
        try:
            mod = importlib.import_module(module)
            return getattr(mod, attr)
        except (ImportError, AttributeError) as e:
            return _unavailable(name, f"{target} could not be loaded: {e}")

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help from the registry, so `synthvox --help` imports nothing heavy.
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _unavailable(name: str, why: str) -> click.Command:
    @click.command(name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def cmd() -> None:
        raise click.ClickException(f"'synthvox {name}' is not available: {why}")

    return cmd


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="synthvox")
@click.option("--debug", is_flag=True, help="Show the traceback of an error instead of its message alone.")
def main(debug: bool) -> None:
    """synthvox: learn general-purpose 3D biomedical features from randomized synthesis."""


if __name__ == "__main__":
    main()
