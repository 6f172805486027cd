"""``nsfw-mobile inspect``: describe a model file."""

from __future__ import annotations

import json

import click

from .common import MODEL, explain_model, json_option, progress_line


@click.command(short_help="Describe a model file: inputs, outputs, labels, metadata.")
@click.argument("path", type=MODEL)
@json_option("Print the description as JSON.")
def inspect(path, as_json):
    """Describe a model file: format, inputs (shape, dtype, quantization,
    preprocessing), outputs, labels, metadata, size, parameters and op counts.

    Reads {file_types}. A folder or a release folder: each model in it; a zoo
    model's name: its source (the TF.js model.json it ships as; ./mid is a path).

    \b
    Examples:
      nsfw-mobile inspect dist/nsfw_int8.tflite
      nsfw-mobile inspect dist/NSFW.mlpackage --json
    """
    from ..formats import inspect_file
    from ..inspect_model import render
    from ..resolve import MEASURE, resolve_model

    ref = resolve_model(path, use=MEASURE, log=progress_line(as_json))
    explain_model(ref, as_json=as_json)
    reports = []
    for part in ref.parts:
        if part.path is None:
            part.fetch()
        reports.append(inspect_file(part.path or part.zoo_model.model_json(fetch=False)))
    if as_json:
        shown = reports[0] if len(reports) == 1 and not ref.members else reports
        click.echo(json.dumps(shown, indent=2, default=str))
        return
    click.echo("\n\n".join(render(report) for report in reports))


COMMANDS = (inspect,)
