"""Keras -> TFLite: float32, float16 weights, dynamic-range int8, full-integer int8."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .._tf import import_tensorflow
from ..atomic import atomic_path
from ..errors import ConversionError, UsageError
from ..metadata import provenance
from ..models import SourceModel
from ..quiet import native_output
from ..tflite_metadata import TFLiteMetadata, attach_metadata
from . import IO_TYPE, Artifact, calibration_for, check_quantization, description


def _calibration_batches(pixels: np.ndarray):
    """Representative data for full-integer quantization, one image per step.

    The first image gets one black and one white pixel so that the observed
    input range is exactly [0, 1]: the uint8 input then has scale 1/255 and
    zero point 0, and an app feeds raw RGB bytes. Two pixels of one image do
    not move any other activation range measurably.
    """

    def generate():
        for index, image in enumerate(pixels):
            x = image.astype(np.float32)[None] / np.float32(255)
            if index == 0:
                x[0, 0, 0, :], x[0, 0, 1, :] = 0.0, 1.0
            yield [x]

    return generate


def _convert(tf, model, quantization: str, io_type: str, calibration: np.ndarray | None) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _calibration_batches(calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io_dtype = {"uint8": tf.uint8, "int8": tf.int8, "float32": tf.float32}[io_type]
        converter.inference_input_type = io_dtype
        converter.inference_output_type = io_dtype
    # Keras 3's export step prints every captured variable to stdout and the
    # quantizer logs its settings from C++; the CLI keeps both out of its output.
    with native_output():
        return converter.convert()


QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
"""What this converter implements (the registry's tflite rows; a house test checks)."""


def keras2tflite(
    source: SourceModel,
    out: str | Path,
    *,
    quantization: str = "none",
    calibration=None,
    io_type: str | None = None,
) -> Artifact:
    """Convert ``source`` to a TFLite file at ``out`` (written atomically) with metadata.

    ``calibration``: required for ``quantization="int8"``, at least MIN_CALIBRATION_IMAGES
    images: an ``images.ImageBatch`` (its files' SHA-256 are recorded in the metadata) or a
    uint8 array (N, H, W, 3). ``io_type`` applies to int8 only (None: uint8).
    """
    check_quantization("keras2tflite", quantization, QUANTIZATIONS)
    IO_TYPE.check(io_type)
    if io_type is not None and quantization != "int8":
        raise UsageError(
            f"{IO_TYPE.flag} applies to {IO_TYPE.applies_to} only: add --to tflite-int8"
        )
    io_type = io_type or IO_TYPE.default
    calibration, calibration_record = calibration_for(
        quantization, calibration, "full-integer quantization"
    )
    tf = import_tensorflow()
    started = time.perf_counter()
    try:
        model_bytes = _convert(tf, source.model, quantization, io_type, calibration)
    except Exception as exc:  # the converter raises many types, all fatal here
        raise ConversionError(f"TFLite conversion ({quantization}) failed: {exc}") from exc

    height, width = source.input_size
    float_input = quantization != "int8" or io_type == "float32"
    meta = TFLiteMetadata(
        name=source.contract.name,
        description=description(source),
        version=source.contract.version,
        author=source.contract.author,
        license=source.contract.license,
        input_name="image",
        input_description=(
            "RGB image, float pixels / 255" if float_input else f"RGB image, raw {io_type} pixels"
        ),
        image_size=(width, height),
        normalization=([0.0], [255.0]) if float_input else None,
        input_range=(0.0, 1.0) if float_input else (0.0, 255.0),
        output_name="probabilities",
        output_description="Probability of each class, in the order of labels.txt",
        labels=list(source.labels),
        properties=provenance(
            source,
            target="tflite",
            quantization=quantization,
            io_type=io_type if quantization == "int8" else "float32",
            **calibration_record,
        ),
    )
    out = Path(out)
    with atomic_path(out) as temporary:
        temporary.write_bytes(attach_metadata(model_bytes, meta))
    artifact = Artifact(out, "tflite", quantization, 0.0)
    if quantization == "int8":
        artifact.notes.append(
            f"calibrated on {len(calibration)} images, {io_type} input and output"
        )
    return artifact.finish(started)
