"""One command that ships a validated model: convert, validate, benchmark, record.

``release`` writes into its folder every artefact, ``labels.txt``,
``manifest.json`` (each file: format, quantization, size, SHA-256, validation
figures, latency, releasable or not; toolkit and dependency versions; source
model and its SHA-256), ``MODEL_CARD.md`` and ``REPORT.md``. An artefact that
fails validation stays in the folder for inspection but is marked
``"releasable": false`` and the release fails.

``check`` re-verifies a release folder against its manifest: every file's
checksum, then its fidelity against the reference on the same images.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from . import __version__
from .atomic import atomic_path
from .bench import bench, render_markdown, versions
from .convert import convert_all
from .errors import ModelFileError, ValidationFailed
from .files import sha256_file, size_bytes
from .formats import FORMATS, PRETRAINED, by_key
from .models import load_source
from .validate import render_markdown as validation_markdown
from .validate import validate

MANIFEST = "manifest.json"


def release(
    model: str | None,
    out_dir: str | Path,
    *,
    calibration=None,
    images=None,
    bench_threads=(1,),
    bench_runs: int = 30,
    bench_seconds: float = 1.0,
    log=print,
) -> dict:
    """Make a release folder; raises ValidationFailed (after writing it) if any artefact fails."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    source = load_source(model)
    log(f"converting {source.name} to {len(FORMATS)} formats")
    artifacts = convert_all(
        source,
        FORMATS,
        out_dir,
        calibration=calibration,
        on_start=lambda i, f, o: log(f"  [{i + 1}/{len(FORMATS)}] {f.key}"),
    )
    log("validating against the reference")
    from .runtime.keras_runner import KerasRunner

    report = validate(
        [a.path for a in artifacts],
        reference=KerasRunner(source),
        images=images,
        format_keys=[a.format for a in artifacts],
    )
    log("benchmarking (batch 1)")
    benchmark = bench(
        [str(a.path) for a in artifacts] + [model or PRETRAINED],
        threads=tuple(bench_threads),
        min_runs=bench_runs,
        min_seconds=bench_seconds,
    )
    manifest = build_manifest(source, artifacts, report, benchmark, out_dir)
    manifest["seconds"] = round(time.perf_counter() - started, 1)
    write_documents(out_dir, manifest, report, benchmark)
    if not report.passed:
        failed = [f["file"] for f in manifest["files"] if not f["releasable"]]
        raise ValidationFailed(
            f"{', '.join(failed)} failed validation; see {out_dir / 'REPORT.md'}"
        )
    return manifest


def _latency_by_file(benchmark) -> dict[str, dict]:
    latency: dict[str, dict] = {}
    for result in benchmark.results:
        latency.setdefault(Path(result.path).name, {})[f"threads_{result.threads}"] = {
            "median_ms": result.median_ms,
            "p90_ms": result.p90_ms,
            "peak_rss_mb": result.peak_rss_mb,
        }
    return latency


def _file_entry(artifact, checked, latency: dict) -> dict:
    return {
        "file": artifact.path.name,
        "format": artifact.format,
        "quantization": artifact.quantization,
        "size_bytes": artifact.size_bytes,
        "sha256": artifact.sha256,
        "notes": artifact.notes,
        "validation": {
            "status": checked.status,
            "max_abs_diff": checked.max_abs_diff,
            "mean_abs_diff": checked.mean_abs_diff,
            "top1_agreement": checked.top1_agreement,
            "failures": checked.failures,
        },
        "latency": latency.get(artifact.path.name, {}),
        "releasable": checked.passed,
    }


def build_manifest(source, artifacts, report, benchmark, out_dir: Path) -> dict:
    """The release's manifest.json as data."""
    latency = _latency_by_file(benchmark)
    return {
        "toolkit": f"nsfw-mobile {__version__}",
        "versions": versions(),
        "source": {
            "model": source.path,
            "sha256": source.sha256,
            "labels": list(source.labels),
            "input_size": list(source.input_size),
        },
        "validation_images": {"count": report.images, "source": report.image_source},
        "machine": benchmark.machine,
        "passed": report.passed,
        "files": [
            _file_entry(artifact, checked, latency)
            for artifact, checked in zip(artifacts, report.candidates)
        ],
        "labels_file": {"file": "labels.txt", "sha256": sha256_file(out_dir / "labels.txt")},
    }


