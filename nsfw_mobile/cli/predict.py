"""``nsfw-mobile predict``: classify image files and folders."""

from __future__ import annotations

import csv
import sys
import time
from collections import Counter
from pathlib import Path

import click

from ..errors import UsageError
from .common import EXIT_FLAGGED, EXIT_UNREADABLE, echo_json, threads_option, unsafe_option


def open_model(model_path: Path | None, *, threads: int | None, unsafe: bool):
    """The runner for --model: a model file, a release folder (its fastest model on this
    machine), or by default the pretrained model as the float32 TFLite file the package
    ships."""
    from ..formats import PRETRAINED_TFLITE
    from ..runtime import open_runner

    if model_path is None:
        model_path = PRETRAINED_TFLITE
    elif (model_path / "manifest.json").is_file():
        from ..engine_choice import fastest_here

        choice = fastest_here(model_path)
        model_path = choice.path
        click.echo(
            f"using {model_path.name} ({choice.engine}), the fastest validated model of the "
            "release on this machine",
            err=True,
        )
        if click.get_current_context().meta.get("verbose"):
            for line in choice.explain():
                click.echo(line, err=True)
    return open_runner(model_path, num_threads=threads, allow_unsafe=unsafe)


def _table_line(prediction, labels, flagged: bool) -> str:
    if prediction.error is not None:
        return f"{'ERROR':<8}  {prediction.error}  {prediction.path}"
    probabilities = "  ".join(f"{prediction.probabilities[n]:>8.4f}" for n in labels)
    mark = "  FLAGGED" if flagged else ""
    score = "-" if prediction.nsfw_score is None else f"{prediction.nsfw_score:.3f}"
    return f"{prediction.label:<8}  {probabilities}  {score:>6}  {prediction.path}{mark}"


