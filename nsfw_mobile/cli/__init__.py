"""The ``nsfw-mobile`` command: thin click commands over the library.

Exit codes (the same for every command):

* 0: success
* 1: error (bad model file, failed conversion, disk full, ...)
* 2: usage error (bad option or combination)
* 3: predict: some input files could not be read (the others were classified)
* 4: validate / release: a candidate model failed validation
* 5: predict --fail-on-flagged: some file scored above --threshold
* 130: interrupted (Ctrl-C); 143: terminated (SIGTERM)
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
    "EXIT_ERROR",
    "EXIT_FLAGGED",
    "EXIT_INTERRUPTED",
    "EXIT_TERMINATED",
    "EXIT_UNREADABLE",
    "EXIT_USAGE",
    "EXIT_VALIDATION_FAILED",
    "main",
]


def _verbosity(ctx: click.Context, param, verbose: bool) -> bool:
    ctx.with_resource(cli_output(verbose))
    ctx.meta["verbose"] = verbose  # commands that explain more read it
    return verbose


VERBOSE = click.Option(
    ["--verbose", "-v"],
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_verbosity,
    help="Also show what TensorFlow, coremltools, LiteRT and ONNX Runtime print (hidden by "
    "default), and why predict chose a release's model.",
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
@click.pass_context
def main(ctx):
    """NSFW image classifier (Neutral / Porn / Sexy) for phones: classify, convert,
    validate and benchmark Core ML, TFLite, TF.js and ONNX models.

    Every command prints only its own lines; --verbose adds what the libraries
    underneath print.

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