def write_documents(out_dir: Path, manifest: dict, report, benchmark) -> None:
    for name, text in (
        (MANIFEST, json.dumps(manifest, indent=2)),
        ("REPORT.md", _report(manifest, report, benchmark)),
        ("MODEL_CARD.md", _model_card(manifest)),
    ):
        with atomic_path(out_dir / name) as temporary:
            temporary.write_text(text)


def _report(manifest, validation, benchmark) -> str:
    return "\n".join(
        [
            "# Release report",
            "",
            f"{manifest['toolkit']}, source `{manifest['source']['model']}` "
            f"(SHA-256 `{manifest['source']['sha256']}`).",
            "",
            validation_markdown(validation).replace("# Validation report", "## Validation"),
            "## Latency (batch 1, this machine)",
            "",
            render_markdown(benchmark),
        ]
    )


def _model_card(manifest) -> str:
    source = manifest["source"]
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
    return "\n".join(
        [
            "# Model card",
            "",
            f"Classes, in output order: {', '.join(source['labels'])}. "
            "nsfw_score = P(Porn) + P(Sexy).",
            "",
            "**Intended use:** a first, on-device filter that flags or blurs images for review. "
            "Not a substitute for human moderation; not for identifying people.",
            "",
            f"**Preprocessing:** RGB, the whole image squashed to {source['input_size'][1]}x"
            f"{source['input_size'][0]} (bilinear, no crop), EXIF orientation applied, "
            "alpha on white, pixels / 255 (inside the Core ML models; raw bytes for uint8 TFLite).",
            "",
            f"**Source:** `{source['model']}` (SHA-256 `{source['sha256']}`).",
            "",
            f"## Measured fidelity and latency ({manifest['validation_images']['count']} images; "
            f"{manifest['machine']['cpu']})",
            "",
            "| file | format | size | max / mean abs diff / top-1 vs Keras | latency (1 thread) "
            "| releasable |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            "## Known limits",
            "",
            "Drawings can be confused with hentai; male nudity and non-typical bodies were "
            "under-represented in the training data; skin-coloured textures, babies at the "
            "beach and medical images cause false positives. Full-integer models were "
            "calibrated on the images named in the manifest. See "
            "nsfw_mobile/pretrained/MODEL_CARD.md for the pretrained model.",
            "",
        ]
    )


def fastest_artifact(release_dir: str | Path) -> Path:
    """The releasable artefact with the lowest 1-thread median latency in a release's manifest."""
    release_dir = Path(release_dir)
    manifest = json.loads((release_dir / MANIFEST).read_text())
    timed = [
        (entry["latency"]["threads_1"]["median_ms"], entry["file"])
        for entry in manifest["files"]
        if entry["releasable"] and "threads_1" in entry.get("latency", {})
    ]
    if not timed:
        raise ModelFileError(f"{release_dir}: the manifest has no validated, benchmarked artefact")
    return release_dir / min(timed)[1]


def check(release_dir: str | Path, *, reference=None, images=None) -> list[str]:
    """Problems found in a release folder (empty list: it checks out)."""
    release_dir = Path(release_dir)
    path = release_dir / MANIFEST
    if not path.is_file():
        raise ModelFileError(f"{release_dir}: no {MANIFEST}: not a release folder")
    manifest = json.loads(path.read_text())
    problems = []
    entries = manifest["files"] + [{**manifest["labels_file"], "format": None}]
    present = []
    for entry in entries:
        file = release_dir / entry["file"]
        if not file.exists():
            problems.append(f"{entry['file']}: missing")
        elif sha256_file(file) != entry["sha256"]:
            problems.append(
                f"{entry['file']}: SHA-256 {sha256_file(file)[:16]}... differs from the "
                f"manifest's {entry['sha256'][:16]}... (size {size_bytes(file)})"
            )
        elif entry["format"] is not None:
            present.append(entry)
    if present:
        if reference is None and not manifest["source"]["model"].startswith("pretrained:"):
            reference = manifest["source"]["model"]
        report = validate(
            [release_dir / e["file"] for e in present],
            reference=reference,
            images=images,
            format_keys=[e["format"] for e in present],
        )
        for entry, result in zip(present, report.candidates):
            if not result.passed:
                problems.append(
                    f"{entry['file']}: validation {result.status}: {'; '.join(result.failures)}"
                )
    return problems