class _Output:
    """Writes results as a table, JSON lines or CSV, and counts them for the summary."""

    def __init__(self, labels, *, fmt: str, threshold: float | None, only_flagged: bool):
        self.labels, self.fmt, self.threshold, self.only_flagged = (
            labels,
            fmt,
            threshold,
            only_flagged,
        )
        self.by_label: Counter = Counter()
        self.flagged = self.errors = self.skipped = 0
        self.csv = None
        if fmt == "csv":
            self.csv = csv.writer(click.get_text_stream("stdout"), lineterminator="\n")
            self.csv.writerow(["path", "label", *(f"p_{n}" for n in labels), "nsfw_score",
                               "flagged", "error", "kind"])  # fmt: skip
        elif fmt == "table":
            header = "  ".join(f"{name:>8}" for name in labels)
            click.echo(f"{'label':<8}  {header}  {'nsfw':>6}  path")

    def is_flagged(self, prediction) -> bool:
        score = prediction.nsfw_score
        return self.threshold is not None and score is not None and score > self.threshold

    def write(self, prediction) -> None:
        flagged = self.is_flagged(prediction)
        if prediction.error is not None:
            self.errors += 1
        else:
            self.by_label[prediction.label] += 1
            self.flagged += flagged
            if self.only_flagged and not flagged:
                return
        if self.fmt == "table":
            click.echo(_table_line(prediction, self.labels, flagged))
        elif self.fmt == "json":
            document = prediction.to_dict()
            if self.threshold is not None and prediction.error is None:
                document["flagged"] = flagged
            echo_json(document)
        else:
            probabilities = prediction.probabilities or {}
            self.csv.writerow(
                [prediction.path, prediction.label or "",
                 *(probabilities.get(n, "") for n in self.labels),
                 "" if prediction.nsfw_score is None else prediction.nsfw_score,
                 "" if prediction.error else int(flagged),
                 prediction.error or "", prediction.kind or ""]
            )  # fmt: skip

    def write_video(self, result, *, threshold: float) -> None:
        """One line (or JSON object) per clip: its verdict, segments and, in JSON, timeline."""
        verdict = result.verdict
        self.by_label[verdict["label"]] += 1
        flagged = verdict["flagged"]
        self.flagged += flagged
        if self.only_flagged and not flagged:
            return
        if self.fmt == "json":
            echo_json(result.to_dict())
        elif self.fmt == "csv":
            self.csv.writerow([result.path, verdict["label"], *("" for _ in self.labels),
                               verdict["score"], int(flagged), "", ""])  # fmt: skip
        else:
            spans = "; ".join(
                f"{s['start_ms'] / 1000:.1f}-{s['end_ms'] / 1000:.1f} s {s['label']} "
                f"(peak {s['peak']:.2f})"
                for s in result.segments
            )
            state = "" if result.complete else ", INCOMPLETE"
            click.echo(
                f"{verdict['label']:<8}  video {verdict['duration_ms'] / 1000:.1f} s, "
                f"{verdict['samples']} samples ({result.sampling}{state}), "
                f"nsfw {verdict['score']:.3f} over {threshold:g}: {spans or 'no segment'}  "
                f"{result.path}{'  FLAGGED' if flagged else ''}"
            )
            for warning in result.warnings:
                click.echo(f"warning: {result.path}: {warning}", err=True)

    def skip(self, path: Path) -> None:
        """Report a file of a folder that is not a type the toolkit reads (not an error)."""
        self.skipped += 1
        reason = f"not a file type the toolkit reads ({path.suffix or 'no suffix'})"
        if self.fmt == "table":
            click.echo(f"{'SKIPPED':<8}  {reason}  {path}")
        elif self.fmt == "json":
            echo_json({"path": str(path), "skipped": reason, "kind": "unsupported_type"})
        elif not self.only_flagged:
            self.csv.writerow([path, "", *("" for _ in self.labels), "", "", reason,
                               "unsupported_type"])  # fmt: skip

    def summary(self, seconds: float) -> str:
        classified = sum(self.by_label.values())
        counts = ", ".join(f"{count} {label}" for label, count in self.by_label.most_common())
        rate = classified / seconds if seconds > 0 else 0.0
        skipped = f"; {self.skipped} skipped" if self.skipped else ""
        return (
            f"summary: {classified + self.errors} files: {counts or 'none classified'}; "
            f"{self.flagged} flagged; {self.errors} errors{skipped}; {rate:.1f} images/s"
        )


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Model file: .keras, TF.js model.json, .tflite, .onnx, .ort, .mlmodel or .mlpackage, "
    "a release folder, or 'pretrained' for the Keras reference. Default: the pretrained model as "
    "the float32 TFLite file the package ships (same answers with or without TensorFlow).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header row.")
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    default=None,
    help="Mark files whose nsfw_score (the sum of the model's NSFW labels' probabilities, "
    "P(Porn) + P(Sexy) for the pretrained model) is above this.",
)
@click.option(
    "--fail-on-flagged",
    is_flag=True,
    help=f"Exit with code {EXIT_FLAGGED} when any file is above --threshold (a moderation gate).",
)
@click.option(
    "--only-flagged", is_flag=True, help="Print only files above --threshold (and errors)."
)
@click.option(
    "--every",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Videos: classify the frame on screen every this many seconds (by presentation time).",
)
@click.option(
    "--keyframes",
    is_flag=True,
    help="Videos: classify keyframes only (much faster; samples where the encoder put them).",
)
@click.option(
    "--min-segment",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="Videos: drop flagged stretches shorter than this many seconds.",
)
@click.option(
    "--timeline-plot",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Videos: write a PNG per clip to this folder (score over time, threshold, segments).",
)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@threads_option(
    "Parallel lanes, each decoding and classifying its own images (default: one per core)."
)
@unsafe_option()
def predict(
    paths, model_path, as_json, as_csv, threshold, fail_on_flagged, only_flagged, every,
    keyframes, min_segment, timeline_plot, batch_size, threads, unsafe,
):  # fmt: skip
    """Classify image and video files and folders (recursively).

    Videos (mp4, mov, m4v, mkv, webm, avi, animated GIF and WebP; PyAV from the
    `video` extra) get a timeline, flagged segments and a verdict: the frame on
    screen every --every seconds, or --keyframes. Segments start above
    --threshold (default 0.5 for videos) and end below 0.8 x threshold. Images
    are answered first, then videos, each in input order.

    --model also takes a release folder (from `nsfw-mobile release`): the
    artefact that passed validation and runs fastest on this machine is used,
    measured on first use (a second or so) and remembered per machine and
    release; --verbose shows the figures.

    Every readable file is classified even when others fail; exit code 3 says
    that some files could not be read (their errors are in the output, with a
    machine-readable kind). Files inside folders whose suffix is not an image or
    video type are reported as SKIPPED lines and do not change the exit code; a file
    named on the command line is always decoded. With --fail-on-flagged, exit code 5 says that some
    file scored above --threshold (it wins over 3). A one-line summary goes to
    stderr at the end.

    \b
    Examples:
      nsfw-mobile predict photo.jpg
      nsfw-mobile predict photos/ --threshold 0.5
      nsfw-mobile predict photos/ --json > results.jsonl
      nsfw-mobile predict uploads/ --threshold 0.8 --fail-on-flagged --only-flagged --csv
      nsfw-mobile predict photos/ --model dist/nsfw_int8.tflite
      nsfw-mobile predict photos/ --model dist/nsfw_int8.onnx
      nsfw-mobile predict photos/ --model models/
      nsfw-mobile predict clips/ --json --every 0.5 --timeline-plot plots/
      nsfw-mobile predict upload.mp4 --keyframes --threshold 0.7 --fail-on-flagged
    """
    from ..images import walk_inputs
    from ..predict import classify

    if as_json and as_csv:
        raise UsageError("--json and --csv: choose one output format")
    if (fail_on_flagged or only_flagged) and threshold is None:
        raise UsageError("--fail-on-flagged and --only-flagged need --threshold")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")
    inputs = walk_inputs(paths)
    if not inputs.images and not inputs.unsupported:
        raise UsageError(f"no image files found in {', '.join(map(str, paths))}")
    runner = open_model(model_path, threads=threads, unsafe=unsafe)
    if not runner.contract.nsfw_labels:
        click.echo(
            f"note: {runner.name} names no NSFW labels ({', '.join(runner.labels)}): "
            "no nsfw_score" + (", so --threshold flags nothing" if threshold is not None else ""),
            err=True,
        )
    output = _Output(
        runner.labels,
        fmt="json" if as_json else "csv" if as_csv else "table",
        threshold=threshold,
        only_flagged=only_flagged,
    )
    for path in inputs.unsupported:
        output.skip(path)
    from ..video import is_video

    videos = [p for p in inputs.images if is_video(p)]
    video_set = set(videos)
    images = [p for p in inputs.images if p not in video_set]
    started = time.perf_counter()
    show_progress = len(images) > 1 and output.fmt == "table" and sys.stderr.isatty()
    with click.progressbar(
        length=len(images), label="Classifying", file=sys.stderr, hidden=not show_progress
    ) as bar:
        for prediction in classify(runner, images, batch_size=batch_size, workers=threads):
            bar.update(1)
            output.write(prediction)
    for path in videos:
        _classify_clip(runner, path, output, every=every, keyframes=keyframes,
                       threshold=0.5 if threshold is None else threshold,
                       min_segment=min_segment, plots=timeline_plot)  # fmt: skip
    total = len(inputs.images)
    if output.errors:
        click.echo(f"{output.errors} of {total} files could not be read", err=True)
    click.echo(output.summary(time.perf_counter() - started), err=True)
    if fail_on_flagged and output.flagged:
        sys.exit(EXIT_FLAGGED)
    if output.errors:
        sys.exit(EXIT_UNREADABLE)


def _classify_clip(runner, path, output, *, every, keyframes, threshold, min_segment, plots):
    from ..predict import Prediction
    from ..video import SegmentRule, VideoError, classify_video

    rule = SegmentRule(threshold=threshold, min_segment_s=min_segment)
    try:
        result = classify_video(runner, path, every=every, keyframes=keyframes, rule=rule)
    except VideoError as exc:
        output.write(Prediction(path=str(path), error=exc.reason, kind=exc.kind))
        return
    output.write_video(result, threshold=threshold)
    if plots is not None:
        from ..video_plot import plot_timeline

        plot_timeline(result, rule, plots / f"{Path(path).name}.png")


COMMANDS = (predict,)
