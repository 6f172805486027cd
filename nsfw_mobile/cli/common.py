"""What every command shares: exit codes, error handling, output and shared options."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path

import click

from ..errors import MissingFileError, NsfwMobileError, UsageError, ValidationFailed
from ..export import MIN_CALIBRATION_IMAGES

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
    **dict.fromkeys(("starlette", "uvicorn", "multipart", "prometheus_client"), "serve"),
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
    """A path that must exist (images, folders, data; not a model: see ``MODEL``).

    A missing path is a usage error (exit 2) in every command, with the same message as
    the resolver's ``MissingFileError``.
    """

    name = "path"

    def __init__(self, *, file_okay=True, dir_okay=True):
        self.file_okay, self.dir_okay = file_okay, dir_okay

    def convert(self, value, param, ctx):
        path = Path(value)
        if not path.exists():
            self.fail(str(MissingFileError(value)), param, ctx)
        if not self.dir_okay and path.is_dir():
            self.fail(f"{value}: a folder, expected a file", param, ctx)
        if not self.file_okay and not path.is_dir():
            self.fail(f"{value}: a file, expected a folder", param, ctx)
        return path


class ModelArgument(click.ParamType):
    """A model as the user wrote it, kept as text: ``resolve.resolve_model`` decides what
    it is (a zoo name, a file, a release folder), the same way in every command. Click
    leaves the text alone, so ``./mid`` stays a path and ``mid`` a name."""

    name = "model"

    def convert(self, value, param, ctx):
        return value if isinstance(value, str) else str(value)


MODEL = ModelArgument()


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
    f"(at least {MIN_CALIBRATION_IMAGES}; hundreds of your own images calibrate best).",
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


def model_option(help_text: str):
    """--model NAME|FILE, for commands that also take the model as their MODEL argument."""
    return click.option("--model", "model_option", type=MODEL, default=None, help=help_text)


def one_model(argument, option):
    """The model given as MODEL or as --model (not both)."""
    if argument is not None and option is not None:
        raise UsageError(f"give the model once: MODEL ({argument}) or --model ({option})")
    return option if option is not None else argument


def explain_model(ref, *, as_json: bool = False) -> None:
    """Say which model runs: a model chosen from a release always (one line), and with
    --verbose the resolver's reason and figures (with --json as one JSON object), on stderr."""
    ctx = click.get_current_context(silent=True)
    verbose = bool(ctx and ctx.meta.get("verbose"))
    if verbose and as_json:
        click.echo(json.dumps({"model": ref.to_dict()}), err=True)
    elif verbose:
        for line in ref.explain():
            click.echo(line, err=True)
    elif ref.kind in ("release", "zoo") and ref.path is not None:
        click.echo(f"using {ref.why}", err=True)


def progress_line(quiet: bool):
    """Where a command's library reports a line (a zoo model's first fetch): stderr, or
    nowhere with --json."""
    return (lambda line: None) if quiet else (lambda line: click.echo(line, err=True))


def registry_words() -> dict[str, str]:
    """What a command's docstring writes as {file_types}, {engines}, {targets}, {formats},
    {batched} or {min_calibration}: lists generated from the registry, never by hand."""
    from .. import formats
    from ..video import VIDEO_THRESHOLD

    return {
        "{file_types}": formats.file_types_help(),
        "{engines}": formats.engines_help(),
        "{targets}": formats.targets_help(),
        "{formats}": formats.formats_help(),
        "{batched}": formats.batched_help(),
        "{min_calibration}": str(MIN_CALIBRATION_IMAGES),
        "{video_threshold}": f"{VIDEO_THRESHOLD:g}",
    }


def fill_help(command: click.Command) -> None:
    """Put the registry's lists into a command's help and its options' help."""
    words = registry_words()

    def fill(text):
        for word, value in words.items():
            text = text.replace(word, value) if text else text
        return text

    command.help = fill(command.help)
    for param in command.params:
        if isinstance(param, click.Option):
            param.help = fill(param.help)
