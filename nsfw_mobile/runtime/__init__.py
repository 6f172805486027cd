"""Runners: one per model file type, all with the same contract.

A Runner takes the uint8 RGB batch that ``images.py`` produces, ``(N, H, W, 3)``,
maps it to its own input (Keras and float TFLite: x / 255; integer TFLite: the
input tensor's quantization; Core ML: raw pixels into an image input whose
scale is 1/255) and returns float32 probabilities ``(N, classes)`` in the
order of its ``labels``. Which runner opens a file is the registry's answer
(``formats.file_type_of``).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelFileError
from ..formats import file_type_of, is_named_model
from .base import Runner

__all__ = ["Runner", "open_runner"]


def open_runner(
    path: str | Path | None = None,
    *,
    num_threads: int | None = None,
    allow_unsafe: bool = False,
    engine: str | None = None,
    **options,
) -> Runner:
    """Open any model file the toolkit knows, or a zoo model by name (None: the default one).

    ``num_threads`` applies to engines with a thread setting (LiteRT);
    ``allow_unsafe`` to Keras files with Lambda layers; other ``options`` go to
    the file type's runner as they are. ``engine`` (a key in ``formats.ENGINES``; None: the
    file type's own) runs the file on another engine that may run it (OpenVINO for .onnx).
    """
    file_type = file_type_of(path)
    if path is not None and not is_named_model(path) and not Path(path).exists():
        raise ModelFileError(f"{path}: no such file")
    return file_type.open_runner(
        path, engine=engine, num_threads=num_threads, allow_unsafe=allow_unsafe, **options
    )
