"""Keras -> Core ML: neural network (.mlmodel) and ML Program (.mlpackage).

Both take one image input named ``image`` (RGB, scale 1/255, no bias), so an
app hands Vision or a CVPixelBuffer straight to the model, and are
classifiers: ``classLabel`` (the top label, a string) and ``classLabelProbs``
(a dictionary label -> probability).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .._tf import import_coremltools
from ..atomic import atomic_path
from ..errors import ConversionError, UsageError
from ..metadata import provenance
from ..models import SourceModel
from ..quiet import native_output
from . import Artifact, description

LABEL_OUTPUT = "classLabel"
PROBABILITIES_OUTPUT = "classLabelProbs"
IMAGE_SCALE = 1 / 255.0


VARIANTS = (
    ("mlmodel", "none", None),
    ("mlmodel", "float16", None),
    ("mlpackage", "none", "float16"),
    ("mlpackage", "none", "float32"),
    ("mlpackage", "int8", "float16"),
)
"""(target, quantization, compute precision) this converter implements: the registry's Core ML
rows (a house test checks)."""


def keras2coreml(
    source: SourceModel,
    out: str | Path,
    *,
    quantization: str = "none",
    precision: str | None = None,
) -> Artifact:
    """Convert ``source`` to Core ML at ``out``; the suffix picks the format.

    ``.mlmodel``: neural network, iOS 13, float32 weights (``quantization="float16"``
    halves them). ``.mlpackage``: ML Program, iOS 15, compute ``precision``
    float16 (default) or float32; ``quantization="int8"`` stores weights as int8
    with coremltools.optimize, which needs iOS 16: the target is raised and the
    artefact's notes say so. Options are checked against the format registry
    before any work.
    """
    out = Path(out)
    target = out.suffix.lower().lstrip(".")
    if target not in ("mlmodel", "mlpackage"):
        raise UsageError(f"{out}: a Core ML model must end in .mlmodel or .mlpackage")
    offered = [v for v in VARIANTS if v[0] == target]
    if quantization not in {q for _, q, _ in offered}:
        raise UsageError(
            f"--quantize {quantization} is not available for {target}: choose one of "
            f"{', '.join(dict.fromkeys(q for _, q, _ in offered))}"
        )
    if precision is not None and target != "mlpackage":
        raise UsageError(
            f"--precision applies to --to mlpackage only (ML Programs); {target} has no "
            "compute precision setting"
        )
    precision = precision or ("float16" if target == "mlpackage" else None)
    if (target, quantization, precision) not in VARIANTS:
        raise UsageError(
            f"--precision {precision} with --quantize {quantization} is not offered for "
            f"{target}: choose {', '.join(sorted({p for _, q, p in offered if q == quantization}))}"
        )
    started = time.perf_counter()
    ct = import_coremltools()
    options, notes = _conversion_options(ct, target, quantization, precision)
    try:
        with native_output():  # coremltools draws progress bars; the CLI shows its own
            mlmodel = _convert(ct, source, options)
            mlmodel = _compress(mlmodel, quantization)
    except Exception as exc:  # coremltools raises many types, all fatal here
        raise ConversionError(f"Core ML conversion to {target} failed: {exc}") from exc
    precision_used = precision or "float32"
    spec = mlmodel.get_spec()
    probabilities = spec.description.predictedProbabilitiesName
    if probabilities != PROBABILITIES_OUTPUT:
        ct.utils.rename_feature(spec, probabilities, PROBABILITIES_OUTPUT)
    describe(spec, source, target=target, quantization=quantization, precision=precision_used)
    weights_dir = mlmodel.weights_dir if target == "mlpackage" else None
    final = ct.models.MLModel(spec, weights_dir=weights_dir, skip_model_load=True)
    with atomic_path(out) as temporary:
        final.save(str(temporary))
    artifact = Artifact(out, target, quantization, 0.0, notes=notes)
    if target == "mlpackage":
        artifact.notes.append(f"compute precision {precision_used}")
    return artifact.finish(started)


def _conversion_options(ct, target: str, quantization: str, precision: str | None):
    """``ct.convert`` keywords for the target, and notes for the user."""
    if target == "mlmodel":
        return {"convert_to": "neuralnetwork", "minimum_deployment_target": ct.target.iOS13}, []
    notes = []
    deployment = ct.target.iOS15
    if quantization == "int8":
        deployment = ct.target.iOS16
        notes.append("deployment target raised from iOS 15 to iOS 16: int8 weights need it")
    options = {
        "convert_to": "mlprogram",
        "minimum_deployment_target": deployment,
        "compute_precision": (
            ct.precision.FLOAT16 if precision == "float16" else ct.precision.FLOAT32
        ),
    }
    return options, notes


def _convert(ct, source: SourceModel, options: dict):
    height, width = source.input_size
    return ct.convert(
        source.model,
        source="tensorflow",
        inputs=[
            ct.ImageType(
                name="image",
                shape=(1, height, width, 3),
                scale=IMAGE_SCALE,
                color_layout=ct.colorlayout.RGB,
            )
        ],
        classifier_config=ct.ClassifierConfig(list(source.labels)),
        **options,
    )


def _compress(mlmodel, quantization: str):
    if quantization == "float16":
        from coremltools.models.neural_network import quantization_utils

        return quantization_utils.quantize_weights(mlmodel, nbits=16)
    if quantization == "int8":
        import coremltools.optimize as cto

        config = cto.coreml.OptimizationConfig(
            global_config=cto.coreml.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8")
        )
        # coremltools divides by a zero scale for all-zero weight channels; the
        # NaN it casts is multiplied by that zero scale again, so it is harmless.
        # np.errstate is per thread, unlike a warnings filter.
        with np.errstate(divide="ignore", invalid="ignore"):
            return cto.coreml.linear_quantize_weights(mlmodel, config=config)
    return mlmodel


def describe(spec, source: SourceModel, *, target: str, quantization: str, precision: str) -> None:
    """Fill the model description and the user-defined metadata."""
    contract = source.contract
    spec.description.metadata.author = contract.author
    spec.description.metadata.license = contract.license
    spec.description.metadata.shortDescription = description(source)
    spec.description.metadata.versionString = contract.version
    height, width = source.input_size
    for feature in spec.description.input:
        if feature.name == "image":
            feature.shortDescription = (
                f"RGB image, {width}x{height}; pixels are scaled by 1/255 inside the model"
            )
    for feature in spec.description.output:
        if feature.name == LABEL_OUTPUT:
            feature.shortDescription = "Most likely class: " + ", ".join(source.labels)
        elif feature.name == PROBABILITIES_OUTPUT:
            feature.shortDescription = "Probability of each class, by label"
    user = spec.description.metadata.userDefined
    # A conversion date would change the artefact's checksum every day.
    user.pop("com.github.apple.coremltools.conversion_date", None)
    for key, value in provenance(
        source, target=target, quantization=quantization, compute_precision=precision
    ).items():
        user[key] = value
