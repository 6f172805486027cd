"""The ``nsfw-mobile`` command: thin click commands over the library.

Exit codes (the same for every command):

* 0: success
* 1: error (bad model file, failed conversion, disk full, ...)
* 2: usage error (bad option or combination, an option that does not apply to what was
  chosen, or a path that does not exist: every command, arguments and options alike)
* 3: predict: some input files could not be read (the others were classified)
* 4: validate / release: a candidate model failed validation
* 5: predict --fail-on-flagged: some file scored above --threshold
* 130: interrupted (Ctrl-C); 143: terminated (SIGTERM)
* 141: stdout was closed by its reader (``nsfw-mobile predict dir | head -1``): the command
  stops quietly, as a shell reports a command ended by SIGPIPE

Conventions: ``--threads N`` is always the number of threads each model's engine uses;
``--json`` puts the result on stdout and keeps stderr to warnings, notes and errors
(progress lines are shown only without it); ``-v/--verbose`` goes before or after the
command name.
"""

from __future__ import annotations

import click

from .. import __version__
from ..quiet import cli_output
from . import bench as bench_commands
from . import convert as convert_commands
from . import models as model_commands
from . import predict as predict_commands
from . import train as train_commands
from .common import (
    EXIT_BROKEN_PIPE,
    EXIT_ERROR,
    EXIT_FLAGGED,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_UNREADABLE,
    EXIT_USAGE,
    EXIT_VALIDATION_FAILED,
    install_signal_handlers,
    run_with_exit_codes,
)

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_ERROR",
    "EXIT_FLAGGED",
    "EXIT_INTERRUPTED",
    "EXIT_TERMINATED",
    "EXIT_UNREADABLE",
    "EXIT_USAGE",
    "EXIT_VALIDATION_FAILED",
    "main",
]


VERBOSE_HELP = "Also show what TensorFlow, coremltools and LiteRT print (hidden by default)."


def _remember_verbose(ctx: click.Context, param, verbose: bool) -> None:
    """-v before the command name: kept for the command (ctx.meta is shared down the chain)."""
    if verbose:
        ctx.meta["nsfw_mobile.verbose"] = True


def _verbosity(ctx: click.Context, param, verbose: bool) -> None:
    ctx.with_resource(cli_output(verbose or ctx.meta.get("nsfw_mobile.verbose", False)))


VERBOSE = click.Option(
    ["--verbose", "-v"],
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_verbosity,
    help=VERBOSE_HELP,
)


class ToolkitGroup(click.Group):
    """Every command gets --verbose and the toolkit's exit codes."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        cmd.params.append(VERBOSE)
        super().add_command(cmd, name)

    def invoke(self, ctx: click.Context):
        return run_with_exit_codes(lambda: super(ToolkitGroup, self).invoke(ctx))


@click.group(cls=ToolkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nsfw-mobile")
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_remember_verbose,
    help=VERBOSE_HELP,
)
@click.pass_context
def main(ctx):
    """NSFW image classifier (Neutral / Porn / Sexy) for phones: classify, convert,
    validate and benchmark Core ML and TFLite models.

    Every command prints only its own lines; -v/--verbose (before or after the
    command name) adds what the libraries underneath print.

    \b
    Examples:
      nsfw-mobile predict photos/
      nsfw-mobile convert --to all --out dist/
      nsfw-mobile validate dist/*.tflite dist/NSFW.mlmodel
    """
    install_signal_handlers(ctx)


for module in (
    predict_commands,
    convert_commands,
    model_commands,
    train_commands,
    bench_commands,
):
    for command in module.COMMANDS:
        main.add_command(command)
