"""``nsfw-mobile predict``: classify image files and folders."""

from __future__ import annotations

import csv
import sys
import time
from collections import Counter
from pathlib import Path

import click

from ..errors import UsageError
from .cluster import INPUT_PATH, check_ray_options, ray_options
from .common import (
    EXIT_FLAGGED,
    EXIT_UNREADABLE,
    MODEL_NAMES_HELP,
    MODEL_PATH,
    check_preprocess,
    check_unsafe,
    echo_json,
    fetch_named_model,
    given,
    preprocess_option,
    renamed_option,
    unsafe_option,
)

VIDEO_OPTIONS = {
    "every": "--every",
    "keyframes": "--keyframes",
    "min_segment": "--min-segment",
    "timeline_plot": "--timeline-plot",
}


def model_file(model_path: Path | str | None) -> Path | str:
    """The file --model names: a model file, a release folder's fastest validated model on
    this machine, a zoo model's name (its Keras reference), or by default the pretrained
    model as the float32 TFLite file the package ships."""
    from ..formats import PRETRAINED_TFLITE, is_named_model

    if model_path is None:
        return PRETRAINED_TFLITE
    if is_named_model(model_path):
        _need_tensorflow_for(str(model_path))
        fetch_named_model(model_path)
        return str(model_path)
    if not Path(model_path).is_dir():
        return model_path
    from ..release import is_release_folder

    if is_release_folder(model_path):
        from ..engine_choice import fastest_here

        choice = fastest_here(model_path)
        click.echo(
            f"using {choice.path.name} ({choice.engine}), the fastest validated model of the "
            "release on this machine",
            err=True,
        )
        if click.get_current_context().meta.get("verbose"):
            for line in choice.explain():
                click.echo(line, err=True)
        return choice.path
    return model_path


def _need_tensorflow_for(name: str) -> None:
    """A zoo model by name runs as its Keras reference: say so when TensorFlow is missing."""
    import importlib.util

    from ..errors import NsfwMobileError
    from ..zoo import lookup

    if importlib.util.find_spec("tensorflow") is None:
        key = lookup(name).key
        raise NsfwMobileError(
            f"--model {name} runs {key} as its Keras reference, which needs TensorFlow (not "
            "installed here): pip install 'nsfw-mobile[full]'; or, where TensorFlow is "
            f"installed, make a release (nsfw-mobile release {key} --out DIR) and pass "
            "--model DIR (its TFLite files run without TensorFlow)"
        )


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

    def write_video(self, result, *, threshold: float, plot: Path | None = None) -> None:
        """One line (or JSON object) per clip: its verdict, segments and, in JSON, timeline
        (and where its plot went)."""
        verdict = result.verdict
        self.by_label[verdict["label"]] += 1
        flagged = verdict["flagged"]
        self.flagged += flagged
        if self.only_flagged and not flagged:
            return
        if self.fmt == "json":
            document = result.to_dict()
            if plot is not None:
                document["timeline_plot"] = str(plot)
            echo_json(document)
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
            if plot is not None:
                click.echo(f"plot: {plot}", err=True)

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


