"""Compare converted models with their Keras reference on the same decoded images.

Structure is checked first (input size, label set, label order): a mismatch
there is reported as ``mismatch``, never as a tolerance miss. Then the
candidate's probabilities are compared with the reference's against the
tolerance of its format in the registry (``formats.Tolerance``): fixed bounds
for float32 formats; for reduced-precision formats, bounds in proportion to
the reference's own sensitivity to that precision, measured by running the
reference at it (``precision.emulate``), and reported beside the difference.

Images a full-integer artefact was calibrated on (its metadata lists their
SHA-256) are left out of its validation: a model measured on its own
calibration images looks better than it is.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import LabelMismatchError, NsfwMobileError, UsageError
from .files import sha256_file
from .formats import (
    ENGINE_KEYS,
    Tolerance,
    by_key,
    engine_by_key,
    engine_for,
    file_type_of,
    format_of,
    read_metadata,
    tolerance_for,
)
from .images import load_images, sample_images
from .pause import phase
from .resolve import MEASURE, SOURCE, SOURCE_TYPES, ModelRef, resolve_model
from .runtime.base import Runner

WORST_COUNT = 3
MIN_IMAGES = 5
"""Fewest images a candidate is judged on once its calibration images are left out."""


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
    images: int = 0
    """Images it was judged on (the batch less its calibration images)."""
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    top1_agreement: float | None = None
    """Share of non-tie images whose top-1 label is the reference's."""
    ties: int = 0
    """Images whose reference margin is within the allowed difference (left out of top-1)."""
    sensitivity: dict = field(default_factory=dict)
    """The reference's own difference at the format's precision: precision, max_abs, mean_abs."""
    bounds: dict = field(default_factory=dict)
    """The bounds applied: max_abs, mean_abs, min_agreement."""
    tolerance: dict = field(default_factory=dict)
    calibration_images_excluded: int = 0
    failures: list[str] = field(default_factory=list)
    worst: list[WorstImage] = field(default_factory=list)
    seconds: float = 0.0
    engine: str = ""
    """The engine it ran on (a key in ``formats.ENGINES``)."""

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    @property
    def label(self) -> str:
        """The file's name, and the engine where it is not the file's own
        (``nsfw_int8.onnx on openvino``)."""
        name = Path(self.path).name
        try:
            own = file_type_of(self.path).default_engine
        except NsfwMobileError:
            own = self.engine
        return name if self.engine in ("", own) else f"{name} on {self.engine}"


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


def calibration_checksums(path: str | Path) -> set[str]:
    """SHA-256 of the images an artefact was calibrated on, as its metadata lists them."""
    listed = read_metadata(path).properties.get("calibration_sha256", "[]")
    try:
        checksums = json.loads(listed)
    except ValueError:
        return set()
    return {c for c in checksums if isinstance(c, str)} if isinstance(checksums, list) else set()


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


@dataclass
class Sensitivity:
    """How far the reference itself moves at a precision, per image and overall."""

    precision: str | None
    per_image: np.ndarray
    """Largest absolute probability change on each image."""
    mean: float

    @property
    def max(self) -> float:
        return float(self.per_image.max()) if self.per_image.size else 0.0

    def to_dict(self) -> dict:
        return {"precision": self.precision, "max_abs": self.max, "mean_abs": self.mean}


def sensitivity_of(reference_probs: np.ndarray, emulated: np.ndarray | None, key: str | None):
    if emulated is None:
        return Sensitivity(key, np.zeros(len(reference_probs)), 0.0)
    difference = np.abs(emulated.astype(np.float64) - reference_probs.astype(np.float64))
    return Sensitivity(key, difference.max(axis=1), float(difference.mean()))


