"""``bench`` and ``release``: measuring and shipping models."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..errors import UsageError
from .common import (
    EXIT_VALIDATION_FAILED,
    calibration_option,
    contract_changes,
    contract_options,
    echo_json,
    images_option,
    json_option,
    out_dir_option,
    report_option,
    thread_counts,
    threads_option,
    write_text_atomically,
)


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


@click.command("bench")
@click.argument("artifacts", nargs=-1, required=True)
@threads_option("Comma-separated thread counts, e.g. 1,2.", counts=True)
@runs_options(50, 2.0)
@json_option("Print the report as JSON.")
@report_option("Also write a Markdown table to this file.")
def bench_command(artifacts, threads, runs, seconds, as_json, report_path):
    """Measure batch-1 latency (median, p90, p99, mean, std), load time, peak
    memory and size of ARTIFACTS on this CPU.

    Each artefact runs in its own process; runs of different artefacts are
    interleaved in rounds, each on the engine that runs it (LiteRT for .tflite,
    ONNX Runtime for .onnx and .ort, TF.js in Node, Keras; Core ML on macOS
    only). ARTIFACTS are model files, a folder (every model file in it), or
    'pretrained'.

    \b
    Examples:
      nsfw-mobile bench models/ --threads 1,2
      nsfw-mobile bench dist/nsfw_int8.tflite dist/nsfw_int8.onnx --threads 1,2
      nsfw-mobile bench dist/nsfw_int8.tflite dist/nsfw_float32.tflite pretrained --json
    """
    from ..bench import bench, render_markdown, render_table
    from ..formats import expand_model_paths

    counts = thread_counts(threads)

    def progress(result):
        if not as_json:
            name = Path(result.path).name
            click.echo(f"  {name} x{result.threads}: {result.median_ms:.2f} ms", err=True)

    report = bench(
        expand_model_paths(artifacts),
        threads=counts,
        min_runs=runs,
        min_seconds=seconds,
        on_result=progress,
    )
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else render_table(report))
    if report_path:
        write_text_atomically(report_path, render_markdown(report))


def _check_release(check_dir: Path, reference, images, as_json: bool) -> None:
    from .. import release as releases

    problems, notes = releases.check(check_dir, reference=reference, images=images)
    if as_json:
        echo_json(
            {"folder": str(check_dir), "passed": not problems, "problems": problems, "notes": notes}
        )
    for note in notes:
        click.echo(f"note: {note}", err=True)
    for problem in problems:
        click.echo(f"FAIL {problem}", err=True)
    if problems:
        sys.exit(EXIT_VALIDATION_FAILED)
    if not as_json:
        click.echo(f"{check_dir}: every file matches its checksum and passes validation")


@click.command("release")
@click.argument("model", required=False, default=None)
@out_dir_option("Release folder to write.", default=None)
@click.option(
    "--check",
    "check_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Re-verify an existing release folder against its manifest.",
)
@click.option(
    "--reference",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="With --check: the model the release was made from (default: the pretrained model, "
    "when the manifest names it).",
)
@calibration_option("Folder of representative images for full-integer TFLite and int8 ONNX.")
@images_option("Validation images (default: the shipped sample images).")
@threads_option("Benchmark thread counts, e.g. 1,2.", counts=True)
@runs_options(30, 1.0)
@contract_options
@json_option("Print the manifest (or the check) as JSON.")
def release_command(
    model, out_dir, check_dir, reference, calibration, image_paths, threads, runs, seconds,
    name, model_version, author, license_, description, as_json,
):  # fmt: skip
    """Convert MODEL (default: the pretrained model) to every format, validate
    each against it, benchmark each, and write the artefacts with labels.txt,
    manifest.json, MODEL_CARD.md and REPORT.md.

    Exit code 4 when an artefact fails to convert or validate (the manifest is
    written all the same and marks it not releasable). --check DIR re-verifies
    checksums and fidelity of a release folder from any directory and names
    every file that fails; a release of your own model needs --reference.

    \b
    Examples:
      nsfw-mobile release --out dist/
      nsfw-mobile release runs/first/best.keras --out dist/ --calibration photos/
      nsfw-mobile release runs/acme/best.keras --out dist/ --name acme --model-version 2.1
      nsfw-mobile release --check models/
      nsfw-mobile release --check dist/ --reference runs/acme/best.keras
    """
    from .. import release as releases

    images = list(image_paths) or None
    if (out_dir is None) == (check_dir is None):
        raise UsageError("give either --out DIR (make a release) or --check DIR (verify one)")
    changes = contract_changes(name, model_version, author, license_, description)
    if check_dir is not None:
        if model or calibration or any(v is not None for v in changes.values()):
            raise UsageError("--check verifies a folder: drop MODEL, --calibration and --name etc.")
        _check_release(check_dir, reference, images, as_json)
        return
    if reference is not None:
        raise UsageError("--reference applies to --check; a new release's reference is MODEL")
    manifest = releases.release(
        model,
        out_dir,
        calibration=calibration,
        images=images,
        bench_threads=thread_counts(threads),
        bench_runs=runs,
        bench_seconds=seconds,
        name=name,
        contract={k: v for k, v in changes.items() if k != "name"},
        log=lambda line: click.echo(line, err=True),
    )
    if as_json:
        echo_json(manifest)
        return
    for entry in manifest["files"]:
        click.echo(f"{'OK  ' if entry['releasable'] else 'FAIL'} {entry['file']}")
    click.echo(f"release in {out_dir}: manifest.json, MODEL_CARD.md, REPORT.md")


COMMANDS = (bench_command, release_command)
