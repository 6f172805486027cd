"""``nsfw-mobile predict``: classify image files and folders."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import UsageError
from .common import EXIT_UNREADABLE, echo_json, threads_option, unsafe_option


def open_model(model_path: Path | None, *, threads: int | None, unsafe: bool):
    """The runner for --model: a model file, a release folder (its fastest model) or None."""
    from ..runtime import open_runner

    if model_path is not None and (model_path / "manifest.json").is_file():
        from ..release import fastest_artifact

        model_path = fastest_artifact(model_path)
        click.echo(f"using {model_path.name}, the fastest validated model of the release", err=True)
    return open_runner(model_path, num_threads=threads, allow_unsafe=unsafe)


def _table_line(prediction, labels, flagged: bool) -> str:
    if prediction.error is not None:
        return f"{'ERROR':<8}  {prediction.error}  {prediction.path}"
    probabilities = "  ".join(f"{prediction.probabilities[n]:>8.4f}" for n in labels)
    mark = "  FLAGGED" if flagged else ""
    score = "-" if prediction.nsfw_score is None else f"{prediction.nsfw_score:.3f}"
    return f"{prediction.label:<8}  {probabilities}  {score:>6}  {prediction.path}{mark}"


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Model file: .keras, TF.js model.json, .tflite, .mlmodel or .mlpackage, or a "
    "release folder (default: the pretrained model).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    default=None,
    help="Mark files whose nsfw_score (the sum of the model's NSFW labels' probabilities, "
    "P(Porn) + P(Sexy) for the pretrained model) is above this.",
)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@threads_option("Decoding threads and TFLite threads (default: one per core).")
@unsafe_option()
def predict(paths, model_path, as_json, threshold, batch_size, threads, unsafe):
    """Classify image files and folders (recursively).

    --model also takes a release folder (from `nsfw-mobile release`): the
    fastest artefact that passed validation is used.

    Every readable file is classified even when others fail; exit code 3 says
    that some files could not be read (their errors are in the output).

    \b
    Examples:
      nsfw-mobile predict photo.jpg
      nsfw-mobile predict photos/ --threshold 0.5
      nsfw-mobile predict photos/ --json > results.jsonl
      nsfw-mobile predict photos/ --model dist/nsfw_int8.tflite
      nsfw-mobile predict photos/ --model models/
    """
    from ..images import find_images
    from ..predict import classify

    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")
    files = find_images(paths)
    if not files:
        raise UsageError(f"no image files found in {', '.join(map(str, paths))}")
    runner = open_model(model_path, threads=threads, unsafe=unsafe)
    if not runner.contract.nsfw_labels:
        click.echo(
            f"note: {runner.name} names no NSFW labels ({', '.join(runner.labels)}): "
            "no nsfw_score" + (", so --threshold flags nothing" if threshold is not None else ""),
            err=True,
        )
    failures = 0
    show_progress = len(files) > 1 and not as_json and sys.stderr.isatty()
    if not as_json:
        header = "  ".join(f"{name:>8}" for name in runner.labels)
        click.echo(f"{'label':<8}  {header}  {'nsfw':>6}  path")
    with click.progressbar(
        length=len(files), label="Classifying", file=sys.stderr, hidden=not show_progress
    ) as bar:
        for prediction in classify(runner, files, batch_size=batch_size, workers=threads):
            bar.update(1)
            failures += prediction.error is not None
            flagged = (
                threshold is not None
                and prediction.nsfw_score is not None
                and prediction.nsfw_score > threshold
            )
            if not as_json:
                click.echo(_table_line(prediction, runner.labels, flagged))
                continue
            document = prediction.to_dict()
            if threshold is not None and prediction.error is None:
                document["flagged"] = flagged
            echo_json(document)
    if failures:
        click.echo(f"{failures} of {len(files)} files could not be read", err=True)
        sys.exit(EXIT_UNREADABLE)


COMMANDS = (predict,)
