"""``nsfw-mobile bench``: measure models on this CPU."""

from __future__ import annotations

import json

import click

from ..errors import UsageError
from .common import (
    MODEL,
    Progress,
    explain_model,
    json_option,
    report_option,
    thread_counts,
    threads_option,
    write_text_atomically,
)


def runs_options(runs: int, seconds: float):
    def decorate(command):
        command = click.option(
            "--seconds",
            type=click.FloatRange(0),
            default=seconds,
            show_default=True,
            help="Minimum seconds of timed runs per artefact.",
        )(command)
        return click.option(
            "--runs",
            type=click.IntRange(1),
            default=runs,
            show_default=True,
            help="Minimum timed runs per artefact (also at least --seconds of runs).",
        )(command)

    return decorate


def thread_options(command):
    """--threads N (one engine thread count) or --thread-counts 1,2 (each in turn)."""
    command = click.option(
        "--thread-counts",
        "thread_counts_text",
        default=None,
        help="Comma-separated engine thread counts to measure in turn, e.g. 1,2 "
        "(default: --threads, else 1). Engines without a thread setting (TF.js) are "
        "measured once, at 1 thread.",
    )(command)
    return threads_option(
        "Threads each model's engine uses while it is measured (default 1).",
        several_hint=": to measure several counts, use --thread-counts 1,2",
    )(command)


def chosen_thread_counts(threads: int | None, text: str | None) -> tuple[int, ...]:
    if threads is not None and text is not None:
        raise UsageError("--threads and --thread-counts: give one (--thread-counts 1,2 or more)")
    if text is not None:
        return thread_counts(text)
    return (threads or 1,)


def engine_option(command):
    from ..formats import ENGINE_KEYS

    return click.option(
        "--engine",
        type=click.Choice([*ENGINE_KEYS, "all"]),
        default=None,
        help="Run each file on this engine (default: the file's own; 'all': every engine that "
        "may run it and is installed, e.g. .onnx on onnxruntime and openvino). Files the "
        "engine cannot run are left out, with a note.",
    )(command)


@click.command("bench", short_help="Measure latency, memory and size of models on this CPU.")
@click.argument("artifacts", nargs=-1, required=True, type=MODEL)
@engine_option
@thread_options
@runs_options(50, 2.0)
@json_option("Print the report as JSON (and no progress lines on stderr).")
@report_option("Also write a Markdown table to this file.")
def bench_command(
    artifacts, engine, threads, thread_counts_text, runs, seconds, as_json, report_path
):
    """Measure batch-1 latency (median, p90, p99, mean, std), load time, peak
    memory and size of ARTIFACTS on this CPU.

    Each artefact runs in its own process; runs of different artefacts are
    interleaved in rounds, each on the engine that runs it (the registry's:
    {engines}; Core ML on macOS only); --engine openvino runs the .onnx files
    on OpenVINO, --engine all every file on every engine that may run it.
    ARTIFACTS are model files, a zoo model's name ('pretrained', mid, ...: its
    Keras reference; ./mid is a path), a folder (every model file in it), or a
    release folder (the files its manifest marks releasable).

    \b
    Examples:
      nsfw-mobile bench models/ --engine all
      nsfw-mobile bench dist/nsfw_int8.tflite dist/nsfw_int8.onnx --thread-counts 1,2
      nsfw-mobile bench dist/nsfw_int8.tflite dist/nsfw_float32.tflite pretrained --json
    """
    from ..bench import bench, render_markdown, render_table, result_label
    from ..formats import engine_pairs
    from ..resolve import MEASURE, resolve_model

    counts = chosen_thread_counts(threads, thread_counts_text)
    progress = Progress(quiet=as_json)
    echo = progress.line
    models = [resolve_model(a, use=MEASURE, log=echo) for a in artifacts]
    for ref in models:
        explain_model(ref, as_json=as_json)
        if ref.excluded:
            echo(f"note: {ref.given}: not benchmarked, not releasable: {', '.join(ref.excluded)}")

    def measured(result):
        progress.line(f"  {result_label(result)} x{result.threads}: {result.median_ms:.2f} ms")

    parts = [part for ref in models for part in ref.parts]
    paths, engines, left_out = engine_pairs(parts, engine, skip_unrunnable=True)
    for line in left_out:
        progress.line(f"note: not benchmarked: {line}")
    if not paths:
        raise UsageError(f"--engine {engine}: it runs none of the files given")
    report = bench(
        paths,
        engines=engines,
        threads=counts,
        min_runs=runs,
        min_seconds=seconds,
        on_result=measured,
    )
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else render_table(report))
    if report_path:
        write_text_atomically(report_path, render_markdown(report))


COMMANDS = (bench_command,)
