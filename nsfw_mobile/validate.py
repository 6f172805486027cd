"""Compare converted models with their reference on the same decoded images.

Structure is checked first (input size, label set, label order): a mismatch
there is reported as ``mismatch``, never as a tolerance miss. Then the
candidate's probabilities are compared with the reference's against the
tolerance of its format in the registry (``formats.py``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import LabelMismatchError, NsfwMobileError, UsageError
from .formats import TARGETS, Format, Tolerance, by_key, select
from .images import load_images, sample_images
from .metadata import read_metadata
from .runtime import open_runner
from .runtime.base import Runner

WORST_COUNT = 3


@dataclass
class WorstImage:
    path: str
    max_abs_diff: float
    reference_label: str
    candidate_label: str


@dataclass
class CandidateResult:
    path: str
    format: str
    status: str
    """pass | fail | mismatch | error (the candidate could not be run: see failures)"""
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    top1_agreement: float | None = None
    tolerance: dict = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    worst: list[WorstImage] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "pass"


@dataclass
class ValidationReport:
    reference: str
    images: int
    image_source: str
    unreadable: list[str]
    candidates: list[CandidateResult]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.candidates)

    def to_dict(self) -> dict:
        document = asdict(self)
        document["passed"] = self.passed
        return document


def format_of(path: str | Path) -> Format:
    """The registry row an artefact was made as, from the metadata convert wrote."""
    properties = read_metadata(path).properties
    target = properties.get("target")
    if target in TARGETS:
        return select(
            target,
            properties.get("quantization", "none"),
            properties.get("compute_precision") if target == "mlpackage" else None,
        )
    raise UsageError(
        f"{path}: no nsfw-mobile metadata says how it was made, so its tolerance is unknown; "
        "pass --format KEY (see `nsfw-mobile formats`)"
    )


def check_structure(reference: Runner, candidate: Runner) -> None:
    if candidate.input_size != reference.input_size:
        raise LabelMismatchError(
            f"input size {candidate.input_size} differs from the reference's {reference.input_size}"
        )
    if set(candidate.labels) != set(reference.labels):
        raise LabelMismatchError(
            f"labels {list(candidate.labels)} are not the reference's {list(reference.labels)}"
        )
    if tuple(candidate.labels) != tuple(reference.labels):
        raise LabelMismatchError(
            f"label order {list(candidate.labels)} differs from the reference's "
            f"{list(reference.labels)}: probabilities would be attributed to the wrong classes"
        )


def compare(
    reference_probs: np.ndarray,
    candidate_probs: np.ndarray,
    tolerance: Tolerance,
) -> tuple[dict, list[str]]:
    """Figures and the list of broken bounds (empty when the candidate passes)."""
    difference = np.abs(candidate_probs.astype(np.float64) - reference_probs.astype(np.float64))
    figures = {
        "max_abs_diff": float(difference.max()),
        "mean_abs_diff": float(difference.mean()),
        "top1_agreement": float((candidate_probs.argmax(1) == reference_probs.argmax(1)).mean()),
    }
    failures = []
    if tolerance.max_abs is not None and figures["max_abs_diff"] > tolerance.max_abs:
        failures.append(f"max abs diff {figures['max_abs_diff']:.3g} > {tolerance.max_abs:g}")
    if tolerance.mean_abs is not None and figures["mean_abs_diff"] > tolerance.mean_abs:
        failures.append(f"mean abs diff {figures['mean_abs_diff']:.3g} > {tolerance.mean_abs:g}")
    if figures["top1_agreement"] < tolerance.min_agreement:
        failures.append(
            f"top-1 agreement {figures['top1_agreement']:.1%} < {tolerance.min_agreement:.0%}"
        )
    return figures, failures


def _judge(path, fmt, reference_runner, reference_probs, batch, num_threads) -> CandidateResult:
    """One candidate's result; a candidate that raises is an ``error``, never the end of the run."""
    result = CandidateResult(path=str(path), format=fmt.key if fmt else "unknown", status="pass")
    try:
        with open_runner(path, num_threads=num_threads) as runner:
            fmt = fmt or format_of(path)
            result.format = fmt.key
            result.tolerance = {k: v for k, v in asdict(fmt.tolerance).items() if k != "measured"}
            check_structure(reference_runner, runner)
            probabilities = runner.predict(batch.pixels)
            labels = runner.labels
    except LabelMismatchError as exc:
        result.status, result.failures = "mismatch", [str(exc)]
        return result
    except UsageError:
        raise
    except Exception as exc:  # a bad file, an op an executor lacks, an engine's own error
        message = str(exc) if isinstance(exc, NsfwMobileError) else f"{type(exc).__name__}: {exc}"
        result.status, result.failures = "error", [message.splitlines()[0] if message else ""]
        return result
    figures, result.failures = compare(reference_probs, probabilities, fmt.tolerance)
    result.max_abs_diff = figures["max_abs_diff"]
    result.mean_abs_diff = figures["mean_abs_diff"]
    result.top1_agreement = figures["top1_agreement"]
    result.status = "fail" if result.failures else "pass"
    per_image = np.abs(probabilities - reference_probs).max(axis=1)
    for index in np.argsort(-per_image)[:WORST_COUNT]:
        result.worst.append(
            WorstImage(
                str(batch.paths[index]),
                float(per_image[index]),
                reference_runner.labels[int(reference_probs[index].argmax())],
                labels[int(probabilities[index].argmax())],
            )
        )
    return result


