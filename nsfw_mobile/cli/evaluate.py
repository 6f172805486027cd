"""``nsfw-mobile evaluate``: accuracy and NSFW thresholds on labelled images."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .common import (
    MODEL,
    ExistingPath,
    explain_model,
    json_option,
    out_dir_option,
    progress_line,
    unsafe_option,
)


@click.command(short_help="Measure accuracy and NSFW thresholds on labelled images.")
@click.argument("model", type=MODEL)
@click.argument("data_dir", type=ExistingPath(file_okay=False))
@out_dir_option(
    "Write report.md, report.json, confusion.png, roc.png and pr.png here.", default=None
)
@click.option(
    "--predictions",
    "predictions_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write one CSV row per file (path, true and predicted label, probabilities, "
    "nsfw_score) for error analysis.",
)
@json_option("Print the report as JSON.")
@unsafe_option()
def evaluate(model, data_dir, out_dir, predictions_path, as_json, unsafe):
    """Evaluate MODEL (any file type: {file_types}; a release folder: its fastest
    validated file here; or a zoo model's name such as 'pretrained' or mid, see
    `nsfw-mobile models`, as predict --model runs it: ./mid is a path) on a labelled
    DATA_DIR: its test/ or val/ folder when it has one (as train finds it), else its
    class folders. Images of the model's NSFW labels are the positives of the
    NSFW-versus-safe view.

    \b
    Examples:
      nsfw-mobile evaluate runs/first/best.keras data/ --out runs/first/eval
      nsfw-mobile evaluate dist/nsfw_int8.tflite data/test --json
      nsfw-mobile evaluate pretrained data/ --predictions errors.csv
    """
    from ..evaluate import evaluate as run_evaluation
    from ..evaluate import render_table, write_predictions, write_reports
    from ..resolve import RUN, resolve_model

    ref = resolve_model(model, use=RUN, unsafe=unsafe, log=progress_line(as_json))
    explain_model(ref, as_json=as_json)
    report = run_evaluation(ref, data_dir)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else render_table(report))
    if out_dir is not None:
        for path in write_reports(report, out_dir):
            click.echo(f"wrote {path}", err=True)
    if predictions_path is not None:
        click.echo(f"wrote {write_predictions(report, predictions_path)}", err=True)


COMMANDS = (evaluate,)
