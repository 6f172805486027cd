"""``nsfw-mobile release``: make a validated release folder, or check one."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import UsageError
from ..resolve import RULES_HELP, SOURCE, resolve_model
from .bench import chosen_thread_counts, runs_options, thread_options
from .common import (
    CONTRACT_FLAGS,
    EXIT_VALIDATION_FAILED,
    MODEL,
    ExistingPath,
    Progress,
    calibration_option,
    contract_changes,
    contract_options,
    echo_json,
    explain_model,
    images_option,
    json_option,
    model_option,
    one_model,
    out_dir_option,
    progress_line,
    refuse_given,
)
from .convert import choose_formats, format_options


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
@click.argument("model", required=False, default=None, type=MODEL)
@model_option(f"The model, instead of MODEL: {RULES_HELP}.")
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
    type=MODEL,
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
    ref = resolve_model(model, use=SOURCE, log=progress_line(as_json))
    explain_model(ref, as_json=as_json)
    chosen = choose_formats(targets or ("all",), quantize, precision)
    check_options(chosen, io_type=io_type, calibration=calibration)
    changes = contract_changes(name, model_version, author, license_, description)
    progress = Progress(quiet=as_json)
    try:
        manifest = releases.release(
            ref,
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


COMMANDS = (release_command,)
