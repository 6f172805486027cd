"""``convert``, ``formats`` and ``import-tfjs``: making model files."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from ..errors import UsageError
from ..formats import FORMATS, IO_TYPE, TARGETS
from .common import (
    calibration_option,
    contract_changes,
    contract_options,
    echo_json,
    json_option,
    out_dir_option,
    unsafe_option,
)

FORMAT_KEYS = [f.key for f in FORMATS if f.key not in TARGETS]


def choose_formats(targets, quantize: str, precision: str | None):
    """Registry rows for --to (targets or format keys), --quantize and --precision."""
    from .. import formats as registry

    if "all" in targets:
        if quantize != "none" or precision is not None:
            raise UsageError(
                "--to all makes every quantization and precision: drop --quantize/--precision"
            )
        return list(registry.FORMATS)
    return [
        registry.select(t, quantize, precision) if t in TARGETS else registry.by_key(t)
        for t in dict.fromkeys(targets)
    ]


def _summary(source, artifacts, out_dir: Path, started: float) -> dict:
    return {
        "source": {"path": source.path, "sha256": source.sha256, "labels": list(source.labels)},
        "artifacts": [a.to_dict() for a in artifacts],
        "labels_file": str(out_dir / "labels.txt"),
        "seconds": round(time.perf_counter() - started, 2),
    }


@click.command()
@click.argument("model", required=False, default=None)
@click.option(
    "--to",
    "targets",
    multiple=True,
    required=True,
    type=click.Choice([*TARGETS, *FORMAT_KEYS, "all"]),
    help="Output: a target (mlmodel, mlpackage, tflite, tfjs, onnx, ort, with "
    "--quantize/--precision) or "
    "a format key such as tflite-int8 (see `nsfw-mobile formats`); repeat for "
    "several. 'all': every format.",
)
@click.option(
    "--quantize",
    default="none",
    show_default=True,
    help="mlmodel: none|float16. mlpackage: none|int8. tflite: none|float16|dynamic|int8. "
    "tfjs: none|float16|uint8 (weight storage). onnx: none|float16|int8. ort: int8.",
)
@click.option(
    "--precision",
    type=click.Choice(["float16", "float32"]),
    default=None,
    help="ML Program compute precision (--to mlpackage; default float16).",
)
@out_dir_option("Output folder.", default=Path("dist"), show_default=True)
@calibration_option()
@click.option(
    "--io",
    "io_type",
    type=click.Choice(IO_TYPE.choices),
    default=IO_TYPE.default,
    show_default=True,
    help="Input and output type of full-integer TFLite models.",
)
@contract_options
@json_option("Print a JSON summary on stdout.")
@unsafe_option()
def convert(
    model, targets, quantize, precision, out_dir, calibration, io_type, as_json, unsafe,
    name, model_version, author, license_, description,
):  # fmt: skip
    """Convert MODEL (default: the pretrained model; or a .keras file or a TF.js
    model.json) to Core ML, TFLite, TF.js and ONNX.

    Files are named predictably (NSFW.mlmodel, NSFW.mlpackage,
    nsfw_float32.tflite, nsfw_int8.tflite, nsfw_tfjs_uint8/, nsfw_int8.onnx ...;
    --name acme makes acme.mlmodel, acme_int8.tflite, ...) and written
    atomically: an interrupted run never leaves a file under its final name.
    Every file carries the model's contract: labels, NSFW labels and
    provenance, which the --name, --model-version, --author, --license and
    --description options override.

    \b
    Examples:
      nsfw-mobile convert --to all --out dist/
      nsfw-mobile convert --to mlmodel --to tflite --quantize float16
      nsfw-mobile convert --to mlmodel --to mlpackage --to tflite-float16 --to tflite-int8
      nsfw-mobile convert --to tflite --quantize int8 --calibration photos/
      nsfw-mobile convert --to tfjs --quantize uint8 --out web/
      nsfw-mobile convert --to onnx --quantize int8 --calibration photos/ --out dist/
      nsfw-mobile convert --to onnx --to onnx-float16 --to ort-int8
      nsfw-mobile convert my_model.keras --to mlpackage --precision float32 --json
      nsfw-mobile convert runs/acme/best.keras --to all --name acme --license Apache-2.0
    """
    from ..convert import convert_all
    from ..formats import check_options
    from ..models import load_source

    chosen = choose_formats(targets, quantize, precision)
    check_options(chosen, io_type=io_type, calibration=calibration)
    for fmt in chosen:
        fmt.filename_for(name)  # a bad --name fails before the model loads
    started = time.perf_counter()
    changes = contract_changes(name, model_version, author, license_, description)
    source = load_source(model, allow_unsafe=unsafe).with_contract(**changes)

    def on_start(index, fmt, out):
        click.echo(f"[{index + 1}/{len(chosen)}] {fmt.key}: {fmt.summary} -> {out}", err=True)

    def on_done(index, artifact):
        click.echo(
            f"    done in {artifact.seconds:.1f} s, {artifact.size_bytes / 1e6:.2f} MB", err=True
        )
        for note in artifact.notes:
            click.echo(f"    note: {note}", err=True)

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
    if as_json:
        echo_json(_summary(source, artifacts, out_dir, started))
        return
    for artifact in artifacts:
        click.echo(f"{artifact.path}  {artifact.size_bytes / 1e6:8.2f} MB  {artifact.sha256[:16]}")


@click.command("formats")
@json_option("Print the registry as JSON.")
@click.option("--markdown", is_flag=True, help="Print the README's formats table.")
def list_formats(as_json, markdown):
    """List the output formats, their file names and validation tolerances.

    \b
    Examples:
      nsfw-mobile formats
      nsfw-mobile formats --json
    """
    from ..formats import markdown_table

    if as_json:
        echo_json(
            [
                {
                    "key": f.key,
                    "target": f.target,
                    "quantization": f.quantization,
                    "precision": f.precision,
                    "filename": f.filename,
                    "summary": f.summary,
                    "options": list(f.options),
                    "tolerance": {
                        "max_abs": f.tolerance.max_abs,
                        "mean_abs": f.tolerance.mean_abs,
                        "min_agreement": f.tolerance.min_agreement,
                        "measured": f.tolerance.measured,
                    },
                }
                for f in FORMATS
            ]
        )
        return
    if markdown:
        click.echo(markdown_table())
        return
    for f in FORMATS:
        click.echo(f"{f.key:<18} {f.filename:<24} {f.tolerance.describe():<32} {f.summary}")


@click.command("import-tfjs")
@click.argument("model_json", type=click.Path(exists=True, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
def import_tfjs(model_json, out):
    """Convert a TF.js layers model (model.json + shards, or their folder) to a .keras
    file. The model contract in its userDefinedMetadata, if any, comes along.

    \b
    Examples:
      nsfw-mobile import-tfjs web_model/model.json model.keras
      nsfw-mobile import-tfjs dist/nsfw_tfjs_uint8 back.keras
    """
    from ..atomic import atomic_path
    from ..metadata import write_keras_contract
    from ..models import load_source

    if out.suffix != ".keras":
        raise UsageError(f"{out}: the output must end in .keras")
    source = load_source(model_json)
    with atomic_path(out) as temporary:
        source.model.save(temporary)
        write_keras_contract(temporary, source.contract)
    click.echo(f"wrote {out} ({source.model.count_params():,} parameters)")


COMMANDS = (convert, list_formats, import_tfjs)
