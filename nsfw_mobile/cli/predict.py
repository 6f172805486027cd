"""``nsfw-mobile predict``: classify image files and folders."""

from __future__ import annotations

import csv
import sys
import time
from collections import Counter
from pathlib import Path

import click

from ..errors import UsageError
from ..formats import batched_help, file_types_help
from ..live_rule import LiveRuleParams
from ..predict import Prediction, check_batching, classify, column_names
from ..resolve import RULES_HELP, RUN, resolve_model
from ..video import VIDEO_THRESHOLD, VideoError, classify_video, is_video
from .cluster import INPUT_PATH, check_ray_options, predict_on_ray, ray_options
from .common import (
    EXIT_FLAGGED,
    EXIT_UNREADABLE,
    MODEL,
    echo_json,
    explain_model,
    given,
    preprocess_option,
    renamed_option,
    unsafe_option,
)

VIDEO_OPTIONS = {
    "every": "--every",
    "keyframes": "--keyframes",
    "min_segment": "--min-segment",
    "stop_at_flag": "--stop-at-flag",
    "timeline_plot": "--timeline-plot",
}


def _table_line(prediction, labels, flagged: bool) -> str:
    if prediction.error is not None:
        return f"{'ERROR':<8}  {prediction.error}  {prediction.path}"
    probabilities = "  ".join(f"{prediction.probabilities[n]:>8.4f}" for n in labels)
    mark = "  FLAGGED" if flagged else ""
    score = "-" if prediction.nsfw_score is None else f"{prediction.nsfw_score:.3f}"
    return f"{prediction.label:<8}  {probabilities}  {score:>6}  {prediction.path}{mark}"