@click.command(short_help="Classify photos and videos: files, folders, or on Ray.")
@click.argument("paths", nargs=-1, required=True, type=INPUT_PATH)
@click.option(
    "--model",
    "model_path",
    type=MODEL_PATH,
    default=None,
    help="Model file: .keras, TF.js model.json (layers or graph), .tflite, .onnx, .ort, "
    f".mlmodel or .mlpackage, a release folder, or {MODEL_NAMES_HELP}, run as its Keras "
    "reference (needs TensorFlow; 'pretrained' is the default model's). Default: the "
    "pretrained model as "
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
    help="Videos: classify keyframes only (much faster; samples where the encoder put them; "
    "a clip with one keyframe is sampled every second instead, with a warning).",
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
    type=click.Path(path_type=Path),
    default=None,
    help="Videos: a folder (a name without a suffix) for one PNG per clip (score over time, "
    "threshold, segments), named after each clip's path; or a .png file name for a single "
    "clip. Needs matplotlib.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=32,
    show_default=True,
    help="Images per model call for engines that take batches (.keras, TF.js, Core ML); "
    "a TFLite model takes one image per call in each lane.",
)
@click.option(
    "--workers",
    type=click.IntRange(1),
    default=None,
    help="Parallel lanes, each decoding and classifying its own images "
    "(default: one per core, at most 8).",
)
@renamed_option("--threads", "--workers", "parallel lanes")
@unsafe_option()
@preprocess_option()
@ray_options
@click.pass_context
def predict(
    ctx, paths, model_path, as_json, as_csv, threshold, fail_on_flagged, only_flagged, every,
    keyframes, min_segment, timeline_plot, batch_size, workers, unsafe, preprocess, ray_address,
    out_dir, actors,
):  # fmt: skip
    """Classify image and video files and folders (recursively).

    Videos (mp4, mov, m4v, mkv, webm, avi, animated GIF and WebP; PyAV from the
    `video` extra) get a timeline, flagged segments and a verdict: the frame on
    screen every --every seconds, or --keyframes. Segments start above
    --threshold (default 0.5 for videos) and end below 0.8 x threshold. Images
    are answered first, then videos, each in input order. Video options with
    files none of which is a video are refused; with folders that hold no video,
    a note says so.

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
      nsfw-mobile predict photos/ --json > results.jsonl
      nsfw-mobile predict uploads/ --threshold 0.8 --fail-on-flagged --only-flagged --csv
      nsfw-mobile predict upload.mp4 --model models/ --timeline-plot upload.png
    """
    from ..formats import TFLITE, file_type_of
    from ..images import walk_inputs
    from ..predict import classify
    from ..video import is_video

    check_ray_options(ctx)
    if ray_address is not None:
        from .cluster import predict_on_ray

        if preprocess:
            raise UsageError("--preprocess with --ray: convert the .onnx source first")
        chosen = model_file(model_path)
        check_unsafe(chosen, unsafe)
        return predict_on_ray(
            paths, model=chosen, output_class=_Output, threshold=threshold,
            fail_on_flagged=fail_on_flagged, batch_size=batch_size, unsafe=unsafe,
            ray_address=ray_address, out_dir=out_dir, actors=actors,
        )  # fmt: skip
    if as_json and as_csv:
        raise UsageError("--json and --csv: choose one output format")
    if (fail_on_flagged or only_flagged) and threshold is None:
        raise UsageError("--fail-on-flagged and --only-flagged need --threshold")
    if keyframes and given(ctx, "every"):
        raise UsageError(
            "--every and --keyframes: choose one way to sample videos (a clip with one "
            "keyframe is sampled every second)"
        )
    inputs = walk_inputs(paths)
    if not inputs.images and not inputs.unsupported:
        raise UsageError(f"no image files found in {', '.join(map(str, paths))}")
    videos = [p for p in inputs.images if is_video(p)]
    plots = _check_video_options(ctx, paths, videos, timeline_plot)
    chosen = model_file(model_path)
    check_unsafe(chosen, unsafe)
    check_preprocess(chosen if preprocess else None, preprocess)
    if given(ctx, "batch_size") and file_type_of(chosen) is TFLITE:
        raise UsageError(
            f"--batch-size applies to engines that take batches (.keras, TF.js, Core ML); "
            f"{Path(str(chosen)).name} is TFLite, one image per call in each lane "
            "(--workers sets the lanes): drop --batch-size"
        )
    from ..runtime import open_runner

    options = {"preprocessing": list(preprocess)} if preprocess else {}
    with open_runner(chosen, allow_unsafe=unsafe, **options) as runner:
        output = _Output(
            runner.labels,
            fmt="json" if as_json else "csv" if as_csv else "table",
            threshold=threshold,
            only_flagged=only_flagged,
        )
        if not runner.contract.nsfw_labels:
            click.echo(
                f"note: {runner.name} names no NSFW labels ({', '.join(runner.labels)}): "
                "no nsfw_score"
                + (", so --threshold flags nothing" if threshold is not None else ""),
                err=True,
            )
        for path in inputs.unsupported:
            output.skip(path)
        video_set = set(videos)
        images = [p for p in inputs.images if p not in video_set]
        started = time.perf_counter()
        show_progress = len(images) > 1 and output.fmt == "table" and sys.stderr.isatty()
        with click.progressbar(
            length=len(images), label="Classifying", file=sys.stderr, hidden=not show_progress
        ) as bar:
            for prediction in classify(runner, images, batch_size=batch_size, workers=workers):
                bar.update(1)
                output.write(prediction)
        for path in videos:
            _classify_clip(runner, path, output, every=every, keyframes=keyframes,
                           threshold=0.5 if threshold is None else threshold,
                           min_segment=min_segment, plot=plots.get(path),
                           batch_size=batch_size)  # fmt: skip
    total = len(inputs.images)
    if output.errors:
        click.echo(f"{output.errors} of {total} files could not be read", err=True)
    click.echo(output.summary(time.perf_counter() - started), err=True)
    if fail_on_flagged and output.flagged:
        sys.exit(EXIT_FLAGGED)
    if output.errors:
        sys.exit(EXIT_UNREADABLE)


def _check_video_options(ctx, paths, videos, timeline_plot) -> dict:
    """Refuse video options that cannot apply, before any work; the plot of each clip."""
    chosen = [flag for name, flag in VIDEO_OPTIONS.items() if given(ctx, name)]
    if chosen and not videos:
        if all(Path(p).is_file() for p in paths):
            raise UsageError(f"{', '.join(chosen)}: options for videos, and no input is a video")
        click.echo(f"note: {', '.join(chosen)}: no video among the inputs", err=True)
        return {}
    if timeline_plot is None or not videos:
        return {}
    from ..video_plot import plot_paths, require_matplotlib

    plots = plot_paths(videos, timeline_plot)
    require_matplotlib()
    return plots


def _classify_clip(runner, path, output, *, every, keyframes, threshold, min_segment, plot,
                   batch_size):  # fmt: skip
    from ..predict import Prediction
    from ..video import SegmentRule, VideoError, classify_video

    rule = SegmentRule(threshold=threshold, min_segment_s=min_segment)
    try:
        result = classify_video(
            runner, path, every=every, keyframes=keyframes, rule=rule, batch_size=batch_size
        )
    except VideoError as exc:
        output.write(Prediction(path=str(path), error=exc.reason, kind=exc.kind))
        return
    if plot is not None:
        from ..video_plot import plot_timeline

        plot_timeline(result, rule, plot)
    output.write_video(result, threshold=threshold, plot=plot)


COMMANDS = (predict,)
