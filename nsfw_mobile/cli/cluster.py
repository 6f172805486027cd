"""``nsfw-mobile predict ... --ray [ADDRESS] --out DIR``: the same classification on Ray.

The options live here and are added to ``predict``; Ray itself is imported only when
a run uses it, so ``nsfw-mobile --help`` stays fast and a missing Ray costs one line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import time

import click

from ..errors import UsageError
from .common import EXIT_FLAGGED, EXIT_UNREADABLE, ExistingPath

LOCAL = "local"
ADDRESS = re.compile(r"(auto|local|ray://\S+|[\w.-]+:\d+)")
APPLIES_ON_RAY = {
    "paths", "model", "threshold", "fail_on_flagged", "batch_size", "unsafe",
    "ray_address", "out_dir", "actors", "verbose",
}  # fmt: skip
"""predict's options that mean something with --ray; any other one given is refused."""


class InputPath(ExistingPath):
    """A local path that exists (as ``pathlib.Path``), or a URI kept as text (``Path`` would
    fold its ``//``): URIs are read by Ray's file systems, so only --ray takes them."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and "://" in value:
            return value
        return super().convert(value, param, ctx)


INPUT_PATH = InputPath()


def ray_options(command):
    """--ray [ADDRESS], --out DIR and --actors N, added to ``predict``."""
    options = (
        click.option(
            "--ray",
            "ray_address",
            is_flag=False,
            flag_value=LOCAL,
            default=None,
            metavar="[ADDRESS]",
            help="Classify on Ray and write Parquet under --out: ADDRESS as ray.init takes it "
            "('auto': the cluster this machine belongs to; HOST:6379); alone, a new local "
            "Ray on this machine's cores. Images only. Needs the ray extra.",
        ),
        click.option(
            "--out",
            "out_dir",
            default=None,
            metavar="DIR",
            help="With --ray: a new or empty folder (or s3://, gs:// URI) for the Parquet files, "
            "one row per file with the columns of --csv.",
        ),
        click.option(
            "--actors",
            type=click.IntRange(1),
            default=None,
            help="With --ray: model copies, one CPU each (default: one per CPU of the cluster).",
        ),
    )
    for option in reversed(options):
        command = option(command)
    return command


def check_ray_options(ctx: click.Context) -> None:
    """Refuse predict options that do not apply with --ray, and --out or --actors without it."""
    params = ctx.params
    uris = [p for p in params["paths"] if isinstance(p, str)]
    if params["ray_address"] is None:
        if uris:
            raise UsageError(f"{uris[0]}: URIs are read on Ray only (add --ray)")
        given = [name for name in ("out_dir", "actors") if params.get(name) is not None]
        if given:
            raise UsageError(
                f"--{given[0].removesuffix('_dir')} applies with --ray only (Parquet output); "
                "on one machine use --json or --csv"
            )
        return
    if not ADDRESS.fullmatch(params["ray_address"]):
        raise UsageError(
            f"--ray {params['ray_address']}: not a Ray address (auto, ray://HOST:PORT, HOST:PORT); "
            "put --ray after the paths, or write --ray local"
        )
    if uris and len(uris) != len(params["paths"]):
        raise UsageError("local paths and URIs together: Ray reads from one file system per run")
    if params["out_dir"] is None:
        raise UsageError("--ray needs --out DIR: the folder for the Parquet files")
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)
        if param.name not in APPLIES_ON_RAY and source == click.core.ParameterSource.COMMANDLINE:
            raise UsageError(
                f"{param.opts[0]} does not apply with --ray (Parquet files under --out, "
                "images only)"
            )


@contextlib.contextmanager
def _progress_bars():
    """Let tqdm draw Ray's progress bars: the command line hides tqdm bars by default
    (TQDM_DISABLE, for coremltools), and tqdm reads that when it is imported, so this
    comes before importing Ray."""
    hidden = os.environ.pop("TQDM_DISABLE", None)
    try:
        yield
    finally:
        if hidden is not None:
            os.environ["TQDM_DISABLE"] = hidden


@contextlib.contextmanager
def _ray_lines_hidden(verbose: bool):
    """Without --verbose, nothing of Ray's on the terminal but its progress bars.

    Ray's C++ core writes its own lines to file descriptor 2, among them an error-level
    one on every actor pool that may restart actors
    (https://github.com/ray-project/ray/issues/53727), and Ray Data's loggers hold the
    stderr of their import: for the run, descriptor 2 goes to a temporary file while
    Python's sys.stderr (the bars, the toolkit's lines) stays on the terminal. If the run
    fails, the end of that file is shown.
    """
    if verbose:
        yield
        return
    data_logger = logging.getLogger("ray.data")  # set up by `import ray.data`
    level = data_logger.level
    data_logger.setLevel(logging.WARNING)
    sys.stderr.flush()
    saved = os.dup(2)
    terminal = os.fdopen(os.dup(2), "w", buffering=1, errors="backslashreplace")
    with tempfile.TemporaryFile() as ray_lines:
        os.dup2(ray_lines.fileno(), 2)
        try:
            with contextlib.redirect_stderr(terminal):
                yield
        except BaseException:
            ray_lines.seek(0)
            tail = ray_lines.read().decode(errors="replace").splitlines()[-20:]
            terminal.write("".join(f"{line}\n" for line in tail))
            raise
        finally:
            terminal.flush()
            os.dup2(saved, 2)
            os.close(saved)
            terminal.close()
            data_logger.setLevel(level)


def predict_on_ray(
    paths, *, model, output_class, threshold, fail_on_flagged, batch_size, unsafe,
    ray_address, out_dir, actors,
):  # fmt: skip
    """predict's run on Ray. ``model``: the ModelRef --model resolved to (workers resolve
    it again on their side); ``output_class`` is predict's own (passed in: predict imports
    this module)."""
    from .. import distributed
    from ..quiet import verbose

    distributed.check_out(out_dir)
    with model.open_runner(num_threads=1) as runner:  # checked before Ray
        labels = list(runner.labels)
    if not runner.contract.nsfw_labels:
        click.echo(f"note: {runner.name} names no NSFW labels: no nsfw_score", err=True)
    loud = verbose()

    def show_plan(plan) -> None:
        if loud:
            click.echo(plan.describe(), err=True)

    with _progress_bars():
        ray = distributed.require_ray()
        with _ray_lines_hidden(loud):
            options = {"logging_level": logging.INFO if loud else logging.ERROR,
                       "log_to_driver": loud}  # fmt: skip
            if ray_address == LOCAL:  # a new Ray, even if `ray start` made one on this machine
                ray.init(address="local", include_dashboard=False, **options)
            else:
                ray.init(address=ray_address, **options)
            try:
                started = time.perf_counter()
                summary = distributed.run(
                    paths, out_dir, model=model, labels=labels, threshold=threshold,
                    batch_size=batch_size, actors=actors, allow_unsafe=unsafe,
                    on_plan=show_plan,
                )  # fmt: skip
                seconds = time.perf_counter() - started
            finally:
                ray.shutdown()
    output = output_class(labels, fmt="json", threshold=threshold, only_flagged=False)
    output.by_label, output.flagged = summary.by_label, summary.flagged
    output.errors, output.skipped = summary.errors, summary.skipped
    click.echo(f"wrote {summary.rows} rows to {out_dir} (Parquet)", err=True)
    if summary.errors:
        total = summary.rows - summary.skipped
        click.echo(f"{summary.errors} of {total} files could not be read", err=True)
    click.echo(output.summary(seconds), err=True)
    if fail_on_flagged and summary.flagged:
        sys.exit(EXIT_FLAGGED)
    if summary.errors:
        sys.exit(EXIT_UNREADABLE)
