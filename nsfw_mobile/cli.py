"""The ``nsfw-mobile`` command: thin click commands over the library.

Exit codes (the same for every command):

* 0: success
* 1: error (bad model file, failed conversion, ...)
* 2: usage error (bad option or combination)
* 3: predict: some input files could not be read (the others were classified)
* 4: validate / release: a candidate model failed validation
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path

import click

from . import __version__
from .errors import NsfwMobileError, UsageError, ValidationFailed
from .formats import FORMATS, TARGETS

FORMAT_KEYS = [f.key for f in FORMATS if f.key not in TARGETS]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREADABLE = 3
EXIT_VALIDATION_FAILED = 4

# Modules of the `full` extra: commands that need them say how to install them.
FULL_INSTALL_MODULES = {"tensorflow", "keras", "coremltools", "matplotlib", "tensorboard"}


def handle_errors(command):
    """Turn library errors into one-line messages and documented exit codes."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UsageError as exc:
            click.echo(f"Usage error: {exc}", err=True)
            sys.exit(EXIT_USAGE)
        except ValidationFailed as exc:
            click.echo(f"Validation failed: {exc}", err=True)
            sys.exit(EXIT_VALIDATION_FAILED)
        except NsfwMobileError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(EXIT_ERROR)
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] not in FULL_INSTALL_MODULES:
                raise
            click.echo(
                f"Error: this needs {exc.name}, which a runtime-only install leaves out: "
                "pip install 'nsfw-mobile[full]'",
                err=True,
            )
            sys.exit(EXIT_ERROR)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nsfw-mobile")
def main():
    """NSFW image classifier (Neutral / Porn / Sexy) for phones: classify, convert,
    validate and benchmark Core ML and TFLite models.

    \b
    Examples:
      nsfw-mobile predict photos/
      nsfw-mobile convert --to all --out dist/
      nsfw-mobile validate dist/*.tflite dist/NSFW.mlmodel
    """


def thread_counts(text: str) -> tuple[int, ...]:
    """Parse a --threads value such as "1,2"."""
    try:
        counts = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise UsageError(f"--threads {text!r}: give comma-separated integers such as 1,2") from None
    if not counts or min(counts) < 1:
        raise UsageError(f"--threads {text!r}: give thread counts of 1 or more")
    return counts


def _echo_json(document) -> None:
    click.echo(json.dumps(document, sort_keys=False))


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Model file: .keras, TF.js model.json, .tflite, .mlmodel or .mlpackage "
    "(default: the pretrained model).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    default=None,
    help="Mark files whose nsfw_score = P(Porn) + P(Sexy) is above this.",
)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option(
    "--threads",
    type=click.IntRange(1),
    default=None,
    help="Decoding threads and TFLite threads (default: one per core).",
)
@click.option(
    "--unsafe", is_flag=True, help="Allow .keras models with Lambda layers (runs their code)."
)
@handle_errors
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
    from .images import find_images
    from .predict import classify
    from .runtime import open_runner, runner_kind

    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")
    files = find_images(paths)
    if not files:
        raise UsageError(f"no image files found in {', '.join(map(str, paths))}")
    if model_path is not None and (model_path / "manifest.json").is_file():
        from .release import fastest_artifact

        model_path = fastest_artifact(model_path)
        click.echo(f"using {model_path.name}, the fastest validated model of the release", err=True)
    options = {"allow_unsafe": unsafe} if runner_kind(model_path) == "keras" else {}
    runner = open_runner(model_path, num_threads=threads, **options)
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
            if as_json:
                document = prediction.to_dict()
                if threshold is not None and prediction.error is None:
                    document["flagged"] = flagged
                _echo_json(document)
            elif prediction.error is not None:
                click.echo(f"{'ERROR':<8}  {prediction.error}  {prediction.path}")
            else:
                probs = "  ".join(f"{prediction.probabilities[n]:>8.4f}" for n in runner.labels)
                mark = "  FLAGGED" if flagged else ""
                click.echo(
                    f"{prediction.label:<8}  {probs}  {prediction.nsfw_score:>6.3f}  "
                    f"{prediction.path}{mark}"
                )
    if failures:
        click.echo(f"{failures} of {len(files)} files could not be read", err=True)
        sys.exit(EXIT_UNREADABLE)


