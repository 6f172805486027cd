"""What every command shares: exit codes, error handling, output and shared options."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path

import click

from ..errors import NsfwMobileError, UsageError, ValidationFailed
from ..formats import PRETRAINED

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREADABLE = 3
EXIT_VALIDATION_FAILED = 4
EXIT_FLAGGED = 5
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141
"""128 + SIGPIPE, as a shell reports a command whose reader went away (``| head -1``)."""
EXIT_TERMINATED = 143

# Modules of the optional extras: commands that need them say how to install them.
EXTRA_OF_MODULE = {
    **dict.fromkeys(
        ("tensorflow", "keras", "coremltools", "matplotlib", "tensorboard", "onnx", "tf2onnx"),
        "full",
    ),
    "onnxruntime": "onnx",
}


class Terminated(BaseException):
    """SIGTERM, raised so that cleanup (``.nsfw-mobile-partial-*`` entries) runs as for Ctrl-C."""


def _raise_terminated(signum, frame):
    raise Terminated()


def install_signal_handlers(ctx: click.Context) -> None:
    """Turn SIGTERM into an exception for the length of the command."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: leave signals alone
        return
    ctx.call_on_close(lambda: signal.signal(signal.SIGTERM, previous))


def fail(message: str, code: int) -> None:
    click.echo(message, err=True)
    sys.exit(code)


def _quiet_broken_pipe() -> None:
    """The reader of stdout went away (``| head -1``): end quietly. stdout now points at
    /dev/null, so that Python's flush at exit does not report the broken pipe again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    sys.exit(EXIT_BROKEN_PIPE)


def run_with_exit_codes(invoke):
    """Run a command; library errors become one-line messages and documented exit codes."""
    try:
        return invoke()
    except UsageError as exc:
        fail(f"Usage error: {exc}", EXIT_USAGE)
    except ValidationFailed as exc:
        fail(f"Validation failed: {exc}", EXIT_VALIDATION_FAILED)
    except NsfwMobileError as exc:
        fail(f"Error: {exc}", EXIT_ERROR)
    except ModuleNotFoundError as exc:
        extra = EXTRA_OF_MODULE.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        fail(
            f"Error: this needs {exc.name}, which a runtime-only install leaves out: "
            f"pip install 'nsfw-mobile[{extra}]'",
            EXIT_ERROR,
        )
    except BrokenPipeError:
        _quiet_broken_pipe()
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        fail(f"Error: {exc.strerror or exc}{where}", EXIT_ERROR)
    except KeyboardInterrupt:
        fail("Interrupted", EXIT_INTERRUPTED)
    except Terminated:
        fail("Terminated", EXIT_TERMINATED)


def echo_json(document) -> None:
    click.echo(json.dumps(document, sort_keys=False))


def given(ctx: click.Context, name: str) -> bool:
    """Whether the user set parameter ``name`` (on the command line or in the environment)
    rather than leaving its default."""
    source = ctx.get_parameter_source(name)
    return source is not None and source is not click.core.ParameterSource.DEFAULT


def refuse_given(ctx: click.Context, names: dict[str, str], reason: str) -> None:
    """A usage error naming every option of ``names`` (parameter -> flag) the user set."""
    chosen = [flag for name, flag in names.items() if given(ctx, name)]
    if chosen:
        raise UsageError(f"{', '.join(chosen)}: {reason}")


def check_unsafe(model, unsafe: bool) -> None:
    """--unsafe applies to .keras model files only (Lambda layers run Python code)."""
    from ..formats import KERAS, file_type_of, is_named_model

    if not unsafe:
        return
    if model is None or is_named_model(model) or file_type_of(model) is not KERAS:
        raise UsageError(
            f"--unsafe applies to .keras model files only (their Lambda layers run code); "
            f"{model or PRETRAINED} is not one: drop --unsafe"
        )


def thread_counts(text: str) -> tuple[int, ...]:
    """Parse a --thread-counts value such as "1,2"."""
    try:
        counts = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise UsageError(
            f"--thread-counts {text!r}: give comma-separated integers such as 1,2"
        ) from None
    if not counts or min(counts) < 1:
        raise UsageError(f"--thread-counts {text!r}: give thread counts of 1 or more")
    return counts


# ------------------------------------------------------------------ parameter types


class ExistingPath(click.ParamType):
    """A path that must exist, or (with ``model_names``) a zoo model's name such as
    'pretrained' or 'mid', returned as text: a name wins over a file of the same name.

    A missing path is a usage error (exit 2) in every command, with the same message.
    """

    name = "path"

    def __init__(self, *, model_names: bool = False, file_okay=True, dir_okay=True):
        self.model_names, self.file_okay, self.dir_okay = model_names, file_okay, dir_okay

    def convert(self, value, param, ctx):
        if isinstance(value, str) and self.model_names:
            from ..formats import is_named_model

            if is_named_model(value):
                return value
        path = Path(value)
        if not path.exists():
            self.fail(f"{value}: no such file or folder", param, ctx)
        if not self.dir_okay and path.is_dir():
            self.fail(f"{value}: a folder, expected a file", param, ctx)
        if not self.file_okay and not path.is_dir():
            self.fail(f"{value}: a file, expected a folder", param, ctx)
        return path


MODEL_PATH = ExistingPath(model_names=True)
"""A model file or folder that exists, or a zoo model's name ('pretrained', 'mid', ...)."""