def compare(
    reference_probs: np.ndarray,
    candidate_probs: np.ndarray,
    tolerance: Tolerance,
    sensitivity: Sensitivity | None = None,
) -> tuple[dict, list[str]]:
    """Figures and the list of broken bounds (empty when the candidate passes)."""
    reference_probs = reference_probs.astype(np.float64)
    difference = np.abs(candidate_probs.astype(np.float64) - reference_probs)
    sensitivity = sensitivity or sensitivity_of(reference_probs, None, tolerance.precision)
    max_bound, mean_bound = tolerance.bounds(sensitivity.max, sensitivity.mean)
    top_two = np.sort(reference_probs, axis=1)[:, -2:] if reference_probs.shape[1] > 1 else None
    margin = top_two[:, 1] - top_two[:, 0] if top_two is not None else np.ones(len(difference))
    ties = margin <= 2 * tolerance.allowance(sensitivity.per_image)
    agree = candidate_probs.argmax(1) == reference_probs.argmax(1)
    decisive = ~ties
    figures = {
        "max_abs_diff": float(difference.max()),
        "mean_abs_diff": float(difference.mean()),
        "top1_agreement": float(agree[decisive].mean()) if decisive.any() else 1.0,
        "ties": int(ties.sum()),
        "bounds": {
            "max_abs": max_bound,
            "mean_abs": mean_bound,
            "min_agreement": tolerance.min_agreement,
        },
    }
    relative = (
        ""
        if tolerance.precision is None
        else f" ({tolerance.multiplier:g}x the reference's own difference at {tolerance.precision}"
    )
    failures = []
    if figures["max_abs_diff"] > max_bound:
        own = (
            f"{relative}: {sensitivity.max:.3g}, floor {tolerance.max_floor:g})" if relative else ""
        )
        failures.append(f"max abs diff {figures['max_abs_diff']:.3g} > {max_bound:.3g}{own}")
    if mean_bound is not None and figures["mean_abs_diff"] > mean_bound:
        own = (
            f"{relative}: {sensitivity.mean:.3g}, floor {tolerance.mean_floor:g})"
            if relative
            else ""
        )
        failures.append(f"mean abs diff {figures['mean_abs_diff']:.3g} > {mean_bound:.3g}{own}")
    if figures["top1_agreement"] < tolerance.min_agreement:
        failures.append(
            f"top-1 agreement {figures['top1_agreement']:.1%} < {tolerance.min_agreement:.0%} "
            f"on {int(decisive.sum())} images whose margin is beyond a tie ({figures['ties']} ties)"
        )
    return figures, failures


class _Reference:
    """The Keras reference's probabilities on the batch, and its emulated ones per precision.

    For a source imported from ONNX, the reference is ONNX Runtime running the original file
    (its declared preprocessing applied in numpy); the imported Keras model's own difference
    from it on the same images (``import_diff``, at most ``onnx_import.IMPORT_BOUND``) is
    added to every candidate's bound, so a candidate passes only if the import and the
    conversion together stay within it.
    """

    def __init__(self, runner, batch):
        self.runner, self.batch = runner, batch
        self.probabilities = runner.predict(batch.pixels)
        self.import_diff: float | None = None
        imported = getattr(getattr(runner, "source", None), "imported", None)
        if imported is not None:
            self._against_original(imported)
        self._emulated: dict[str, np.ndarray] = {}
        self._checksums: list[str] | None = None

    def _against_original(self, imported) -> None:
        from .errors import ConversionError
        from .onnx_import import IMPORT_BOUND

        with imported.runner(self.runner.labels) as original:
            probabilities = original.predict(self.batch.pixels)
        difference = np.abs(probabilities.astype(np.float64) - self.probabilities)
        self.import_diff = float(difference.max()) if difference.size else 0.0
        if self.import_diff > IMPORT_BOUND:
            raise ConversionError(
                f"the model imported from {imported.path} differs from ONNX Runtime on the "
                f"original by {self.import_diff:.3g} (> {IMPORT_BOUND:g}): an importer fault; "
                "--diagnose names the first node that diverges"
            )
        self.probabilities = probabilities

    def emulated(self, key: str) -> np.ndarray:
        if key not in self._emulated:
            from .precision import emulate

            self._emulated[key] = emulate(self.runner.model, self.batch.pixels, key)
        return self._emulated[key]

    def rows_without(self, checksums: set[str]) -> np.ndarray:
        """A mask of the batch's images whose SHA-256 is not in ``checksums``."""
        if not checksums:
            return np.ones(len(self.batch.paths), bool)
        if self._checksums is None:
            self._checksums = [sha256_file(p) for p in self.batch.paths]
        return np.array([c not in checksums for c in self._checksums], bool)


