"""Convert one source model to many formats: the work behind ``nsfw-mobile convert``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import UsageError
from .export import Artifact
from .formats import Format
from .images import load_images, sample_images
from .export.tflite import MIN_CALIBRATION_IMAGES
from .models import SourceModel


def load_calibration(folder: str | Path | None, size: tuple[int, int]) -> tuple[np.ndarray, list[str]]:
    """Calibration images for full-integer quantization, and notes for the user."""
    if folder is None:
        batch = load_images(sample_images(), size)
        return batch.pixels, [
            f"calibrated on the {len(batch.paths)} sample images shipped with the package; "
            "real data calibrates better: pass --calibration DIR"
        ]
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"--calibration {folder}: not a folder")
    batch = load_images([folder], size)
    notes = [f"skipped unreadable calibration file {e}" for e in batch.errors]
    if len(batch.paths) < MIN_CALIBRATION_IMAGES:
        raise UsageError(
            f"--calibration {folder}: {len(batch.paths)} readable images, at least "
            f"{MIN_CALIBRATION_IMAGES} are needed (a few hundred representative photos is better)"
        )
    return batch.pixels, notes


def check_request(formats: Sequence[Format], *, io_type: str, calibration: str | Path | None) -> None:
    """Refuse option combinations that would be ignored, before any work."""
    has_int8_tflite = any(f.target == "tflite" and f.quantization == "int8" for f in formats)
    if io_type != "uint8" and not has_int8_tflite:
        raise UsageError("--io applies to full-integer TFLite only: add --to tflite --quantize int8")
    if calibration is not None and not has_int8_tflite:
        raise UsageError(
            "--calibration applies to full-integer TFLite only: add --to tflite --quantize int8"
        )


def write_labels(source: SourceModel, out_dir: Path) -> Path:
    path = out_dir / "labels.txt"
    with atomic_path(path) as temporary:
        temporary.write_text("\n".join(source.labels) + "\n")
    return path


def convert_all(
    source: SourceModel,
    formats: Sequence[Format],
    out_dir: str | Path,
    *,
    calibration: str | Path | None = None,
    io_type: str = "uint8",
    on_start: Callable[[int, Format, Path], None] | None = None,
    on_done: Callable[[int, Artifact], None] | None = None,
) -> list[Artifact]:
    """Convert ``source`` to every format in ``formats`` under ``out_dir``."""
    check_request(formats, io_type=io_type, calibration=calibration)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    calibration_pixels, calibration_notes = None, []
    if any(f.target == "tflite" and f.quantization == "int8" for f in formats):
        calibration_pixels, calibration_notes = load_calibration(calibration, source.input_size)
    artifacts = []
    for index, fmt in enumerate(formats):
        out = out_dir / fmt.filename
        if on_start:
            on_start(index, fmt, out)
        if fmt.target == "tflite":
            from .export.tflite import keras2tflite

            artifact = keras2tflite(
                source, out, quantization=fmt.quantization,
                calibration=calibration_pixels, io_type=io_type,
            )
            if fmt.quantization == "int8":
                artifact.notes.extend(calibration_notes)
        else:
            from .export.coreml import keras2coreml

            artifact = keras2coreml(source, out, quantization=fmt.quantization, precision=fmt.precision)
        artifact.format = fmt.key
        artifacts.append(artifact)
        if on_done:
            on_done(index, artifact)
    write_labels(source, out_dir)
    return artifacts
