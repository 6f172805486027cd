"""Reading Core ML model specs on any OS: loading, labels, preprocessing, op counts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..errors import MissingFileError, ModelFileError
from ..metadata import ArtifactMetadata


def load_spec(path: str | Path):
    """The protobuf spec of a .mlmodel file or .mlpackage folder, with clear errors."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(path)
    if path.suffix == ".mlpackage" and not (path / "Manifest.json").is_file():
        raise ModelFileError(f"{path}: not an ML package (no Manifest.json)")
    from .._tf import import_coremltools

    ct = import_coremltools()

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


def image_features(spec) -> list:
    """The spec's input features of image type."""
    return [f for f in spec.description.input if f.type.WhichOneof("Type") == "imageType"]


def model_body(spec):
    """The neural network message of an NN model (plain, classifier or regressor), else None."""
    kind = spec.WhichOneof("Type")
    if kind in ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor"):
        return getattr(spec, kind)
    return None


def class_labels(spec) -> tuple[str, ...]:
    kind = spec.WhichOneof("Type")
    if kind == "mlProgram":
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


# ------------------------------------------------------------------ ML Program specs


def main_block(spec):
    functions = spec.mlProgram.functions
    if "main" not in functions:
        raise ModelFileError("ML Program has no 'main' function")
    function = functions["main"]
    specialization = function.opset or next(iter(function.block_specializations))
    return function.block_specializations[specialization]


def _immediate_strings(value) -> list[str]:
    immediate = value.immediateValue
    if immediate.WhichOneof("value") == "list":
        return [
            s for item in immediate.list.values for s in item.immediateValue.tensor.strings.values
        ]
    return list(immediate.tensor.strings.values)


def classify_labels(spec) -> tuple[str, ...]:
    for op in main_block(spec).operations:
        if op.type == "classify":
            binding = op.inputs["classes"].arguments[0]
            if binding.WhichOneof("binding") == "value":
                return tuple(_immediate_strings(binding.value))
            return tuple(_const_strings(spec, binding.name))
    return ()


def _const_strings(spec, name: str) -> list[str]:
    for op in main_block(spec).operations:
        if op.type == "const" and op.outputs[0].name == name:
            return _immediate_strings(op.attributes["val"])
    return []


def _const_float(spec, name: str) -> float | list[float] | None:
    for op in main_block(spec).operations:
        if op.type == "const" and op.outputs[0].name == name:
            values = list(op.attributes["val"].immediateValue.tensor.floats.values)
            return values[0] if len(values) == 1 else values
    return None


def program_image_preprocessing(spec) -> dict[str, dict]:
    """Scale and bias the converter wrote into the program for each image input."""
    result = {}
    image_names = {
        f.name for f in spec.description.input if f.type.WhichOneof("Type") == "imageType"
    }
    operations = list(main_block(spec).operations)
    for name in image_names:
        current, entry = name, {"scale": 1.0, "bias": [0.0, 0.0, 0.0]}
        for op in operations:
            args = {k: v.arguments[0].name for k, v in op.inputs.items() if v.arguments}
            if op.type in ("mul", "add") and args.get("x") == current and "y" in args:
                value = _const_float(spec, args["y"])
                if value is None:
                    continue
                if op.type == "mul":
                    entry["scale"] = value
                else:
                    entry["bias"] = value if isinstance(value, list) else [value] * 3
                current = op.outputs[0].name
        result[name] = entry
    return result


def artifact_metadata(path: Path, spec=None) -> ArtifactMetadata:
    """A Core ML model's labels, input size and provenance (``formats.read_metadata``)."""
    spec = spec if spec is not None else load_spec(path)
    images = [feature.type.imageType for feature in image_features(spec)]
    described = spec.description.metadata
    return ArtifactMetadata(
        labels=class_labels(spec),
        input_size=(images[0].height, images[0].width) if len(images) == 1 else None,
        info={
            "name": Path(path).stem,
            "description": described.shortDescription,
            "version": described.versionString,
            "author": described.author,
            "license": described.license,
        },
        properties=dict(described.userDefined),
    )