def _judge(path, fmt, reference: _Reference, num_threads, engine=None) -> CandidateResult:
    """One candidate's result; a candidate that raises is an ``error``, never the end of the run."""
    result = CandidateResult(path=str(path), format=fmt.key if fmt else "unknown", status="pass")
    result.engine = engine or ""
    try:
        ref = path if isinstance(path, ModelRef) else resolve_model(path, use=MEASURE)
        path = result.path = ref.label
        if engine is not None:
            ref = replace(ref, engine_override=engine)
        result.engine = engine or (ref.file_type.default_engine if ref.file_type else "")
        with ref.open_runner(num_threads=num_threads) as runner:
            fmt = fmt or format_of(path)
            result.format = fmt.key
            tolerance = tolerance_for(fmt, engine)
            if reference.import_diff is not None:
                tolerance = tolerance.widened(reference.import_diff)
            result.tolerance = {k: v for k, v in asdict(tolerance).items() if k != "measured"}
            check_structure(reference.runner, runner)
            rows = reference.rows_without(calibration_checksums(path))
            result.calibration_images_excluded = int((~rows).sum())
            if rows.sum() < MIN_IMAGES:
                raise UsageError(
                    f"{path}: {int((~rows).sum())} of the {len(rows)} validation images "
                    "calibrated it, which leaves too few to judge it on: give other images "
                    "with --images"
                )
            probabilities = runner.predict(reference.batch.pixels[rows])
    except LabelMismatchError as exc:
        result.status, result.failures = "mismatch", [str(exc)]
        return result
    except UsageError:
        raise
    except Exception as exc:  # a bad file, an op an executor lacks, an engine's own error
        message = str(exc) if isinstance(exc, NsfwMobileError) else f"{type(exc).__name__}: {exc}"
        result.status, result.failures = "error", [message.splitlines()[0] if message else ""]
        return result
    expected = reference.probabilities[rows]
    key = tolerance.precision
    emulated = reference.emulated(key)[rows] if key else None
    sensitivity = sensitivity_of(expected, emulated, key)
    figures, result.failures = compare(expected, probabilities, tolerance, sensitivity)
    result.images = int(rows.sum())
    result.max_abs_diff = figures["max_abs_diff"]
    result.mean_abs_diff = figures["mean_abs_diff"]
    result.top1_agreement = figures["top1_agreement"]
    result.ties = figures["ties"]
    result.bounds = figures["bounds"]
    if reference.import_diff is not None:
        result.bounds["import"] = reference.import_diff
    result.sensitivity = sensitivity.to_dict() if key else {}
    result.status = "fail" if result.failures else "pass"
    per_image = np.abs(probabilities - expected).max(axis=1)
    paths = [p for p, keep in zip(reference.batch.paths, rows) if keep]
    for index in np.argsort(-per_image)[:WORST_COUNT]:
        result.worst.append(
            WorstImage(
                str(paths[index]),
                float(per_image[index]),
                reference.runner.labels[int(expected[index].argmax())],
                reference.runner.labels[int(probabilities[index].argmax())],
            )
        )
    return result


def check_engine(path, engine: str) -> None:
    """Refuse an engine that cannot run ``path``, or one not installed, before any work."""
    if engine not in ENGINE_KEYS:
        engine_by_key(engine)  # names the choices
    if isinstance(path, ModelRef):
        file_type = path.file_type
    else:
        file_type = resolve_model(path, use=MEASURE).file_type
    engine_for(file_type, engine)
    if not file_type.installed_on(engine):
        extra = engine_by_key(engine).extra
        raise UsageError(
            f"--engine {engine}: not installed here: pip install 'nsfw-mobile[{extra}]'"
        )


def reference_runner(reference, *, allow_unsafe: bool = False, preprocessing=None):
    """The Keras reference: a runner given by the caller, or one opened from a model source
    (``resolve.resolve_model(..., use=SOURCE)``: None, a zoo name, a .keras file, a TF.js
    model, an ONNX source: imported, and judged end to end against ONNX Runtime on the
    original). Other files are refused: quantized formats are judged by running the
    reference itself at their precision, in Keras."""
    from .runtime.keras_runner import KerasRunner

    if isinstance(reference, KerasRunner):
        return reference
    if isinstance(reference, Runner):
        raise UsageError(f"the reference must be a Keras model, not {reference.name}")
    ref = (
        reference
        if isinstance(reference, ModelRef)
        else resolve_model(reference, use=SOURCE, unsafe=allow_unsafe, preprocessing=preprocessing)
    )
    if ref.path is not None and ref.file_type not in SOURCE_TYPES:
        raise UsageError(
            f"--reference {ref.given}: give the Keras model the artefacts were made from "
            "(.keras, a TF.js model.json or the source .onnx); the validator runs it in Keras"
        )
    return replace(ref, use=SOURCE).open_runner()