@main.command("import-tfjs")
@click.argument("model_json", type=click.Path(exists=True, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@handle_errors
def import_tfjs(model_json, out):
    """Convert a TF.js layers model (model.json + shards) to a .keras file.

    \b
    Example:
      nsfw-mobile import-tfjs web_model/model.json model.keras
    """
    from .atomic import atomic_path
    from .tfjs import tfjs2keras

    if out.suffix != ".keras":
        raise UsageError(f"{out}: the output must end in .keras")
    model = tfjs2keras(model_json)
    with atomic_path(out) as temporary:
        model.save(temporary)
    click.echo(f"wrote {out} ({model.count_params():,} parameters)")


@main.command()
@click.argument("model", required=False, default=None)
@click.option(
    "--to",
    "targets",
    multiple=True,
    required=True,
    type=click.Choice([*TARGETS, *FORMAT_KEYS, "all"]),
    help="Output: a target (mlmodel, mlpackage, tflite, with --quantize/--precision) or "
    "a format key such as tflite-int8 (see `nsfw-mobile formats`); repeat for "
    "several. 'all': every format.",
)
@click.option(
    "--quantize",
    default="none",
    show_default=True,
    help="mlmodel: none|float16. mlpackage: none|int8. tflite: none|float16|dynamic|int8.",
)
@click.option(
    "--precision",
    type=click.Choice(["float16", "float32"]),
    default=None,
    help="ML Program compute precision (--to mlpackage; default float16).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("dist"),
    show_default=True,
    help="Output folder.",
)
@click.option(
    "--calibration",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder of representative images for full-integer TFLite (at least 20).",
)
@click.option(
    "--io",
    "io_type",
    type=click.Choice(["uint8", "int8", "float32"]),
    default="uint8",
    show_default=True,
    help="Input and output type of full-integer TFLite models.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@click.option(
    "--unsafe", is_flag=True, help="Allow .keras models with Lambda layers (runs their code)."
)
@handle_errors
def convert(model, targets, quantize, precision, out_dir, calibration, io_type, as_json, unsafe):
    """Convert MODEL (default: the pretrained model; or a .keras file or a TF.js
    model.json) to Core ML and TFLite.

    Files are named predictably (NSFW.mlmodel, NSFW.mlpackage,
    nsfw_float32.tflite, nsfw_int8.tflite, ...) and written atomically: an
    interrupted run never leaves a file under its final name.

    \b
    Examples:
      nsfw-mobile convert --to all --out dist/
      nsfw-mobile convert --to mlmodel --to tflite --quantize float16
      nsfw-mobile convert --to mlmodel --to mlpackage --to tflite-float16 --to tflite-int8
      nsfw-mobile convert --to tflite --quantize int8 --calibration photos/
      nsfw-mobile convert my_model.keras --to mlpackage --precision float32 --json
    """
    from . import formats as registry
    from .convert import check_request, convert_all
    from .models import load_source

    if "all" in targets:
        if quantize != "none" or precision is not None:
            raise UsageError(
                "--to all makes every quantization and precision: drop --quantize/--precision"
            )
        chosen = list(registry.FORMATS)
    else:
        chosen = [
            registry.select(t, quantize, precision) if t in TARGETS else registry.by_key(t)
            for t in dict.fromkeys(targets)
        ]
    check_request(chosen, io_type=io_type, calibration=calibration)
    started = time.perf_counter()
    source = load_source(model, allow_unsafe=unsafe)

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
    )
    if as_json:
        _echo_json(
            {
                "source": {
                    "path": source.path,
                    "sha256": source.sha256,
                    "labels": list(source.labels),
                },
                "artifacts": [a.to_dict() for a in artifacts],
                "labels_file": str(out_dir / "labels.txt"),
                "seconds": round(time.perf_counter() - started, 2),
            }
        )
    else:
        for artifact in artifacts:
            click.echo(
                f"{artifact.path}  {artifact.size_bytes / 1e6:8.2f} MB  {artifact.sha256[:16]}"
            )


@main.command()
@click.argument("candidates", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--reference",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Reference model (.keras or TF.js model.json; default: the pretrained model).",
)
@click.option(
    "--images",
    "image_paths",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Images or folders to compare on (default: the shipped sample images).",
)
@click.option(
    "--format",
    "format_keys",
    multiple=True,
    help="Format key(s) for artefacts without nsfw-mobile metadata (see `nsfw-mobile formats`).",
)
@click.option("--threads", type=click.IntRange(1), default=None, help="TFLite threads.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write a Markdown report to this file.",
)
@handle_errors
def validate(candidates, reference, image_paths, format_keys, threads, as_json, report_path):
    """Check that converted models agree with the reference model.

    Runs the reference and every CANDIDATE (.tflite, .mlmodel, .mlpackage) on
    the same decoded images and compares probabilities against each format's
    tolerance. Core ML models run on Linux through the toolkit's own numpy
    executor. Exit code 0: all pass; 4: a candidate failed (tolerance miss or
    label/shape mismatch); 1 or 2: bad input or usage.

    \b
    Examples:
      nsfw-mobile validate dist/*.tflite dist/*.mlmodel dist/*.mlpackage
      nsfw-mobile validate dist/nsfw_int8.tflite --images photos/ --report report.md
      nsfw-mobile validate my.tflite --reference my.keras --format tflite-float16 --json
    """
    from .validate import ensure_readable, render_json, render_markdown, render_table
    from .validate import validate as run_validation

    ensure_readable(list(candidates))

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
    )
    click.echo(render_json(report) if as_json else render_table(report))
    if report_path:
        from .atomic import atomic_path

        with atomic_path(report_path) as temporary:
            temporary.write_text(render_markdown(report))
    for line in report.unreadable:
        click.echo(f"skipped unreadable image {line}", err=True)
    if not report.passed:
        sys.exit(EXIT_VALIDATION_FAILED)


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
@handle_errors
def inspect(path, as_json):
    """Describe a model file: format, inputs (shape, dtype, quantization,
    preprocessing), outputs, labels, metadata, size, parameters and op counts.

    Reads .keras, TF.js model.json, .tflite, .mlmodel and .mlpackage.

    \b
    Examples:
      nsfw-mobile inspect dist/nsfw_int8.tflite
      nsfw-mobile inspect dist/NSFW.mlpackage --json
    """
    from .inspect_model import inspect_file, render

    report = inspect_file(path)
    click.echo(json.dumps(report, indent=2, default=str) if as_json else render(report))


