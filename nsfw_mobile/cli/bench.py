"""``bench`` and ``release``: measuring and shipping models."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..errors import UsageError
from .common import (
    CONTRACT_FLAGS,
    EXIT_VALIDATION_FAILED,
    MODEL_NAMES_HELP,
    MODEL_PATH,
    ExistingPath,
    Progress,
    calibration_option,
    contract_changes,
    contract_options,
    echo_json,
    fetch_named_model,
    images_option,
    json_option,
    model_option,
    one_model,
    out_dir_option,
    refuse_given,
    report_option,
    thread_counts,
    threads_option,
    write_text_atomically,
)
from .convert import choose_formats, format_options


def runs_options(runs: int, seconds: float):
    def decorate(command):
        command = click.option(
            "--seconds",
            type=click.FloatRange(0),
            default=seconds,
            show_default=True,
            help="Minimum seconds of timed runs per artefact.",
        )(command)
        return click.option(
            "--runs",
            type=click.IntRange(1),
            default=runs,
            show_default=True,
            help="Minimum timed runs per artefact (also at least --seconds of runs).",
        )(command)

    return decorate


def thread_options(command):
    """--threads N (one engine thread count) or --thread-counts 1,2 (each in turn)."""
    command = click.option(
        "--thread-counts",
        "thread_counts_text",
        default=None,
        help="Comma-separated engine thread counts to measure in turn, e.g. 1,2 "
        "(default: --threads, else 1). Engines without a thread setting (TF.js) are "
        "measured once, at 1 thread.",
    )(command)
    return threads_option(
        "Threads each model's engine uses while it is measured (default 1).",
        several_hint=": to measure several counts, use --thread-counts 1,2",
    )(command)


def chosen_thread_counts(threads: int | None, text: str | None) -> tuple[int, ...]:
    if threads is not None and text is not None:
        raise UsageError("--threads and --thread-counts: give one (--thread-counts 1,2 or more)")
    if text is not None:
        return thread_counts(text)
    return (threads or 1,)


def engine_option(command):
    from ..formats import ENGINE_KEYS

    return click.option(
        "--engine",
        type=click.Choice([*ENGINE_KEYS, "all"]),
        default=None,
        help="Run each file on this engine (default: the file's own; 'all': every engine that "
        "may run it and is installed, e.g. .onnx on onnxruntime and openvino). Files the "
        "engine cannot run are left out, with a note.",
    )(command)


@click.command("bench", short_help="Measure latency, memory and size of models on this CPU.")
@click.argument("artifacts", nargs=-1, required=True, type=MODEL_PATH)
@engine_option
@thread_options
@runs_options(50, 2.0)
@json_option("Print the report as JSON (and no progress lines on stderr).")
@report_option("Also write a Markdown table to this file.")
def bench_command(
    artifacts, engine, threads, thread_counts_text, runs, seconds, as_json, report_path
):
    """Measure batch-1 latency (median, p90, p99, mean, std), load time, peak
    memory and size of ARTIFACTS on this CPU.

    Each artefact runs in its own process; runs of different artefacts are
    interleaved in rounds, each on the engine that runs it (LiteRT for .tflite,
    ONNX Runtime for .onnx and .ort, TF.js in Node, Keras; Core ML on macOS
    only); --engine openvino runs the .onnx files on OpenVINO, --engine all
    every file on every engine that may run it. ARTIFACTS are model files, a zoo
    model's name ('pretrained', nsfwjs-mobilenet-v2-mid, ...: its Keras
    reference), a folder (every model file in it), or a release folder (the
    files its manifest marks releasable).

    \b
    Examples:
      nsfw-mobile bench models/ --engine all
      nsfw-mobile bench dist/nsfw_int8.tflite dist/nsfw_int8.onnx --thread-counts 1,2
      nsfw-mobile bench dist/nsfw_int8.tflite dist/nsfw_float32.tflite pretrained --json
    """
    from ..bench import bench, render_markdown, render_table, result_label
    from ..formats import engine_pairs
    from ..release import expand_model_arguments

    counts = chosen_thread_counts(threads, thread_counts_text)
    progress = Progress(quiet=as_json)
    for artifact in artifacts:
        fetch_named_model(artifact)

    def excluded(folder, names):
        progress.line(f"note: {folder}: not benchmarked, not releasable: {', '.join(names)}")

    def measured(result):
        progress.line(f"  {result_label(result)} x{result.threads}: {result.median_ms:.2f} ms")

    paths, engines, left_out = engine_pairs(
        expand_model_arguments(artifacts, on_excluded=excluded), engine, skip_unrunnable=True
    )
    for line in left_out:
        progress.line(f"note: not benchmarked: {line}")
    if not paths:
        raise UsageError(f"--engine {engine}: it runs none of the files given")
    report = bench(
        paths,
        engines=engines,
        threads=counts,
        min_runs=runs,
        min_seconds=seconds,
        on_result=measured,
    )
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else render_table(report))
    if report_path:
        write_text_atomically(report_path, render_markdown(report))


def _check_release(check_dir: Path, reference, images, as_json: bool) -> None:
    from .. import release as releases

    progress = Progress(quiet=as_json)
    try:
        problems, notes = releases.check(
            check_dir,
            reference=reference,
            images=images,
            log=progress.line,
            progress=progress.advance,
        )
    finally:
        progress.close()
    if as_json:
        echo_json(
            {"folder": str(check_dir), "passed": not problems, "problems": problems, "notes": notes}
        )
    for note in [] if as_json else notes:  # with --json they are in the document
        click.echo(f"note: {note}", err=True)
    for problem in problems:
        click.echo(f"FAIL {problem}", err=True)
    if problems:
        sys.exit(EXIT_VALIDATION_FAILED)
    if not as_json:
        click.echo(f"{check_dir}: every file matches its checksum and passes validation")


MAKING_OPTIONS = {
    "targets": "--to",
    "quantize": "--quantize",
    "precision": "--precision",
    "io_type": "--io",
    "calibration": "--calibration",
    "threads": "--threads",
    "thread_counts_text": "--thread-counts",
    "runs": "--runs",
    "seconds": "--seconds",
    **CONTRACT_FLAGS,
}
"""Options of making a release, which --check (verifying one) does not take."""


@click.command(
    "release", short_help="Make a validated release folder of every format; --check one."
)
@click.argument("model", required=False, default=None, type=MODEL_PATH)
@model_option(f"The model, instead of MODEL: a file or {MODEL_NAMES_HELP}.")
@out_dir_option("Release folder to write.", default=None)
@click.option(
    "--check",
    "check_dir",
    type=ExistingPath(file_okay=False),
    default=None,
    help="Re-verify an existing release folder against its manifest.",
)
@click.option(
    "--reference",
    type=MODEL_PATH,
    default=None,
    help="With --check: the model the release was made from, a file or a zoo name (default: "
    "the zoo model the manifest names).",
)
@format_options(required=False, all_help="Default: every format.")
@calibration_option("Folder of representative images for full-integer TFLite and int8 ONNX.")
@images_option("Validation images (default: the shipped sample images).")
@thread_options
@runs_options(30, 1.0)
@contract_options
@json_option("Print the manifest (or the check) as JSON (and no progress lines on stderr).")
@click.pass_context
def release_command(
    ctx, model, model_option, out_dir, check_dir, reference, targets, quantize, precision, io_type,
    calibration, image_paths, threads, thread_counts_text, runs, seconds,
    name, model_version, author, license_, description, as_json,
):  # fmt: skip
    """Convert MODEL (default: the pretrained model; a zoo model's name, see
    `nsfw-mobile models`; a .keras file or a TF.js model.json) to every format (or those of
    --to), validate each against it, benchmark each, and write the artefacts with
    labels.txt, manifest.json, MODEL_CARD.md and REPORT.md. Each stage and each
    file is reported on stderr as it completes.

    Exit code 4 when an artefact fails to convert or validate (the manifest is
    written all the same and marks it not releasable). --check DIR re-verifies
    checksums and fidelity of a release folder from any directory and names
    every file that fails; a release of your own model needs --reference.

    \b
    Examples:
      nsfw-mobile release --out dist/
      nsfw-mobile release runs/acme/best.keras --out dist/acme --images test_photos/
      nsfw-mobile release --check dist/ --reference runs/acme/best.keras
    """
    from .. import release as releases
    from ..formats import check_options

    images = list(image_paths) or None
    model = one_model(model, model_option)
    if (out_dir is None) == (check_dir is None):
        raise UsageError("give either --out DIR (make a release) or --check DIR (verify one)")
    if check_dir is not None:
        if model is not None:
            raise UsageError("--check verifies a folder: drop MODEL (use --reference)")
        refuse_given(ctx, MAKING_OPTIONS, "options of making a release, not of checking one")
        _check_release(check_dir, reference, images, as_json)
        return
    if reference is not None:
        raise UsageError("--reference applies to --check; a new release's reference is MODEL")
    fetch_named_model(model)
    chosen = choose_formats(targets or ("all",), quantize, precision)
    check_options(chosen, io_type=io_type, calibration=calibration)
    changes = contract_changes(name, model_version, author, license_, description)
    progress = Progress(quiet=as_json)
    try:
        manifest = releases.release(
            model,
            out_dir,
            formats=chosen,
            calibration=calibration,
            io_type=io_type,
            images=images,
            bench_threads=chosen_thread_counts(threads, thread_counts_text),
            bench_runs=runs,
            bench_seconds=seconds,
            name=name,
            contract={k: v for k, v in changes.items() if k != "name"},
            log=progress.line,
            progress=progress.advance,
        )
    finally:
        progress.close()
    if as_json:
        echo_json(manifest)
        return
    for entry in manifest["files"]:
        click.echo(f"{'OK  ' if entry['releasable'] else 'FAIL'} {entry['file']}")
    click.echo(f"release in {out_dir}: manifest.json, MODEL_CARD.md, REPORT.md")


COMMANDS = (bench_command, release_command)
