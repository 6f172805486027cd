"""What every command shares: exit codes, error handling, output and shared options."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import click

from ..errors import NsfwMobileError, UsageError, ValidationFailed

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREADABLE = 3
EXIT_VALIDATION_FAILED = 4
EXIT_FLAGGED = 5
EXIT_INTERRUPTED = 130
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
    """SIGTERM, raised so that cleanup (``.partial-*`` files) runs as for Ctrl-C."""


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
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        fail(f"Error: {exc.strerror or exc}{where}", EXIT_ERROR)
    except KeyboardInterrupt:
        fail("Interrupted", EXIT_INTERRUPTED)
    except Terminated:
        fail("Terminated", EXIT_TERMINATED)


def echo_json(document) -> None:
    click.echo(json.dumps(document, sort_keys=False))


def thread_counts(text: str) -> tuple[int, ...]:
    """Parse a --threads value such as "1,2"."""
    try:
        counts = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise UsageError(f"--threads {text!r}: give comma-separated integers such as 1,2") from None
    if not counts or min(counts) < 1:
        raise UsageError(f"--threads {text!r}: give thread counts of 1 or more")
    return counts


# ------------------------------------------------------------------ shared options


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
        "--calibration", type=click.Path(path_type=Path), default=None, help=help_text
    )


def images_option(
    help_text: str = "Images or folders to compare on (default: the shipped sample images).",
):
    return click.option(
        "--images",
        "image_paths",
        multiple=True,
        type=click.Path(exists=True, path_type=Path),
        help=help_text,
    )


def threads_option(help_text: str, *, counts: bool = False):
    """--threads N, or a comma-separated list of counts for benchmarks."""
    if counts:
        return click.option("--threads", default="1", show_default=True, help=help_text)
    return click.option("--threads", type=click.IntRange(1), default=None, help=help_text)


def unsafe_option():
    return click.option(
        "--unsafe",
        is_flag=True,
        help="Allow .keras models with Lambda layers (runs their code).",
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