@main.command()
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Run folder: best.keras, last.keras, metrics.csv, curves.png, tensorboard/.",
)
@click.option(
    "--backbone",
    default="imagenet",
    show_default=True,
    help="Backbone start: imagenet (downloaded by Keras), nsfw (the pretrained model's "
    "MobileNetV2), none (random), or a weights file.",
)
@click.option("--alpha", type=float, default=1.0, show_default=True, help="MobileNetV2 width.")
@click.option("--input-size", type=int, default=224, show_default=True)
@click.option(
    "--epochs",
    type=click.IntRange(1),
    default=100,
    show_default=True,
    help="Epochs of phase 1 (head only, backbone frozen).",
)
@click.option(
    "--fine-tune",
    "fine_tune_layers",
    type=click.IntRange(0),
    default=0,
    help="Phase 2: unfreeze the top N backbone layers (BatchNorm stays frozen).",
)
@click.option("--fine-tune-epochs", type=click.IntRange(0), default=0, help="Epochs of phase 2.")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option(
    "--lr",
    "learning_rate",
    type=float,
    default=1e-3,
    show_default=True,
    help="Learning rate of phase 1 (phase 2 uses a tenth).",
)
@click.option(
    "--optimizer",
    type=click.Choice(["sgd", "adam"]),
    default="sgd",
    show_default=True,
    help="SGD with momentum 0.9 (the seed's) or Adam.",
)
@click.option(
    "--val-split",
    type=float,
    default=None,
    help="Validation fraction when DATA_DIR has no test/ folder (default 0.2).",
)
@click.option(
    "--no-class-weights", is_flag=True, help="Do not weight classes by inverse frequency."
)
@click.option(
    "--augment",
    default="rotation,shift,shear,zoom,channel_shift,flip",
    show_default=True,
    help="Comma-separated augmentations, or 'none'.",
)
@click.option(
    "--early-stopping",
    type=click.IntRange(1),
    default=10,
    show_default=True,
    help="Stop after this many epochs without a better validation accuracy.",
)
@click.option(
    "--steps-per-epoch",
    type=click.IntRange(1),
    default=None,
    help="Batches per epoch (the seed used 10); default: the whole training set.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Makes CPU runs repeatable.")
