"""One command that ships a validated model: convert, validate, benchmark, record.

``release`` writes into its folder every artefact, ``labels.txt``,
``manifest.json``, ``MODEL_CARD.md`` and ``REPORT.md``. An artefact that fails
to convert or validate stays out of the release's promises: its manifest entry
says why and is marked ``"releasable": false``, and the release fails, after
the manifest is written.

The manifest (``schema_version`` 2) names every file relative to itself, the
model's contract, the source model by SHA-256 and the validation images by
name and SHA-256, so that ``check`` re-verifies a release folder from any
directory on any machine: every file's checksum, then its fidelity against
the same reference on the same images.

A file that more than one engine may run (``.onnx``: ONNX Runtime and OpenVINO)
is validated and benchmarked on each that is installed; its entry keeps its
own engine's figures where schema 2 always had them and adds ``engine`` (its
own) and ``engines`` (every engine it was validated on: validation, latency,
``releasable``). ``check`` validates it again on each, and ``predict`` picks
only among the (engine, file) pairs recorded as releasable. A manifest without
``engines`` (an older release) promises each file on its own engine only.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from . import zoo
from .atomic import atomic_path
from .bench import bench, render_markdown, result_label, versions
from .convert import convert_all
from .errors import NsfwMobileError, UsageError, ValidationFailed
from .files import sha256_file, size_bytes
from .formats import (
    FORMATS,
    by_key,
    check_options,
    engine_by_key,
    engine_label,
    engines_of,
    file_type_of,
)
from .images import SAMPLES_DIR, calibration_samples, find_images, sample_images
from .manifest import (
    MANIFEST,
    SCHEMA_VERSION,
    inside_folder,
    read_manifest,
)
from .resolve import SOURCE, ModelRef, resolve_model
from .validate import MIN_IMAGES, validate
from .validate import render_markdown as validation_markdown
from .version import __version__


class ReferenceMismatch(NsfwMobileError):
    """The reference model given to ``check`` is not the one the release was made from."""


def release(
    model: ModelRef | str | None,
    out_dir: str | Path,
    *,
    formats=FORMATS,
    calibration=None,
    io_type: str | None = None,
    images=None,
    bench_threads=(1,),
    bench_runs: int = 30,
    bench_seconds: float = 1.0,
    name: str | None = None,
    contract: dict | None = None,
    log=print,
    progress=None,
) -> dict:
    """Make a release folder; raises ValidationFailed (after writing it) if any artefact fails.

    ``formats``: the registry rows to release (default every format). ``name`` is the
    artefacts' file name stem and the model's name; ``contract`` overrides fields of the
    model's contract (version, author, license, ...). ``log(line)`` gets each stage and
    each file as it completes; ``progress(stage, done, total)`` the count of each stage.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    formats = list(formats)
    check_options(formats, io_type=io_type, calibration=calibration)
    step = progress or (lambda stage, done, total: None)
    ref = model if isinstance(model, ModelRef) else resolve_model(model, use=SOURCE)
    source = ref.load_source().with_contract(name=name, **(contract or {}))
    image_files = find_images(images) if images else sample_images()
    if not image_files:
        raise UsageError(f"--images {', '.join(map(str, images))}: no image files found")
    calibrated = any("calibration" in f.options for f in formats)
    calibration_files = _calibration_files(calibration, image_files, images) if calibrated else []
    log(f"converting {source.name} to {_count(formats, 'format')}")
    failed: dict[str, str] = {}

    def converted(index, artifact):
        log(f"  [{index + 1}/{len(formats)}] {artifact.format}: {artifact.path.name} "
            f"({artifact.size_bytes / 1e6:.1f} MB, {artifact.seconds:.1f} s)")  # fmt: skip
        step("converting", index + 1, len(formats))

    def not_converted(index, fmt, exc):
        failed[fmt.key] = str(exc)
        log(f"  [{index + 1}/{len(formats)}] {fmt.key} failed to convert: {exc}")
        step("converting", index + 1, len(formats))

    artifacts = convert_all(
        source,
        formats,
        out_dir,
        calibration=calibration,
        io_type=io_type,
        name=name,
        on_done=converted,
        on_error=not_converted,
    )
    pairs, not_checked = artifact_engines(artifacts)
    log(
        f"validating {_files_and_pairs([a.path for a, _ in pairs])} against the reference on "
        f"{len(image_files)} images"
    )
    for line in not_checked:
        log(f"  not validated: {line}")
    from .runtime.keras_runner import KerasRunner

    validated = []

    def judged(result):
        validated.append(result)
        log(f"  {result.status.upper():<8} {result.label} ({result.seconds:.1f} s)")
        step("validating", len(validated), len(pairs))

    with KerasRunner(source) as reference:
        report = validate(
            [artifact.path for artifact, _ in pairs],
            reference=reference,
            images=image_files,
            format_keys=[artifact.format for artifact, _ in pairs],
            engines=[engine for _, engine in pairs],
            on_candidate=judged,
        )
    timed = [(str(a.path), engine) for a, engine in pairs] + [(ref.spec, None)]  # + the source
    runs_here = [(p, e) for p, e in timed[:-1] if file_type_of(p).runs_at_speed_here] + timed[-1:]
    log(f"benchmarking {_files_and_pairs([p for p, _ in runs_here])} (batch 1, each in a fresh "
        "process)")  # fmt: skip
    measured = []

    def benchmarked(result):
        measured.append(result)
        log(f"  {result_label(result)} x{result.threads}: {result.median_ms:.2f} ms")
        step("benchmarking", len(measured), len(runs_here) * len(tuple(bench_threads)))

    benchmark = bench(
        [p for p, _ in timed],
        engines=[engine for _, engine in timed],
        threads=tuple(bench_threads),
        min_runs=bench_runs,
        min_seconds=bench_seconds,
        on_result=benchmarked,
    )
    manifest = build_manifest(
        source, artifacts, failed, report, benchmark, out_dir, name, engines=pairs
    )
    manifest["validation_images"] = _image_record(image_files, user_given=bool(images))
    if calibrated:
        manifest["calibration_images"] = _image_record(
            calibration_files, user_given=calibration is not None
        )
    manifest["seconds"] = round(time.perf_counter() - started, 1)
    log("writing manifest.json, MODEL_CARD.md and REPORT.md")
    write_documents(out_dir, manifest, report, benchmark)
    if not manifest["passed"]:
        bad = [f["file"] for f in manifest["files"] if not f["releasable"]] + [
            f"{f['file']} on {key}"
            for f in manifest["files"]
            for key, checked in f.get("engines", {}).items()
            if f["releasable"] and not checked["releasable"]
        ]
        raise ValidationFailed(f"{', '.join(bad)} failed; see {out_dir / 'REPORT.md'}")
    return manifest


