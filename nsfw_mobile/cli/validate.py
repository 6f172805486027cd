"""``nsfw-mobile validate``: check converted models against their reference."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..formats import ENGINE_KEYS, FORMATS
from ..resolve import ModelRef
from .common import (
    EXIT_VALIDATION_FAILED,
    MODEL,
    explain_model,
    images_option,
    json_option,
    preprocess_option,
    progress_line,
    report_option,
    threads_option,
    write_text_atomically,
)


@click.command(short_help="Check converted models against their reference model.")
@click.argument("candidates", nargs=-1, required=True, type=MODEL)
@click.option(
    "--reference",
    type=MODEL,
    default=None,
    help="Reference model: .keras, TF.js model.json, the source .onnx (imported; candidates "
    "are then judged against ONNX Runtime on it too) or a zoo model's name (see "
    "`nsfw-mobile models`; ./mid is a path); default: the pretrained model.",
)
@images_option()
@click.option(
    "--format",
    "format_keys",
    multiple=True,
    type=click.Choice([f.key for f in FORMATS]),
    help="Format key(s) for artefacts without nsfw-mobile metadata: one for all candidates "
    "or one per candidate (see `nsfw-mobile formats`).",
)
@click.option(
    "--engine",
    type=click.Choice([*ENGINE_KEYS, "all"]),
    default=None,
    help="Run the candidates on this engine (default: each file's own; 'all': each file on "
    "every engine that may run it, e.g. .onnx on onnxruntime and openvino; "
    "`nsfw-mobile formats --json` lists them).",
)
@threads_option("Threads each candidate's engine uses (engines with a thread setting only).")
@json_option("Print the report as JSON (and no progress lines on stderr).")
@report_option("Also write a Markdown report to this file.")
@preprocess_option()
@click.option(
    "--diagnose",
    is_flag=True,
    help="With an .onnx reference: compare the imported model with ONNX Runtime node by "
    "node and name the first node whose output diverges.",
)
def validate(
    candidates, reference, image_paths, format_keys, engine, threads, as_json, report_path,
    preprocess, diagnose,
):  # fmt: skip
    """Check that converted models agree with the reference model.

    Runs the reference and every CANDIDATE (a converted file: {file_types}; a
    folder: its model files; a release folder: the files its manifest marks
    releasable) on the same decoded images and compares probabilities against each format's
    tolerance. With an .onnx source as --reference, the reference is ONNX Runtime
    running the original (its declared preprocessing applied), and each bound
    grows by the import's own difference measured on the same images. Core ML
    models run on Linux through the toolkit's own numpy executor. Exit code 0:
    all pass; 4: a candidate failed (tolerance miss or label/shape mismatch);
    1 or 2: bad input or usage.

    \b
    Examples:
      nsfw-mobile validate dist/*.tflite dist/*.mlmodel dist/*.mlpackage
      nsfw-mobile validate dist/*.onnx --engine all --images photos/ --report report.md
      nsfw-mobile validate dist/*.tflite --reference resnet.onnx --diagnose --json
    """
    from ..errors import UsageError
    from ..formats import engine_pairs
    from ..resolve import SOURCE, resolve_model
    from ..validate import render_json, render_markdown, render_table
    from ..validate import validate as run_validation

    files = [part for c in candidates for part in _candidates(c)]
    for part in files:
        if isinstance(part, ModelRef) and part.path is None:
            raise UsageError(
                f"{part.given} is a zoo model's Keras reference, not a converted file: give "
                "--reference NAME and the files made from it"
            )
    refs = [p for p in files if isinstance(p, ModelRef)]
    if threads is not None and not any(p.file_type.threaded and p.engine for p in refs):
        raise UsageError(
            "--threads sets the threads of engines that take them (LiteRT, ONNX Runtime) and "
            "no candidate runs on one: drop --threads"
        )
    reference = resolve_model(
        reference, use=SOURCE, log=progress_line(as_json), preprocessing=preprocess
    )
    explain_model(reference, as_json=as_json)
    if diagnose:
        _diagnose(reference, image_paths, as_json)

    def progress(result):
        if not as_json:
            on = "" if result.label == Path(result.path).name else f" on {result.engine}"
            click.echo(f"  {result.status:<8} {result.path}{on} ({result.seconds:.1f} s)", err=True)

    if format_keys and engine == "all" and len(format_keys) > 1:
        raise UsageError("--engine all with one --format per candidate: give one --format")
    files, engines, missing = engine_pairs(files, engine)
    if engine not in (None, "all") and missing:
        raise UsageError(f"--engine {engine}: {missing[0]}")
    for pair in missing:
        click.echo(f"note: not validated: {pair}", err=True)
    report = run_validation(
        files,
        reference=reference,
        images=list(image_paths) or None,
        format_keys=list(format_keys) or None,
        num_threads=threads,
        on_candidate=progress,
        engines=engines,
    )
    click.echo(render_json(report) if as_json else render_table(report))
    if report_path:
        write_text_atomically(report_path, render_markdown(report))
    for line in report.unreadable:
        click.echo(f"skipped unreadable image {line}", err=True)
    if not report.passed:
        sys.exit(EXIT_VALIDATION_FAILED)


def _diagnose(reference, image_paths, as_json) -> None:
    """Node by node, the imported model against ONNX Runtime; the first divergence on stderr."""
    from ..errors import UsageError
    from ..images import load_images, sample_images
    from ..onnx_import import diagnose

    if reference.path is None or reference.path.suffix.lower() != ".onnx":
        raise UsageError("--diagnose compares an .onnx --reference with its import: give one")
    size = reference.load_source().input_size
    pixels = load_images(list(image_paths) or sample_images(), size).pixels[:4]
    differences, first = diagnose(
        reference.path, pixels, preprocessing_options=list(reference.preprocessing)
    )
    if not as_json:
        for entry in differences:
            click.echo(
                f"  {entry.max_abs_diff:9.2e} (of {entry.scale:9.2e})  {entry.op:<18} {entry.node}",
                err=True,
            )
    verdict = (
        f"first diverging node: {first.node} ({first.op}), max abs diff {first.max_abs_diff:.3g}"
        if first
        else f"no node diverges: {len(differences)} node outputs compared"
    )
    click.echo(verdict, err=True)


def _candidates(given) -> list:
    """What a CANDIDATE names (MEASURE: a folder or a release is its files). A file of no
    type the toolkit reads stays as it is: the report shows it as that candidate's error,
    and the others are judged."""
    from ..errors import MissingFileError, ModelFileError
    from ..resolve import MEASURE, resolve_model

    try:
        return list(resolve_model(given, use=MEASURE).parts)
    except MissingFileError:
        raise
    except ModelFileError:
        return [given]


COMMANDS = (validate,)