@click.option("--resume", is_flag=True, help="Continue the interrupted run in --out.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary at the end.")
@handle_errors
def train(
    data_dir,
    out_dir,
    backbone,
    alpha,
    input_size,
    epochs,
    fine_tune_layers,
    fine_tune_epochs,
    batch_size,
    learning_rate,
    optimizer,
    val_split,
    no_class_weights,
    augment,
    early_stopping,
    steps_per_epoch,
    seed,
    resume,
    as_json,
):
    """Train the seed architecture (MobileNetV2 + small head) on DATA_DIR.

    DATA_DIR holds one folder per class (neutral, porn, sexy), either directly or
    under train/ with a test/ folder beside it. Corrupt files are listed and
    skipped before training starts.

    \b
    Examples:
      nsfw-mobile train data/ --out runs/first --backbone nsfw --epochs 20
      nsfw-mobile train data/ --out runs/ft --epochs 10 --fine-tune 30 --fine-tune-epochs 10
      nsfw-mobile train data/ --out runs/first --resume
      nsfw-mobile convert runs/first/best.keras --to all --out dist/
    """
    from dataclasses import asdict

    from .train import TrainConfig
    from .train import train as run_training

    augmentations = (
        ()
        if augment.strip() == "none"
        else tuple(a.strip() for a in augment.split(",") if a.strip())
    )
    config = TrainConfig(
        data_dir=str(data_dir),
        out=str(out_dir),
        alpha=alpha,
        input_size=input_size,
        backbone=backbone,
        epochs=epochs,
        fine_tune_layers=fine_tune_layers,
        fine_tune_epochs=fine_tune_epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        optimizer=optimizer,
        val_split=val_split,
        class_weights=not no_class_weights,
        augment=augmentations,
        early_stopping=early_stopping,
        seed=seed,
        steps_per_epoch=steps_per_epoch,
    )
    if not resume:
        config.check()
    result = run_training(config, resume=resume, log=lambda line: click.echo(line, err=True))
    summary = {
        **asdict(result),
        "run_dir": str(result.run_dir),
        "best_model": str(result.best_model),
    }
    if as_json:
        _echo_json(summary)
    else:
        click.echo(
            f"best validation accuracy {result.best_val_accuracy:.2%} after "
            f"{result.epochs_run} epochs; model: {result.best_model}"
        )


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write report.md, report.json, confusion.png, roc.png and pr.png here.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--unsafe", is_flag=True, help="Allow .keras models with Lambda layers.")
@handle_errors
def evaluate(model, data_dir, out_dir, as_json, unsafe):
    """Evaluate MODEL (any format: .keras, .tflite, .mlmodel, .mlpackage, or
    'pretrained') on a labelled DATA_DIR (one folder per class, or its test/).

    \b
    Examples:
      nsfw-mobile evaluate runs/first/best.keras data/ --out runs/first/eval
      nsfw-mobile evaluate dist/nsfw_int8.tflite data/test --json
    """
    from .evaluate import evaluate as run_evaluation
    from .evaluate import render_table, write_reports

    report = run_evaluation(
        None if str(model) == "pretrained" else model, data_dir, allow_unsafe=unsafe
    )
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else render_table(report))
    if out_dir is not None:
        for path in write_reports(report, out_dir):
            click.echo(f"wrote {path}", err=True)


@main.command("bench")
@click.argument("artifacts", nargs=-1, required=True)
@click.option(
    "--threads", default="1", show_default=True, help="Comma-separated thread counts, e.g. 1,2."
)
@click.option(
    "--runs",
    type=click.IntRange(1),
    default=50,
    show_default=True,
    help="Minimum timed runs per artefact (also at least --seconds of runs).",
)
@click.option(
    "--seconds",
    type=click.FloatRange(0),
    default=2.0,
    show_default=True,
    help="Minimum seconds of timed runs per artefact.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write a Markdown table to this file.",
)
@handle_errors
def bench_command(artifacts, threads, runs, seconds, as_json, report_path):
    """Measure batch-1 latency (median, p90, p99, mean, std), load time, peak
    memory and size of ARTIFACTS on this CPU.

    Each artefact runs in its own process; runs of different artefacts are
    interleaved in rounds. ARTIFACTS are .tflite and .keras files (Core ML on
    macOS only), a folder (every model file in it), or 'pretrained'.

    \b
    Examples:
      nsfw-mobile bench models/ --threads 1,2
      nsfw-mobile bench dist/nsfw_int8.tflite dist/nsfw_float32.tflite pretrained --json
    """
    from .bench import bench, render_markdown, render_table

    counts = thread_counts(threads)
    paths = []
    for item in artifacts:
        folder = Path(item)
        if folder.is_dir() and folder.suffix != ".mlpackage":
            paths += sorted(
                str(p)
                for p in folder.iterdir()
                if p.suffix in (".tflite", ".keras", ".mlmodel", ".mlpackage")
            )
        else:
            paths.append(item)

    def progress(result):
        if not as_json:
            click.echo(
                f"  {Path(result.path).name} x{result.threads}: {result.median_ms:.2f} ms", err=True
            )

    report = bench(paths, threads=counts, min_runs=runs, min_seconds=seconds, on_result=progress)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else render_table(report))
    if report_path:
        from .atomic import atomic_path

        with atomic_path(report_path) as temporary:
            temporary.write_text(render_markdown(report))