def validate(
    candidates: list[str | Path],
    *,
    reference: str | Path | Runner | None = None,
    images: list[str | Path] | None = None,
    format_keys: list[str] | None = None,
    num_threads: int | None = None,
    on_candidate=None,
) -> ValidationReport:
    """Run the reference and every candidate on the same images and judge each."""
    if not candidates:
        raise UsageError("give at least one candidate model to validate")
    if format_keys and len(format_keys) not in (1, len(candidates)):
        raise UsageError("--format: give one for all candidates or one per candidate")
    keys = list(format_keys or [])
    if len(keys) == 1:
        keys = keys * len(candidates)
    formats = [by_key(k) for k in keys]  # a mistyped --format is a usage error, at once
    # A Runner may be passed in by callers that already loaded the reference (release);
    # they close it. One opened here is closed here.
    if isinstance(reference, Runner):
        return _validate(candidates, reference, images, formats, num_threads, on_candidate)
    with open_runner(reference) as reference_runner:
        return _validate(candidates, reference_runner, images, formats, num_threads, on_candidate)


def _validate(candidates, reference_runner, images, formats, num_threads, on_candidate):
    source = images or sample_images()
    batch = load_images(source, reference_runner.input_size)
    if len(batch.paths) == 0:
        raise UsageError(f"no readable images in {', '.join(map(str, source))}")
    reference_probs = reference_runner.predict(batch.pixels)
    results = []
    for index, path in enumerate(candidates):
        started = time.perf_counter()
        result = _judge(
            path,
            formats[index] if formats else None,
            reference_runner,
            reference_probs,
            batch,
            num_threads,
        )
        result.seconds = round(time.perf_counter() - started, 2)
        results.append(result)
        if on_candidate:
            on_candidate(result)
    return ValidationReport(
        reference=reference_runner.name,
        images=len(batch.paths),
        image_source=", ".join(map(str, source)) if images else "shipped sample images",
        unreadable=[str(e) for e in batch.errors],
        candidates=results,
    )


def _figure(value, spec=".2e"):
    return "-" if value is None else format(value, spec)


def render_table(report: ValidationReport) -> str:
    lines = [
        f"reference {report.reference} on {report.images} images ({report.image_source})",
        f"{'status':<9} {'format':<18} {'max diff':>9} {'mean diff':>9} {'top-1':>7}  file",
    ]
    for c in report.candidates:
        agreement = "-" if c.top1_agreement is None else f"{c.top1_agreement:.1%}"
        lines.append(
            f"{c.status.upper():<9} {c.format:<18} {_figure(c.max_abs_diff):>9} "
            f"{_figure(c.mean_abs_diff):>9} {agreement:>7}  {c.path}"
        )
        for failure in c.failures:
            lines.append(f"          {failure}")
    verdict = "all candidates pass" if report.passed else "VALIDATION FAILED"
    lines.append(verdict)
    return "\n".join(lines)


def render_markdown(report: ValidationReport) -> str:
    lines = [
        "# Validation report",
        "",
        f"Reference: `{report.reference}`, {report.images} images ({report.image_source}).",
        "",
        "| file | format | status | max abs diff | mean abs diff | top-1 agreement | tolerance |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in report.candidates:
        tolerance = ", ".join(f"{k} {v}" for k, v in c.tolerance.items() if v is not None)
        agreement = "-" if c.top1_agreement is None else f"{c.top1_agreement:.1%}"
        lines.append(
            f"| `{Path(c.path).name}` | {c.format} | {c.status} | {_figure(c.max_abs_diff)} | "
            f"{_figure(c.mean_abs_diff)} | {agreement} | {tolerance} |"
        )
    for c in report.candidates:
        if c.failures or c.worst:
            lines += ["", f"## {Path(c.path).name}", ""]
            lines += [f"- {failure}" for failure in c.failures]
            lines += [
                f"- worst: `{Path(w.path).name}` diff {w.max_abs_diff:.2e} "
                f"({w.reference_label} -> {w.candidate_label})"
                for w in c.worst
            ]
    return "\n".join(lines) + "\n"


def render_json(report: ValidationReport) -> str:
    return json.dumps(report.to_dict(), indent=2)