class EngineThreads(click.IntRange):
    """--threads N: threads each model's engine may use; one number."""

    name = "n"

    def __init__(self, several_hint: str = ""):
        super().__init__(min=1)
        self.several_hint = several_hint

    def convert(self, value, param, ctx):
        if isinstance(value, str) and "," in value:
            self.fail(f"{value!r}: --threads takes one number{self.several_hint}", param, ctx)
        return super().convert(value, param, ctx)


# ------------------------------------------------------------------ shared options


def threads_option(help_text: str, *, several_hint: str = ""):
    """--threads N: engine threads per model, the one meaning of --threads in every command."""
    return click.option("--threads", type=EngineThreads(several_hint), default=None, help=help_text)


def renamed_option(old: str, new: str, meaning: str):
    """A hidden option for a name that meant something else here: refused, naming the new."""

    def refuse(ctx, param, value):
        if value is not None:
            raise click.UsageError(f"{old} is now {new} ({meaning})", ctx)

    return click.option(old, hidden=True, expose_value=False, callback=refuse)


def json_option(help_text: str = "Print the result as JSON."):
    return click.option("--json", "as_json", is_flag=True, help=help_text)


def out_dir_option(help_text: str, **kwargs):
    return click.option(
        "--out",
        "out_dir",
        type=click.Path(file_okay=False, path_type=Path),
        help=help_text,
        **kwargs,
    )


def calibration_option(
    help_text: str = "Folder of representative images for full-integer TFLite and int8 ONNX "
    "(at least 20).",
):
    return click.option(
        "--calibration", type=ExistingPath(file_okay=False), default=None, help=help_text
    )


def images_option(
    help_text: str = "Images or folders to compare on (default: the shipped sample images).",
):
    return click.option(
        "--images", "image_paths", multiple=True, type=ExistingPath(), help=help_text
    )


def unsafe_option():
    return click.option(
        "--unsafe",
        is_flag=True,
        help="Allow .keras models with Lambda layers (runs their code; .keras files only).",
    )


def preprocess_option():
    """--preprocess KEY=VALUE: what an ONNX source expects, built into the imported model."""
    return click.option(
        "--preprocess",
        "preprocess",
        multiple=True,
        metavar="KEY=VALUE",
        help="For an .onnx source: what it expects beyond RGB pixels squashed to its size, "
        "built into the imported model (repeat): scale=1/255, mean=R,G,B, std=R,G,B, "
        "order=BGR, resize=256 with crop=224 (a centre crop of a larger squash), softmax=true "
        "(it outputs logits). Adds to a preprocessor_config.json beside the file and must "
        "agree with it.",
    )


