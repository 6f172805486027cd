"""Reading Core ML model specs on any OS: loading, labels, preprocessing, op counts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import ModelFileError


def load_spec(path: str | Path):
    """The protobuf spec of a .mlmodel file or .mlpackage folder, with clear errors."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such file")
    if path.suffix == ".mlpackage" and not (path / "Manifest.json").is_file():
        raise ModelFileError(f"{path}: not an ML package (no Manifest.json)")
    from .._tf import quiet_tensorflow

    quiet_tensorflow()
    import coremltools as ct

    try:
        spec = ct.utils.load_spec(str(path))
    except Exception as exc:  # protobuf DecodeError, JSON and OS errors
        raise ModelFileError(
            f"{path}: not a readable Core ML model ({type(exc).__name__}: {exc})"
        ) from None
    if spec.WhichOneof("Type") is None or not spec.description.input:
        raise ModelFileError(
            f"{path}: not a Core ML model (no model type or no inputs in the spec)"
        )
    return spec


def model_body(spec):
    """The neural network message of an NN model (plain, classifier or regressor), else None."""
    kind = spec.WhichOneof("Type")
    if kind in ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor"):
        return getattr(spec, kind)
    return None


def class_labels(spec) -> tuple[str, ...]:
    kind = spec.WhichOneof("Type")
    if kind == "mlProgram":
        from .coreml_mil import classify_labels

        return classify_labels(spec)
    body = model_body(spec)
    if body is None or body.WhichOneof("ClassLabels") is None:
        return ()
    labels = getattr(body, body.WhichOneof("ClassLabels")).vector
    return tuple(str(label) for label in labels)


def image_preprocessing(spec) -> dict[str, dict]:
    """Per image input: scale, per-channel bias and colour order, as the model applies them."""
    result = {}
    color = {10: "GRAYSCALE", 20: "RGB", 30: "BGR"}
    for feature in spec.description.input:
        if feature.type.WhichOneof("Type") == "imageType":
            result[feature.name] = {
                "scale": 1.0,
                "bias": [0.0, 0.0, 0.0],
                "color_space": color.get(feature.type.imageType.colorSpace, "unknown"),
            }
    body = model_body(spec)
    if body is not None:
        for item in body.preprocessing:
            name = item.featureName or next(iter(result), "")
            if item.WhichOneof("preprocessor") == "scaler":
                scaler = item.scaler
                result[name].update(
                    scale=scaler.channelScale or 1.0,
                    bias=[scaler.redBias, scaler.greenBias, scaler.blueBias],
                )
    elif spec.WhichOneof("Type") == "mlProgram":
        from .coreml_mil import program_image_preprocessing

        for name, values in program_image_preprocessing(spec).items():
            result.setdefault(name, {}).update(values)
    return result


def op_counts(spec) -> dict[str, int]:
    body = model_body(spec)
    if body is not None:
        return dict(sorted(Counter(layer.WhichOneof("layer") for layer in body.layers).items()))
    if spec.WhichOneof("Type") == "mlProgram":
        counts = Counter()
        for function in spec.mlProgram.functions.values():
            for block in function.block_specializations.values():
                counts.update(op.type for op in block.operations)
        return dict(sorted(counts.items()))
    return {}


def _weight_count(weights) -> int:
    if len(weights.floatValue):
        return len(weights.floatValue)
    if weights.float16Value:
        return len(weights.float16Value) // 2
    if weights.rawValue:
        return len(weights.rawValue) // 4
    if weights.int8RawValue:
        return len(weights.int8RawValue)
    return 0


def model_parameters(spec, path: Path) -> int:
    body = model_body(spec)
    if body is not None:
        total = 0
        for layer in body.layers:
            params = getattr(layer, layer.WhichOneof("layer"))
            for field in ("weights", "bias", "gamma", "beta", "mean", "variance", "data"):
                if hasattr(params, field) and params.HasField(field):
                    total += _weight_count(getattr(params, field))
        return total
    if spec.WhichOneof("Type") == "mlProgram":
        from .coreml_mil import load_program

        program = load_program(path)
        return int(
            sum(
                np.size(value)
                for value in program.constants.values()
                if isinstance(value, np.ndarray) and value.size > 1
            )
        )
    return 0