def validate(
    candidates: list[ModelRef | str | Path],
    *,
    reference: ModelRef | str | Path | Runner | None = None,
    images: list[str | Path] | None = None,
    format_keys: list[str] | None = None,
    num_threads: int | None = None,
    on_candidate=None,
    engines: list[str | None] | None = None,
    preprocessing=None,
) -> ValidationReport:
    """Run the reference and every candidate on the same images and judge each.

    ``engines``: the engine each candidate runs on (a key in ``formats.ENGINES``; None: its
    file type's own), one for all candidates or one per candidate; checked before any work.
    ``preprocessing``: ``--preprocess`` items for an ONNX reference (see ``onnx_source``).
    """
    if not candidates:
        raise UsageError("give at least one candidate model to validate")
    if format_keys and len(format_keys) not in (1, len(candidates)):
        raise UsageError("--format: give one for all candidates or one per candidate")
    if engines and len(engines) not in (1, len(candidates)):
        raise UsageError("--engine: give one for all candidates or one per candidate")
    keys = list(format_keys or [])
    if len(keys) == 1:
        keys = keys * len(candidates)
    formats = [by_key(k) for k in keys]  # a mistyped --format is a usage error, at once
    chosen = list(engines or [None])
    chosen = chosen * len(candidates) if len(chosen) == 1 else chosen
    for path, engine in zip(candidates, chosen):
        if engine is not None:
            check_engine(path, engine)
    runner = reference_runner(reference, preprocessing=preprocessing)
    try:
        source = images or sample_images()
        batch = load_images(source, runner.input_size)
        if len(batch.paths) == 0:
            raise UsageError(f"no readable images in {', '.join(map(str, source))}")
        judged = _Reference(runner, batch)
        results = []
        for index, path in enumerate(candidates):
            phase(f"validating:{Path(getattr(path, 'label', path)).name}")  # a ModelRef: its label
            started = time.perf_counter()
            fmt = formats[index] if formats else None
            result = _judge(path, fmt, judged, num_threads, chosen[index])
            result.seconds = round(time.perf_counter() - started, 2)
            results.append(result)
            if on_candidate:
                on_candidate(result)
    finally:
        if runner is not reference:
            runner.close()
    return ValidationReport(
        reference=runner.name
        + (" (end to end: ONNX Runtime on the original)" if judged.import_diff is not None else ""),
        images=len(batch.paths),
        image_source=", ".join(map(str, source)) if images else "shipped sample images",
        unreadable=[str(e) for e in batch.errors],
        candidates=results,
    )


def _figure(value, spec=".2e"):
    return "-" if value is None else format(value, spec)


def _bound(c: CandidateResult) -> str:
    return _figure(c.bounds.get("max_abs"))


def _own(c: CandidateResult) -> str:
    return _figure(c.sensitivity.get("max_abs")) if c.sensitivity else "-"


def render_table(report: ValidationReport) -> str:
    lines = [
        f"reference {report.reference} on {report.images} images ({report.image_source})",
        f"{'status':<9} {'format':<18} {'engine':<11} {'max diff':>9} {'bound':>9} {'own':>9} "
        f"{'mean diff':>9} {'top-1':>7} {'ties':>4}  file",
    ]
    for c in report.candidates:
        agreement = "-" if c.top1_agreement is None else f"{c.top1_agreement:.1%}"
        lines.append(
            f"{c.status.upper():<9} {c.format:<18} {c.engine:<11} {_figure(c.max_abs_diff):>9} "
            f"{_bound(c):>9} {_own(c):>9} {_figure(c.mean_abs_diff):>9} {agreement:>7} "
            f"{c.ties:>4}  {c.path}"
        )
        if c.calibration_images_excluded:
            lines.append(
                f"          judged on {c.images} images: {c.calibration_images_excluded} "
                "calibrated it"
            )
        for failure in c.failures:
            lines.append(f"          {failure}")
    lines.append(
        "own: the reference's own max difference at the format's precision; "
        "bound: what the candidate may differ; ties: images left out of top-1"
    )
    verdict = "all candidates pass" if report.passed else "VALIDATION FAILED"
    lines.append(verdict)
    return "\n".join(lines)


def render_markdown(report: ValidationReport) -> str:
    lines = [
        "# Validation report",
        "",
        f"Reference: `{report.reference}`, {report.images} images ({report.image_source}).",
        "",
        "| file | format | status | images | max abs diff | bound | reference's own "
        "| mean abs diff | top-1 agreement | ties | engine |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report.candidates:
        agreement = "-" if c.top1_agreement is None else f"{c.top1_agreement:.1%}"
        lines.append(
            f"| `{Path(c.path).name}` | {c.format} | {c.status} | {c.images} | "
            f"{_figure(c.max_abs_diff)} | {_bound(c)} | {_own(c)} | "
            f"{_figure(c.mean_abs_diff)} | {agreement} | {c.ties} | {c.engine} |"
        )
    lines += [
        "",
        "*Bound*: the largest difference a faithful artefact may show; for reduced-precision "
        "formats a multiple of the *reference's own* difference when it is run at the format's "
        "precision. *Ties*: images whose top two classes are closer than the allowed "
        "difference, left out of the top-1 agreement.",
    ]
    for c in report.candidates:
        if c.failures or c.worst:
            lines += ["", f"## {c.label}", ""]
            lines += [f"- {failure}" for failure in c.failures]
            lines += [
                f"- worst: `{Path(w.path).name}` diff {w.max_abs_diff:.2e} "
                f"({w.reference_label} -> {w.candidate_label})"
                for w in c.worst
            ]
    return "\n".join(lines) + "\n"


def render_json(report: ValidationReport) -> str:
    return json.dumps(report.to_dict(), indent=2)