def check_preprocess(model, preprocess) -> None:
    """--preprocess applies to .onnx sources only."""
    from ..formats import is_named_model

    if preprocess and (
        model is None or is_named_model(model) or Path(str(model)).suffix.lower() != ".onnx"
    ):
        raise UsageError(
            f"--preprocess applies to .onnx source models only; {model or PRETRAINED} is not "
            "one: drop --preprocess"
        )


def report_option(help_text: str):
    return click.option(
        "--report",
        "report_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help=help_text,
    )


CONTRACT_OPTIONS = (
    click.option("--name", default=None, help="Model name (also the artefacts' file name stem)."),
    click.option("--model-version", default=None, help="Model version, such as 2.1."),
    click.option("--author", default=None, help="Author recorded in every artefact."),
    click.option("--license", "license_", default=None, help="Licence, such as Apache-2.0."),
    click.option("--description", default=None, help="One-line description of the model."),
)
CONTRACT_FLAGS = {
    "name": "--name",
    "model_version": "--model-version",
    "author": "--author",
    "license_": "--license",
    "description": "--description",
}


def contract_options(command):
    """--name, --model-version, --author, --license, --description: override the contract."""
    for option in reversed(CONTRACT_OPTIONS):
        command = option(command)
    return command


def contract_changes(name, model_version, author, license_, description) -> dict:
    return {
        "name": name,
        "version": model_version,
        "author": author,
        "license": license_,
        "description": description,
    }


def write_text_atomically(path: Path, text: str) -> None:
    from ..atomic import atomic_path

    with atomic_path(path) as temporary:
        temporary.write_text(text)


# ------------------------------------------------------------------ progress


class Progress:
    """Progress of a long command on stderr: the library's lines (each stage, each file as
    it completes) and, on a terminal, a bar for the stage under way. Silent when ``quiet``
    (--json: stdout carries the document, stderr only warnings and errors)."""

    def __init__(self, *, quiet: bool):
        self.quiet = quiet
        self.bar = None
        self.stage = None
        self.on_terminal = not quiet and sys.stderr.isatty()

    def line(self, text: str) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            click.echo("\r\033[K", err=True, nl=False)  # the bar's line makes way
        click.echo(text, err=True)
        if self.bar is not None:
            self.bar.render_progress()

    def advance(self, stage: str, done: int, total: int) -> None:
        """``done`` of ``total`` items of ``stage`` are finished."""
        if not self.on_terminal or total <= 0:
            return
        if self.bar is None or self.stage != stage:
            self.close()
            self.stage = stage
            self.bar = click.progressbar(length=total, label=stage, file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done - self.bar.pos)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar, self.stage = None, None


# ------------------------------------------------------------------ models by name

MODEL_NAMES_HELP = "a zoo model's name (see `nsfw-mobile models`)"


def model_option(help_text: str):
    """--model NAME|FILE, for commands that also take the model as their MODEL argument."""
    return click.option("--model", "model_option", default=None, metavar="MODEL", help=help_text)


def one_model(argument, option):
    """The model given as MODEL or as --model (not both)."""
    if argument is not None and option is not None:
        raise UsageError(f"give the model once: MODEL ({argument}) or --model ({option})")
    return option if option is not None else argument


def fetch_named_model(model) -> None:
    """A zoo model whose weights are not fetched yet: fetch them now, saying so on stderr.

    The library fetches silently on first use; the command line shows what takes the time.
    """
    from ..zoo import find, is_zoo_name

    named = find(model) if is_zoo_name(model) else None
    if named is not None and named.status == "not fetched":
        named.model_json(log=lambda line: click.echo(line, err=True))
