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

import contextlib
import inspect as pyinspect
import signal
import sys

import click

from ..quiet import cli_output
from ..version import __version__
from . import bench as bench_commands
from . import convert as convert_commands
from . import evaluate as evaluate_commands
from . import formats as formats_commands
from . import import_tfjs as import_tfjs_commands
from . import inspect as inspect_commands
from . import models as model_commands
from . import predict as predict_commands
from . import release as release_commands
from . import serve as serve_commands
from . import train as train_commands
from . import validate as validate_commands
from .common import (
    EXIT_BROKEN_PIPE,
    EXIT_ERROR,
    EXIT_FLAGGED,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_UNREADABLE,
    EXIT_USAGE,
    EXIT_VALIDATION_FAILED,
    Terminated,
    fill_help,
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
    "run",
]


VERBOSE_HELP = (
    "Also show what TensorFlow, coremltools, LiteRT and ONNX Runtime print (hidden by "
    "default), and why predict chose a release's model."
)


def _remember_verbose(ctx: click.Context, param, verbose: bool) -> None:
    """-v before the command name: kept for the command (ctx.meta is shared down the chain)."""
    if verbose:
        ctx.meta["nsfw_mobile.verbose"] = True


def _verbosity(ctx: click.Context, param, verbose: bool) -> bool:
    verbose = verbose or ctx.meta.get("nsfw_mobile.verbose", False)
    ctx.with_resource(cli_output(verbose))
    ctx.meta["verbose"] = verbose  # commands that explain more read it
    return verbose


VERBOSE = click.Option(
    ["--verbose", "-v"],
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_verbosity,
    help=VERBOSE_HELP,
)


HELP_OPTIONS = ["-h", "--help"]

COMMAND_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Use a model", ("predict", "serve", "inspect", "models")),
    ("Convert and ship", ("convert", "validate", "release", "bench", "formats", "import-tfjs")),
    ("Your own model", ("train", "evaluate")),
)
"""How `nsfw-mobile --help` groups the commands, by task (a test checks that every command
is in exactly one group)."""

EXAMPLES = "Examples:"


def examples_last(command: click.Command) -> None:
    """Move the examples that end a command's docstring after its options (the epilog), so
    that --help ends with them; the docstring keeps them where a reader of the code looks."""
    text = pyinspect.cleandoc(command.help or "")
    head, marker, examples = text.rpartition(EXAMPLES)
    if not marker or command.epilog:
        return
    command.help = head.rstrip().removesuffix("\b").rstrip()
    command.epilog = f"\b\n{EXAMPLES}{examples}"


class ToolkitGroup(click.Group):
    """Every command gets --verbose and the toolkit's exit codes; --help lists the commands
    by task (COMMAND_GROUPS) and ends with examples."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        cmd.params.append(VERBOSE)
        # -h as well as --help, also where the command is rendered on its own (the docs)
        cmd.context_settings.setdefault("help_option_names", HELP_OPTIONS)
        fill_help(cmd)
        examples_last(cmd)
        super().add_command(cmd, name)

    def invoke(self, ctx: click.Context):
        return run_with_exit_codes(lambda: super(ToolkitGroup, self).invoke(ctx))

    def command_sections(self) -> list[tuple[str, list[str]]]:
        """(title, command names) in help order; a command no group names comes last, under
        "Other commands", rather than not at all."""
        sections = [
            (title, [n for n in names if n in self.commands]) for title, names in COMMAND_GROUPS
        ]
        grouped = {name for _, names in COMMAND_GROUPS for name in names}
        others = sorted(set(self.commands) - grouped)
        return [s for s in sections if s[1]] + ([("Other commands", others)] if others else [])

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections = self.command_sections()
        widest = max((len(n) for _, names in sections for n in names), default=0)
        limit = formatter.width - 6 - widest
        for title, names in sections:
            rows = [(n.ljust(widest), self.commands[n].get_short_help_str(limit)) for n in names]
            with formatter.section(title):
                formatter.write_dl(rows)


@click.group(cls=ToolkitGroup, context_settings={"help_option_names": HELP_OPTIONS})
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
    """NSFW image classifier (Neutral / Porn / Sexy) for phones and servers: classify
    photos and videos, convert a model to Core ML, TFLite, TF.js and ONNX, validate and
    benchmark every file.

    Every command prints only its own lines; -v/--verbose (before or after the
    command name) adds what the libraries underneath print.

    \b
    Examples:
      nsfw-mobile predict photos/
      nsfw-mobile release --out dist/
      nsfw-mobile validate dist/*.tflite --images photos/
    """
    install_signal_handlers(ctx)


for module in (
    predict_commands,
    serve_commands,
    convert_commands,
    formats_commands,
    import_tfjs_commands,
    validate_commands,
    inspect_commands,
    model_commands,
    train_commands,
    evaluate_commands,
    bench_commands,
    release_commands,
):
    for command in module.COMMANDS:
        main.add_command(command)
examples_last(main)


SIGNAL_EXIT_CODES = {signal.SIGINT: EXIT_INTERRUPTED, signal.SIGTERM: EXIT_TERMINATED}


def run() -> None:
    """The process's entry point (the ``nsfw-mobile`` script and ``python -m nsfw_mobile.cli``):
    ``main``, then an exit code that no signal can be lost from.

    A SIGINT or SIGTERM at any moment, also while the command's context closes or the
    process ends, exits 130 / 143, never 0: while the command runs the signal raises (so
    partial files are removed); once it is over the signal is counted; and once the exit
    code is chosen the signals get their default action (the process ends by the signal,
    which a shell reports as 130 / 143), as Python's own handlers would only set a flag
    that nobody reads during shutdown.
    """
    from ..pause import phase

    received: list[int] = []

    def raise_for(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt if signum == signal.SIGINT else Terminated()

    def count(signum, frame):
        received.append(signum)

    for signum in SIGNAL_EXIT_CODES:
        signal.signal(signum, raise_for)
    code = 0
    try:
        try:
            main()  # standalone: always ends in SystemExit
        except SystemExit as exc:
            code = exc.code
        phase("exit")
    except (KeyboardInterrupt, Terminated):  # landed while the context closed, or at "exit"
        pass
    for signum in SIGNAL_EXIT_CODES:
        signal.signal(signum, count)
    with contextlib.suppress(Exception):  # stdout closed by its reader: nothing to flush
        sys.stdout.flush()
        sys.stderr.flush()
    for signum in SIGNAL_EXIT_CODES:
        signal.signal(signum, signal.SIG_DFL)
    if received and code != SIGNAL_EXIT_CODES[received[0]]:  # it landed after the command
        code = SIGNAL_EXIT_CODES[received[0]]
        with contextlib.suppress(Exception):
            sys.stderr.write(f"{'Interrupted' if received[0] == signal.SIGINT else 'Terminated'}\n")
    sys.exit(code)
