"""``nsfw-mobile convert``: make model files of the registry's formats."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from ..errors import UsageError
from ..formats import (
    FORMATS,
    IO_TYPE,
    PRECISIONS,
    QUANTIZATIONS,
    TARGETS,
    check_options,
    formats_help,
    quantizations,
    targets_help,
)
from ..resolve import RULES_HELP, SOURCE, resolve_model
from .common import (
    MODEL,
    Progress,
    calibration_option,
    contract_changes,
    contract_options,
    echo_json,
    explain_model,
    json_option,
    model_option,
    one_model,
    out_dir_option,
    preprocess_option,
    unsafe_option,
)

FORMAT_KEYS = [f.key for f in FORMATS if f.key not in TARGETS]
TO_CHOICES = [*TARGETS, *FORMAT_KEYS, "all"]


def choose_formats(targets, quantize: str | None, precision: str | None):
    """Registry rows for --to (targets or format keys), --quantize and --precision.

    --quantize and --precision pick among a target's formats; a format key names its own
    quantization and precision, so with format keys alone they are refused, not ignored.
    """
    from .. import formats as registry

    if "all" in targets:
        if quantize not in (None, "none") or precision is not None:
            raise UsageError(
                "--to all makes every quantization and precision: drop --quantize/--precision"
            )
        return list(registry.FORMATS)
    chosen_targets = [t for t in targets if t in TARGETS]
    if not chosen_targets:
        for flag, value in (("--quantize", quantize), ("--precision", precision)):
            if value is not None:
                raise UsageError(
                    f"{flag} {value} applies to targets ({', '.join(TARGETS)}); "
                    f"{', '.join(targets)} names its own: drop {flag}, or use --to TARGET "
                    f"{flag} {value} (see `nsfw-mobile formats`)"
                )
    return [
        registry.select(t, quantize or "none", precision) if t in TARGETS else registry.by_key(t)
        for t in dict.fromkeys(targets)
    ]


def format_options(*, required: bool, all_help: str):
    """--to, --quantize, --precision and --io: one meaning for convert and release."""
    quantize_help = "; ".join(f"{t}: {'|'.join(quantizations(t))}" for t in TARGETS)

    def decorate(command):
        for option in reversed(
            (
                click.option(
                    "--to",
                    "targets",
                    multiple=True,
                    required=required,
                    type=click.Choice(TO_CHOICES),
                    help=f"Output: a target ({targets_help()}; with --quantize and "
                    f"--precision) or a format key ({formats_help()}; see `nsfw-mobile "
                    f"formats`); repeat for several. {all_help}",
                ),
                click.option(
                    "--quantize",
                    type=click.Choice(QUANTIZATIONS),
                    default=None,
                    help=f"Quantization of the --to targets (default none): {quantize_help}.",
                ),
                click.option(
                    "--precision",
                    type=click.Choice(PRECISIONS),
                    default=None,
                    help="ML Program compute precision (--to mlpackage; default float16).",
                ),
                click.option(
                    "--io",
                    "io_type",
                    type=click.Choice(IO_TYPE.choices),
                    default=None,
                    help="Input and output type of full-integer TFLite models "
                    f"(default {IO_TYPE.default}; needs tflite-int8 among the formats).",
                ),
            )
        ):
            command = option(command)
        return command

    return decorate


def _summary(source, artifacts, out_dir: Path, started: float) -> dict:
    return {
        "source": {"path": source.path, "sha256": source.sha256, "labels": list(source.labels)},
        "artifacts": [a.to_dict() for a in artifacts],
        "labels_file": str(out_dir / "labels.txt"),
        "seconds": round(time.perf_counter() - started, 2),
    }


@click.command(short_help="Convert a model to the formats `nsfw-mobile formats` lists.")
@click.argument("model", required=False, default=None, type=MODEL)
@model_option(f"The model, instead of MODEL: {RULES_HELP}.")
@format_options(required=True, all_help="'all': every format.")
@out_dir_option("Output folder.", default=Path("dist"), show_default=True)
@calibration_option()
@contract_options
@json_option("Print a JSON summary on stdout (and no progress lines on stderr).")
@unsafe_option()
@preprocess_option()
def convert(
    model, model_option, targets, quantize, precision, io_type, out_dir, calibration, as_json,
    unsafe, preprocess, name, model_version, author, license_, description,
):  # fmt: skip
    """Convert MODEL (default: the pretrained model; or a zoo model's name, see
    `nsfw-mobile models`, a .keras file, a TF.js model.json, layers or graph, or
    an .onnx classifier, imported with its declared preprocessing built in)
    to the registry's targets: {targets}.

    Files are named predictably (NSFW.mlmodel, NSFW.mlpackage,
    nsfw_float32.tflite, nsfw_int8.tflite, nsfw_tfjs_uint8/, nsfw_int8.onnx ...;
    --name acme makes acme.mlmodel, acme_int8.tflite, ...) and written
    atomically: an interrupted run never leaves a file under its final name.
    Every file carries the model's contract: labels, NSFW labels and
    provenance, which the --name, --model-version, --author, --license and
    --description options override. An option that none of the chosen formats
    takes (--quantize with format keys only, --calibration or --io without
    tflite-int8 or onnx-int8) is refused before any work.

    \b
    Examples:
      nsfw-mobile convert --to all --out dist/
      nsfw-mobile convert --to tflite --quantize int8 --calibration photos/ --out dist/
      nsfw-mobile convert model.onnx --to mlpackage --name acme --out dist/
    """
    from ..convert import convert_all

    progress = Progress(quiet=as_json)
    ref = resolve_model(one_model(model, model_option), use=SOURCE, unsafe=unsafe,
                        log=progress.line, preprocessing=preprocess)  # fmt: skip
    explain_model(ref, as_json=as_json)
    chosen = choose_formats(targets, quantize, precision)
    check_options(chosen, io_type=io_type, calibration=calibration)
    for fmt in chosen:
        fmt.filename_for(name)  # a bad --name fails before the model loads
    started = time.perf_counter()
    changes = contract_changes(name, model_version, author, license_, description)
    source = ref.load_source().with_contract(**changes)

    def on_start(index, fmt, out):
        progress.line(f"[{index + 1}/{len(chosen)}] {fmt.key}: {fmt.summary} -> {out}")

    def on_done(index, artifact):
        progress.line(f"    done in {artifact.seconds:.1f} s, {artifact.size_bytes / 1e6:.2f} MB")
        for note in artifact.notes:
            progress.line(f"    note: {note}")
        progress.advance("converting", index + 1, len(chosen))

    try:
        artifacts = convert_all(
            source,
            chosen,
            out_dir,
            calibration=calibration,
            io_type=io_type,
            on_start=on_start,
            on_done=on_done,
            command="nsfw-mobile convert " + " ".join(sys.argv[2:]),
            name=name,
        )
    finally:
        progress.close()
    if as_json:
        echo_json(_summary(source, artifacts, out_dir, started))
        return
    for artifact in artifacts:
        click.echo(f"{artifact.path}  {artifact.size_bytes / 1e6:8.2f} MB  {artifact.sha256[:16]}")


COMMANDS = (convert,)