@main.command("release")
@click.argument("model", required=False, default=None)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Release folder to write.",
)
@click.option(
    "--check",
    "check_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Re-verify an existing release folder against its manifest.",
)
@click.option(
    "--calibration",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder of representative images for full-integer TFLite.",
)
@click.option(
    "--images",
    "image_paths",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Validation images (default: the shipped sample images).",
)
@click.option(
    "--threads", default="1", show_default=True, help="Benchmark thread counts, e.g. 1,2."
)
@click.option("--json", "as_json", is_flag=True, help="Print the manifest (or the check) as JSON.")
@handle_errors
def release_command(model, out_dir, check_dir, calibration, image_paths, threads, as_json):
    """Convert MODEL (default: the pretrained model) to every format, validate
    each against it, benchmark each, and write the artefacts with labels.txt,
    manifest.json, MODEL_CARD.md and REPORT.md.

    Exit code 4 when an artefact fails validation (it is marked not releasable
    in the manifest). --check DIR re-verifies checksums and fidelity of a
    release folder and names every file that fails.

    \b
    Examples:
      nsfw-mobile release --out dist/
      nsfw-mobile release runs/first/best.keras --out dist/ --calibration photos/
      nsfw-mobile release --check models/
    """
    from . import release as releases

    images = list(image_paths) or None
    if (out_dir is None) == (check_dir is None):
        raise UsageError("give either --out DIR (make a release) or --check DIR (verify one)")
    if check_dir is not None:
        if model or calibration:
            raise UsageError("--check verifies a folder: drop MODEL and --calibration")
        problems = releases.check(check_dir, images=images)
        if as_json:
            _echo_json({"folder": str(check_dir), "passed": not problems, "problems": problems})
        for problem in problems:
            click.echo(f"FAIL {problem}", err=True)
        if problems:
            sys.exit(EXIT_VALIDATION_FAILED)
        if not as_json:
            click.echo(f"{check_dir}: every file matches its checksum and passes validation")
        return
    counts = thread_counts(threads)
    manifest = releases.release(
        model,
        out_dir,
        calibration=calibration,
        images=images,
        bench_threads=counts,
        log=lambda line: click.echo(line, err=True),
    )
    if as_json:
        _echo_json(manifest)
    else:
        for entry in manifest["files"]:
            click.echo(f"{'OK  ' if entry['releasable'] else 'FAIL'} {entry['file']}")
        click.echo(f"release in {out_dir}: manifest.json, MODEL_CARD.md, REPORT.md")


@main.command("formats")
@click.option("--json", "as_json", is_flag=True, help="Print the registry as JSON.")
def list_formats(as_json):
    """List the output formats, their file names and validation tolerances.

    \b
    Example:
      nsfw-mobile formats
    """
    from dataclasses import asdict

    from .formats import FORMATS

    if as_json:
        _echo_json([asdict(f) for f in FORMATS])
        return
    for f in FORMATS:
        t = f.tolerance
        bounds = ", ".join(
            part
            for part in (
                f"max <= {t.max_abs:g}" if t.max_abs is not None else "",
                f"mean <= {t.mean_abs:g}" if t.mean_abs is not None else "",
                f"top-1 >= {t.min_agreement:.0%}",
            )
            if part
        )
        click.echo(f"{f.key:<18} {f.filename:<24} {bounds:<32} {f.summary}")


if __name__ == "__main__":  # pragma: no cover
    main()