def artifact_engines(artifacts) -> tuple[list[tuple], list[str]]:
    """(artifact, engine) pairs to validate and benchmark: each artefact on every engine that
    may run it and is installed here, its own first (engine None); and the pairs left out."""
    pairs, not_checked = [], []
    for artifact in artifacts:
        file_type = file_type_of(artifact.path)
        for key in engines_of(by_key(artifact.format)):
            if key == file_type.default_engine:
                pairs.append((artifact, None))
            elif file_type.installed_on(key):
                pairs.append((artifact, key))
            else:
                extra = engine_by_key(key).extra
                not_checked.append(
                    f"{artifact.path.name} on {key} (not installed: pip install "
                    f"'nsfw-mobile[{extra}]')"
                )
    return pairs, not_checked


def _count(items, noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _files_and_pairs(paths) -> str:
    """'3 files', or '3 files, 4 (file, engine) pairs' where a file runs on several engines."""
    files = list(dict.fromkeys(map(str, paths)))
    more = f", {len(paths)} (file, engine) pairs" if len(paths) != len(files) else ""
    return _count(files, "file") + more


def _calibration_files(calibration, image_files: list[Path], images) -> list[Path]:
    """The images full-integer formats are calibrated on, checked before any work: the
    validator leaves them out of those formats' validation, so enough others must remain."""
    files = find_images([calibration]) if calibration is not None else calibration_samples()
    calibrating = {sha256_file(p) for p in files}
    others = [p for p in image_files if sha256_file(p) not in calibrating]
    if len(others) < MIN_IMAGES:
        where = "--images" if images else "the shipped samples"
        raise UsageError(
            f"only {len(others)} of the {len(image_files)} validation images ({where}) are not "
            f"also calibration images; full-integer models are judged on images they were not "
            f"calibrated on: give --images and --calibration folders with different images "
            f"(at least {MIN_IMAGES} validation images outside the calibration set)"
        )
    return files


def _image_record(paths: list[Path], *, user_given: bool) -> dict:
    """Which images validated (or calibrated) the release: shipped samples or the user's."""
    return {
        "count": len(paths),
        "source": "user images" if user_given else "shipped sample images",
        "files": [{"name": p.name, "sha256": sha256_file(p)} for p in paths],
    }


def _latency_by_file(benchmark) -> dict[tuple[str, str], dict]:
    """Latency figures by (file name, engine label)."""
    latency: dict[tuple[str, str], dict] = {}
    for result in benchmark.results:
        key = (Path(result.path).name, result.engine)
        latency.setdefault(key, {})[f"threads_{result.threads}"] = {
            "median_ms": result.median_ms,
            "p90_ms": result.p90_ms,
            "peak_rss_mb": result.peak_rss_mb,
        }
    return latency


def _validation_record(checked) -> dict:
    return {
        "status": checked.status,
        "max_abs_diff": checked.max_abs_diff,
        "mean_abs_diff": checked.mean_abs_diff,
        "top1_agreement": checked.top1_agreement,
        "images": checked.images,
        "ties": checked.ties,
        "calibration_images_excluded": checked.calibration_images_excluded,
        "sensitivity": checked.sensitivity,
        "bounds": checked.bounds,
        "failures": checked.failures,
    }


def _file_entry(artifact, results: dict, latency: dict) -> dict:
    """A file's manifest entry: its own engine's validation and latency at the top (what
    schema 2 always recorded), and under ``engines`` every engine it was validated on, its own
    included: validation, latency and whether that (engine, file) pair may be used."""
    file_type = file_type_of(artifact.path)
    own = file_type.default_engine
    checked = results[own]

    def figures(key):
        return latency.get((artifact.path.name, engine_label(file_type, key)), {})

    return {
        "file": artifact.path.name,
        "format": artifact.format,
        "quantization": artifact.quantization,
        "size_bytes": artifact.size_bytes,
        "sha256": artifact.sha256,
        "notes": artifact.notes,
        "validation": _validation_record(checked),
        "latency": figures(own),
        "releasable": checked.passed,
        "engine": own,
        "engines": {
            key: {
                "validation": _validation_record(result),
                "latency": figures(key),
                "releasable": checked.passed and result.passed,
            }
            for key, result in results.items()
        },
    }


def _failed_entry(key: str, message: str, name: str | None) -> dict:
    fmt = by_key(key)
    return {
        "file": fmt.filename_for(name),
        "format": key,
        "quantization": fmt.quantization,
        "size_bytes": None,
        "sha256": None,
        "notes": [],
        "validation": {"status": "error", "max_abs_diff": None, "mean_abs_diff": None,
                       "top1_agreement": None, "failures": [f"conversion failed: {message}"]},
        "latency": {},
        "releasable": False,
    }  # fmt: skip


def build_manifest(
    source, artifacts, failed, report, benchmark, out_dir: Path, name, *, engines=None
) -> dict:
    """The release's manifest.json as data. ``engines``: the (artifact, engine) pair of each
    of the report's candidates (default: each artifact once, on its own engine)."""
    latency = _latency_by_file(benchmark)
    engines = engines if engines is not None else [(a, None) for a in artifacts]
    results: dict[str, dict] = {}
    for (artifact, _), checked in zip(engines, report.candidates):
        results.setdefault(artifact.path.name, {})[checked.engine] = checked
    files = [
        _file_entry(artifact, results[artifact.path.name], latency) for artifact in artifacts
    ] + [_failed_entry(key, message, name) for key, message in failed.items()]
    return {
        "schema_version": SCHEMA_VERSION,
        "toolkit": f"nsfw-mobile {__version__}",
        "versions": versions(),
        "model": source.contract.to_properties(),
        "source": {
            "file": Path(source.path).name,
            "sha256": source.sha256,
            "pretrained": zoo.by_sha256(source.sha256) is not None,
            "zoo_model": getattr(zoo.by_sha256(source.sha256), "key", None),
            "labels": list(source.labels),
            "input_size": list(source.input_size),
        },
        "machine": benchmark.machine,
        "passed": all(
            f["releasable"] and all(e["releasable"] for e in f.get("engines", {}).values())
            for f in files
        ),
        "files": files,
        "labels_file": {"file": "labels.txt", "sha256": sha256_file(out_dir / "labels.txt")},
    }


def write_documents(out_dir: Path, manifest: dict, report, benchmark) -> None:
    for file_name, text in (
        (MANIFEST, json.dumps(manifest, indent=2)),
        ("REPORT.md", _report(manifest, report, benchmark)),
        ("MODEL_CARD.md", _model_card(manifest)),
    ):
        with atomic_path(out_dir / file_name) as temporary:
            temporary.write_text(text)


def _report(manifest, validation, benchmark) -> str:
    return "\n".join(
        [
            "# Release report",
            "",
            f"{manifest['toolkit']}, source `{manifest['source']['file']}` "
            f"(SHA-256 `{manifest['source']['sha256']}`).",
            "",
            validation_markdown(validation).replace("# Validation report", "## Validation"),
            "## Latency (batch 1, this machine)",
            "",
            render_markdown(benchmark),
        ]
    )


def _model_card(manifest) -> str:
    model, source = manifest["model"], manifest["source"]
    labels, nsfw = json.loads(model["labels"]), json.loads(model["nsfw_labels"])
    score = (
        f"nsfw_score = {' + '.join(f'P({n})' for n in nsfw)}."
        if nsfw
        else "The model names no NSFW labels, so it has no nsfw_score."
    )
    rows = [
        f"| `{f['file']}` | {by_key(f['format']).summary} | {f['size_bytes'] / 1e6:.1f} MB | "
        f"{f['validation']['max_abs_diff']:.1e} / {f['validation']['mean_abs_diff']:.1e} / "
        f"{f['validation']['top1_agreement']:.0%} | "
        + (
            f"{f['latency']['threads_1']['median_ms']:.1f} ms"
            if "threads_1" in f["latency"]
            else "-"
        )
        + f" | {'yes' if f['releasable'] else 'NO'} |"
        for f in manifest["files"]
        if f["validation"]["max_abs_diff"] is not None
    ]
    rows += [
        f"| `{f['file']}` on {key} | {by_key(f['format']).summary}, run on {key} | "
        f"{f['size_bytes'] / 1e6:.1f} MB | "
        f"{e['validation']['max_abs_diff']:.1e} / {e['validation']['mean_abs_diff']:.1e} / "
        f"{e['validation']['top1_agreement']:.0%} | "
        + (
            f"{e['latency']['threads_1']['median_ms']:.1f} ms"
            if "threads_1" in e["latency"]
            else "-"
        )
        + f" | {'yes' if e['releasable'] else 'NO'} |"
        for f in manifest["files"]
        for key, e in f.get("engines", {}).items()
        if key != f.get("engine") and e["validation"]["max_abs_diff"] is not None
    ]
    failed = [f"- `{f['file']}`: {'; '.join(f['validation']['failures'])}"
              for f in manifest["files"] if f["validation"]["max_abs_diff"] is None]  # fmt: skip
    return "\n".join(
        [
            f"# Model card: {model['name']}" + (f" {model['version']}" if model["version"] else ""),
            "",
            model["description"],
            "",
            f"**Author:** {model['author'] or 'not stated'}. "
            f"**Licence:** {model['license'] or 'not stated'}.",
            "",
            f"Classes, in output order: {', '.join(labels)}. {score}",
            "",
            "**Intended use:** a first, on-device filter that flags or blurs images for review. "
            "Not a substitute for human moderation; not for identifying people.",
            "",
            f"**Preprocessing:** RGB, the whole image squashed to {source['input_size'][1]}x"
            f"{source['input_size'][0]} (bilinear, no crop), EXIF orientation applied, "
            "alpha on white, pixels / 255 (inside the Core ML and ONNX models, which take raw "
            "RGB bytes as the uint8 TFLite does).",
            "",
            f"**Source:** `{source['file']}` (SHA-256 `{source['sha256']}`).",
            "",
            *_origin_lines(model),
            f"## Measured fidelity and latency ({manifest['validation_images']['count']} images; "
            f"{manifest['machine']['cpu']})",
            "",
            "| file | format | size | max / mean abs diff / top-1 vs Keras | latency (1 thread) "
            "| releasable |",
            "|---|---|---|---|---|---|",
            *rows,
            *(["", "Not released:", "", *failed] if failed else []),
            "",
            "## Known limits",
            "",
            (model["limits"] or "Not stated by the model's author.")
            + " Full-integer models were calibrated on the images named in the manifest.",
            "",
        ]
    )


def _origin_lines(model: dict) -> list[str]:
    """Where a zoo model was published and the accuracy its authors state; none for others."""
    lines = []
    if model.get("source_url"):
        lines += [f"**Published at:** {model['source_url']}.", ""]
    if model.get("published_accuracy"):
        lines += [
            f"**Published accuracy:** {model['published_accuracy']} (not measured by nsfw-mobile).",
            "",
        ]
    return lines


def _reference_for(manifest: dict, reference) -> str | None:
    """The reference model to check against: given (and matching) or the zoo model it names."""
    source = manifest["source"]
    recorded = source["sha256"]
    if reference is None:
        named = zoo.by_sha256(recorded)
        if named is not None:
            return named.key
        raise UsageError(
            f"the release was made from {source.get('file', '?')} (SHA-256 {recorded}): "
            "pass it with --reference MODEL"
        )
    ref = resolve_model(reference, use=SOURCE)
    actual = ref.zoo_model.sha256 if ref.path is None else ref.load_source().sha256
    if actual != recorded:
        raise ReferenceMismatch(
            f"--reference {reference} has SHA-256 {actual}, but the release was made from "
            f"SHA-256 {recorded}"
        )
    return ref.spec if ref.path is not None else str(reference)


def _validation_images(manifest: dict, images) -> tuple[list[Path], list[str]]:
    """The images to validate on, and a note that says which they are and how they relate to
    the ones the release was validated on."""
    record = manifest.get("validation_images", {})
    recorded = {f["sha256"] for f in record.get("files", [])}
    paths = find_images(images) if images else sample_images()
    where = "the images given with --images" if images else f"the shipped samples ({SAMPLES_DIR})"
    given = {sha256_file(p) for p in paths}
    if not recorded:
        return paths, [f"checked on {len(paths)} images: {where}"]
    if given == recorded:
        relation = "the same images the release was validated on"
    else:
        relation = (
            f"the release was validated on {len(recorded)} {record.get('source', 'images')}, "
            f"{len(recorded & given)} of them among these; bounds follow the reference's own "
            "sensitivity on the images checked, so a faithful artefact passes on either set"
        )
    return paths, [f"checked on {len(paths)} images, {where}: {relation}"]


def checksum_problems(release_dir: Path, manifest: dict) -> tuple[list[str], list[dict]]:
    """Files missing or changed since the manifest was written, and the model entries
    whose files match (the ones to validate)."""
    problems, present = [], []
    for entry in manifest["files"] + [{**manifest["labels_file"], "format": None}]:
        if entry.get("sha256") is None:  # never made: failed to convert
            continue
        file = inside_folder(release_dir, entry["file"])
        if not file.exists():
            problems.append(f"{entry['file']}: missing")
        elif sha256_file(file) != entry["sha256"]:
            problems.append(
                f"{entry['file']}: SHA-256 {sha256_file(file)[:16]}... differs from the "
                f"manifest's {entry['sha256'][:16]}... (size {size_bytes(file)})"
            )
        elif entry["format"] is not None:
            present.append(entry)
    return problems, present


def check(
    release_dir: str | Path, *, reference=None, images=None, log=None, progress=None
) -> tuple[list[str], list[str]]:
    """Problems found in a release folder (empty: it checks out) and notes for the user.

    ``log(line)`` gets each stage and each file as it is validated; ``progress(stage,
    done, total)`` the count of the validation stage.
    """
    log = log or (lambda line: None)
    release_dir = Path(release_dir)
    manifest = read_manifest(release_dir)
    reference = _reference_for(manifest, reference)
    listed = [*manifest["files"], manifest["labels_file"]]
    log(f"checking the checksums of {_count(listed, 'file')}")
    problems, present = checksum_problems(release_dir, manifest)
    for problem in problems:
        log(f"  {problem}")
    paths, notes = _validation_images(manifest, images)
    pairs = []
    for entry in present:
        file_type = file_type_of(release_dir / entry["file"])
        pairs.append((entry, None))
        for key in entry.get("engines", {}):
            if key == file_type.default_engine or not file_type.can_run_on(key):
                continue
            if file_type.installed_on(key):
                pairs.append((entry, key))
            else:
                notes.append(f"{entry['file']} on {key}: not checked, {key} is not installed")
    if pairs:
        log(
            f"validating {_files_and_pairs([e['file'] for e, _ in pairs])} against the "
            f"reference on {len(paths)} images"
        )
        done = []

        def judged(result):
            done.append(result)
            log(f"  {result.status.upper():<8} {result.label} ({result.seconds:.1f} s)")
            if progress:
                progress("validating", len(done), len(pairs))

        report = validate(
            [release_dir / e["file"] for e, _ in pairs],
            reference=reference,
            images=paths,
            format_keys=[e["format"] for e, _ in pairs],
            engines=[key for _, key in pairs],
            on_candidate=judged,
        )
        for (entry, key), result in zip(pairs, report.candidates):
            if not result.passed:
                on = f" on {key}" if key else ""
                problems.append(
                    f"{entry['file']}{on}: validation {result.status}: {'; '.join(result.failures)}"
                )
    return problems, notes