class _Output:
    """Writes results as a table, JSON lines or CSV, and counts them for the summary."""

    def __init__(self, runner, *, fmt: str, threshold: float | None, only_flagged: bool):
        """``runner``: the open model (its labels are the columns), or its labels."""
        labels = getattr(runner, "labels", runner)
        self.labels, self.fmt, self.threshold, self.only_flagged = (
            labels,
            fmt,
            threshold,
            only_flagged,
        )
        if hasattr(runner, "contract") and not runner.contract.nsfw_labels:
            click.echo(
                f"note: {runner.name} names no NSFW labels ({', '.join(runner.labels)}): "
                "no nsfw_score"
                + (", so --threshold flags nothing" if threshold is not None else ""),
                err=True,
            )
        self.by_label: Counter = Counter()
        self.flagged = self.errors = self.skipped = 0
        self.csv = None
        if fmt == "csv":
            self.csv = csv.writer(click.get_text_stream("stdout"), lineterminator="\n")
            self.csv.writerow(column_names(labels))
        elif fmt == "table":
            header = "  ".join(f"{name:>8}" for name in labels)
            click.echo(f"{'label':<8}  {header}  {'nsfw':>6}  path")

    def write(self, prediction) -> None:
        flagged = prediction.is_flagged(self.threshold)
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
            echo_json(prediction.record(self.threshold))
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
            if result.stopped:
                state += f", stopped at {result.stopped['at_ms'] / 1000:.1f} s"
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

    def progress(self, count: int):
        """A bar on stderr for ``count`` images, shown on a terminal for the table only."""
        shown = count > 1 and self.fmt == "table" and sys.stderr.isatty()
        return click.progressbar(
            length=count, label="Classifying", file=sys.stderr, hidden=not shown
        )

    def finish(self, total: int, seconds: float, fail_on_flagged: bool) -> None:
        """The summary on stderr, then the exit code: 5 flagged (with --fail-on-flagged),
        3 some files unreadable."""
        if self.errors:
            click.echo(f"{self.errors} of {total} files could not be read", err=True)
        click.echo(self.summary(seconds), err=True)
        if fail_on_flagged and self.flagged:
            sys.exit(EXIT_FLAGGED)
        if self.errors:
            sys.exit(EXIT_UNREADABLE)

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
    type=MODEL,
    default=None,
    help=f"The model: {RULES_HELP} ({file_types_help()}). A release folder runs its "
    "fastest validated file on this machine; a zoo name its cached release's (`nsfw-mobile "
    "models --fetch NAME --release` makes it), else its Keras reference (needs TensorFlow). "
    "Default: the pretrained model as the float32 TFLite file the package ships. "
    "--verbose says which.",
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
    help="Videos: the live rule's minimum duration: a stretch is flagged once its smoothed "
    "score has stayed above --threshold this many seconds (docs/live-rule.md).",
)
@click.option(
    "--stop-at-flag",
    is_flag=True,
    help=f"Videos: stop decoding a clip where the live rule first flags it and exit with code "
    f"{EXIT_FLAGGED} (an upload gate that need not read the rest); the JSON's 'stopped' says "
    "where it stopped and how much of the file it read.",
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
    help=f"Images per model call: {batched_help()}.",
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
    ctx, paths, model, as_json, as_csv, threshold, fail_on_flagged, only_flagged, every,
    keyframes, min_segment, stop_at_flag, timeline_plot, batch_size, workers, unsafe,
    preprocess, ray_address, out_dir, actors,
):  # fmt: skip
    """Classify image and video files and folders (recursively).

    Videos (mp4, mov, m4v, mkv, webm, avi, animated GIF and WebP; PyAV from the
    `video` extra) get a timeline, flagged segments and a verdict: the frame on
    screen every --every seconds, or --keyframes. The live rule (docs/live-rule.md)
    smooths the scores over time and flags a stretch once the smoothed score is
    above --threshold (default {video_threshold} for videos) for --min-segment seconds, until it
    falls below 0.8 x threshold; --stop-at-flag stops reading there. Images
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
      nsfw-mobile predict upload.mp4 --stop-at-flag --timeline-plot upload.png
    """
    from ..images import walk_inputs

    check_ray_options(ctx)
    _check_options(ctx, as_json, as_csv, threshold, fail_on_flagged, only_flagged, keyframes)
    ref = resolve_model(model, use=RUN, unsafe=unsafe, preprocessing=preprocess,
                        log=lambda line: click.echo(line, err=True))  # fmt: skip
    explain_model(ref, as_json=as_json)
    if ray_address is not None and preprocess:
        raise UsageError("--preprocess with --ray: convert the .onnx source first")
    if ray_address is not None:  # --batch-size: rows per Ray batch, for every engine
        if ref.engine_override is not None:  # a worker resolves the file: its own engine
            own = ref.file_type.engine_id
            click.echo(f"note: on Ray the workers run {ref.path.name} on {own}", err=True)
        return predict_on_ray(
            paths, model=ref, output_class=_Output, threshold=threshold,
            fail_on_flagged=fail_on_flagged, batch_size=batch_size, unsafe=unsafe,
            ray_address=ray_address, out_dir=out_dir, actors=actors,
        )  # fmt: skip
    if given(ctx, "batch_size"):
        check_batching(ref, workers)
    inputs = walk_inputs(paths)
    if not inputs.images and not inputs.unsupported:
        raise UsageError(f"no image files found in {', '.join(map(str, paths))}")
    videos = [p for p in inputs.images if is_video(p)]
    plots = _check_video_options(ctx, paths, videos, timeline_plot)
    output_format = "json" if as_json else "csv" if as_csv else "table"
    with ref.open_runner() as runner:
        output = _Output(runner, fmt=output_format, threshold=threshold, only_flagged=only_flagged)
        for path in inputs.unsupported:
            output.skip(path)
        images = [p for p in inputs.images if p not in set(videos)]
        started = time.perf_counter()
        with output.progress(len(images)) as bar:
            for prediction in classify(runner, images, batch_size=batch_size, workers=workers):
                bar.update(1)
                output.write(prediction)
        for path in videos:
            _classify_clip(runner, path, output, every=every, keyframes=keyframes,
                           threshold=VIDEO_THRESHOLD if threshold is None else threshold,
                           min_segment=min_segment, plot=plots.get(path),
                           batch_size=batch_size, stop_at_flag=stop_at_flag)  # fmt: skip
    output.finish(
        len(inputs.images), time.perf_counter() - started, fail_on_flagged or stop_at_flag
    )


def _check_options(ctx, as_json, as_csv, threshold, fail_on_flagged, only_flagged, keyframes):
    """Refuse option combinations that cannot apply, before any work."""
    if as_json and as_csv:
        raise UsageError("--json and --csv: choose one output format")
    if (fail_on_flagged or only_flagged) and threshold is None:
        raise UsageError("--fail-on-flagged and --only-flagged need --threshold")
    if keyframes and given(ctx, "every"):
        raise UsageError(
            "--every and --keyframes: choose one way to sample videos (a clip with one "
            "keyframe is sampled every second)"
        )


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
                   batch_size, stop_at_flag):  # fmt: skip
    rule = LiveRuleParams(on=threshold, min_duration_s=min_segment)
    try:
        result = classify_video(
            runner, path, every=every, keyframes=keyframes, rule=rule, batch_size=batch_size,
            stop_at_flag=stop_at_flag,
        )  # fmt: skip
    except VideoError as exc:
        output.write(Prediction(path=str(path), error=exc.reason, kind=exc.kind))
        return
    if plot is not None:
        from ..video_plot import plot_timeline

        plot_timeline(result, rule, plot)
    output.write_video(result, threshold=threshold, plot=plot)


COMMANDS = (predict,)
