"""Runners: one per model format, all with the same contract.

A Runner takes the uint8 RGB batch that ``images.py`` produces, ``(N, H, W, 3)``,
maps it to its own input (Keras and float TFLite: x / 255; integer TFLite: the
input tensor's quantization; Core ML: raw pixels into an image input whose
scale is 1/255) and returns float32 probabilities ``(N, classes)`` in the
order of its ``labels``.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelFileError
from .base import Runner

__all__ = ["Runner", "open_runner", "runner_kind"]


def runner_kind(path: str | Path | None) -> str:
    """Which runner opens ``path``: keras, tflite or coreml."""
    if path is None or str(path) == "pretrained":
        return "keras"
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".keras", ".json") or (path.is_dir() and (path / "model.json").is_file()):
        return "keras"
    if suffix == ".tflite":
        return "tflite"
    if suffix in (".mlmodel", ".mlpackage"):
        return "coreml"
    raise ModelFileError(
        f"{path}: unknown model type {suffix or '(no suffix)'!r}; expected .keras, model.json, "
        ".tflite, .mlmodel or .mlpackage"
    )


def open_runner(
    path: str | Path | None = None, *, num_threads: int | None = None, **options
) -> Runner:
    """Open any model file the toolkit knows (None: the pretrained model)."""
    kind = runner_kind(path)
    if path is not None and str(path) != "pretrained" and not Path(path).exists():
        raise ModelFileError(f"{path}: no such file")
    if kind == "keras":
        from .keras_runner import KerasRunner

        return KerasRunner.from_path(path, **options)
    if kind == "tflite":
        from .tflite_runner import TFLiteRunner

        return TFLiteRunner(path, num_threads=num_threads, **options)
    from .coreml_runner import CoreMLRunner

    return CoreMLRunner(path, **options)
