"""``nsfw-mobile inspect``: what is inside a model file, as data."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from .errors import ModelFileError


def inspect_keras(path: Path) -> dict:
    from .models import load_source

    source = load_source(path)
    model = source.model
    layers = Counter(
        layer.__class__.__name__ for layer in model._flatten_layers(include_self=False)
    )
    return {
        "inputs": [
            {
                "name": t.name,
                "shape": list(t.shape),
                "dtype": str(t.dtype),
                "preprocessing": "float RGB in [0, 1] (pixels / 255)",
            }
            for t in model.inputs
        ],
        "outputs": [
            {"name": t.name, "shape": list(t.shape), "dtype": str(t.dtype)} for t in model.outputs
        ],
        "labels": list(source.labels),
        "metadata": {"sha256": source.sha256, **source.contract.to_properties()},
        "parameters": int(model.count_params()),
        "ops": dict(sorted(layers.items())),
    }


def _tensor(detail: dict) -> dict:
    scale, zero_point = detail["quantization"]
    entry = {
        "name": detail["name"],
        "shape": [int(d) for d in detail["shape"]],
        "dtype": np.dtype(detail["dtype"]).name,
    }
    if scale:
        entry["quantization"] = {"scale": float(scale), "zero_point": int(zero_point)}
    return entry


def inspect_tflite(path: Path) -> dict:
    from .runtime.tflite_runner import TFLiteRunner

    with TFLiteRunner(path) as runner:
        return _describe_tflite(path, runner)


def _describe_tflite(path: Path, runner) -> dict:
    from .tflite_metadata import constant_elements, read_metadata

    interpreter = runner.interpreter
    ops = Counter(op["op_name"] for op in interpreter._get_ops_details())
    parameters = constant_elements(path.read_bytes())
    meta = read_metadata(path)
    inputs = _tensor(runner.input)
    if meta and meta.normalization:
        inputs["preprocessing"] = {
            "normalization_mean": meta.normalization[0],
            "normalization_std": meta.normalization[1],
        }
    elif np.issubdtype(runner.input["dtype"], np.integer):
        inputs["preprocessing"] = "raw RGB bytes, quantized by the input's scale and zero point"
    report = {
        "format": "tflite",
        "inputs": [inputs],
        "outputs": [_tensor(runner.output)],
        "labels": list(runner.labels),
        "metadata": {}
        if meta is None
        else {
            "name": meta.name,
            "description": meta.description,
            "version": meta.version,
            "author": meta.author,
            "license": meta.license,
            **meta.properties,
        },
        "ops": dict(sorted(ops.items())),
    }
    if parameters:
        report["parameters"] = parameters
    return report


def inspect_coreml(path: Path) -> dict:
    from .runtime.coreml_spec import load_spec, op_counts

    spec = load_spec(path)
    description = spec.description
    kind = spec.WhichOneof("Type")
    inputs = []
    for feature in description.input:
        entry = {"name": feature.name, "type": feature.type.WhichOneof("Type")}
        if entry["type"] == "imageType":
            image = feature.type.imageType
            entry["shape"] = [image.height, image.width, 3]
            entry["color_space"] = {10: "GRAYSCALE", 20: "RGB", 30: "BGR"}.get(image.colorSpace)
        inputs.append(entry)
    outputs = [{"name": f.name, "type": f.type.WhichOneof("Type")} for f in description.output]
    from .runtime.coreml_spec import class_labels, image_preprocessing

    preprocessing = image_preprocessing(spec)
    for entry in inputs:
        if entry["name"] in preprocessing:
            entry["preprocessing"] = preprocessing[entry["name"]]
    metadata = {
        "author": description.metadata.author,
        "license": description.metadata.license,
        "short_description": description.metadata.shortDescription,
        "version": description.metadata.versionString,
        **dict(description.metadata.userDefined),
    }
    return {
        "format": "coreml-" + ("mlprogram" if kind == "mlProgram" else "neuralnetwork"),
        "spec_version": spec.specificationVersion,
        "model_type": kind,
        "inputs": inputs,
        "outputs": outputs,
        "labels": list(class_labels(spec)),
        "metadata": metadata,
        "parameters": _coreml_parameters(spec, path),
        "ops": op_counts(spec),
    }


def inspect_onnx(path: Path) -> dict:
    """An ONNX or ORT file from the toolkit's own reader (no onnx package needed);
    ONNX Runtime opens it too, so a file it cannot load is reported as such. A foreign
    ``.onnx`` (no toolkit contract) is described as the source model it imports as."""
    from .onnx_file import read_model_file
    from .runtime.onnx_runner import OnnxRunner, carries_contract

    if path.suffix.lower() == ".onnx" and not carries_contract(read_model_file(path)):
        return inspect_onnx_source(path)

    runner = OnnxRunner(path, num_threads=1)
    summary = runner.summary
    runner.close()
    image = summary.image_input.to_dict()
    image["preprocessing"] = (
        "raw RGB bytes (pixels / 255 inside the model)"
        if image["dtype"] == "uint8"
        else "float RGB in [0, 1] (pixels / 255)"
    )
    return {
        "format": summary.format,
        "ir_version": summary.ir_version,
        "opsets": summary.opsets,
        "producer": summary.producer,
        "inputs": [image],
        "outputs": [output.to_dict() for output in summary.outputs],
        "labels": list(runner.labels),
        "metadata": dict(summary.metadata),
        "parameters": summary.parameters,
        "ops": dict(sorted(summary.ops.items())),
    }


def inspect_onnx_source(path: Path, preprocessing=None) -> dict:
    """A foreign ONNX classifier as the toolkit imports it: the original's inputs and ops,
    the preprocessing declared for it (built into the import) and the import's measured
    difference from ONNX Runtime."""
    from .models import onnx_source

    source = onnx_source(path, preprocessing=preprocessing)
    imported = source.imported
    spec = imported.spec
    return {
        "format": "onnx (foreign: imported as a source model)",
        "inputs": [
            {
                "name": spec.name,
                "layout": spec.layout,
                "size": list(spec.size),
                "dtype": spec.dtype,
                "preprocessing": imported.preprocessing.describe(),
                "declared_by": imported.declared_by,
            }
        ],
        "outputs": [
            {"name": t.name, "shape": list(t.shape), "dtype": str(t.dtype)}
            for t in source.model.outputs
        ],
        "labels": list(source.labels),
        "metadata": {"sha256": source.sha256, **source.contract.to_properties()},
        "parameters": int(source.model.count_params()),
        "ops": dict(sorted(imported.ops.items())),
        "imported": {
            "preprocessing": imported.preprocessing.to_dict(),
            "max_abs_diff_vs_onnxruntime": imported.max_abs_diff,
            "check_images": imported.check_images,
            "keras_input": list(source.model.input.shape),
        },
    }


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


def _coreml_parameters(spec, path: Path) -> int:
    from .runtime.coreml_spec import model_body

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
        from .runtime.coreml_mil import load_program

        program = load_program(path, spec)
        return int(
            sum(
                np.size(value)
                for value in program.constants.values()
                if isinstance(value, np.ndarray) and value.size > 1
            )
        )
    return 0


def render(report: dict) -> str:
    lines = [f"{report['path']}  ({report['format']}, {report['size_bytes'] / 1e6:.2f} MB)"]
    for key in ("inputs", "outputs"):
        for tensor in report[key]:
            lines.append(f"  {key[:-1]:<7} {json.dumps(tensor)}")
    lines.append(f"  labels  {', '.join(report['labels'])}")
    if "parameters" in report:
        lines.append(f"  params  {report['parameters']:,}")
    for key, value in report.get("metadata", {}).items():
        lines.append(f"  meta    {key}: {value}")
    ops = ", ".join(f"{name} x{count}" for name, count in report["ops"].items())
    lines.append(f"  ops     {ops}")
    if "imported" in report:
        imported = report["imported"]
        lines.append(
            f"  import  max abs diff vs ONNX Runtime {imported['max_abs_diff_vs_onnxruntime']:.2e}"
            f" on {imported['check_images']} images; Keras input {imported['keras_input']}"
        )
    return "\n".join(lines)


def _dict_or_fail(value, where: str, model_json: Path) -> dict:
    if not isinstance(value, dict):
        raise ModelFileError(f"{model_json}: {where} is {type(value).__name__}, not an object")
    return value


def _list_or_fail(value, where: str, model_json: Path) -> list:
    if not isinstance(value, list):
        raise ModelFileError(f"{model_json}: {where} is {type(value).__name__}, not a list")
    return value


def _tfjs_weight_storage(document: dict, model_json: Path) -> tuple[dict, int]:
    """How the manifest stores the weights (dtype -> count) and how many shards it names."""
    storage: Counter = Counter()
    shards = 0
    manifest = _list_or_fail(document.get("weightsManifest", []), "weightsManifest", model_json)
    for group in manifest:
        group = _dict_or_fail(group, "a weightsManifest group", model_json)
        shards += len(_list_or_fail(group.get("paths", []), "a group's paths", model_json))
        for spec in _list_or_fail(group.get("weights", []), "a group's weights", model_json):
            spec = _dict_or_fail(spec, "a weight entry", model_json)
            quantization = spec.get("quantization") or {}
            quantization = _dict_or_fail(quantization, "a weight's quantization", model_json)
            storage[str(quantization.get("dtype", spec.get("dtype", "float32")))] += 1
    return dict(sorted(storage.items())), shards


def inspect_tfjs(path: Path) -> dict:
    """A TF.js layers or graph model from its model.json and shards alone (no TensorFlow,
    no Node). A model.json of the wrong shape is a ModelFileError naming what is wrong."""
    from .tfjs import GRAPH_MODEL, artifact_metadata, model_format, model_json_of, read_model

    model_json = model_json_of(path)
    document, weights = read_model(model_json)
    topology = _dict_or_fail(document["modelTopology"], "modelTopology", model_json)
    metadata = artifact_metadata(model_json)
    storage, shards = _tfjs_weight_storage(document, model_json)
    if model_format(document) == GRAPH_MODEL:
        return _inspect_tfjs_graph(path, document, weights, metadata, storage, shards)
    model_config = _dict_or_fail(
        topology.get("model_config", topology), "modelTopology's model_config", model_json
    )
    config = _dict_or_fail(model_config.get("config", {}), "the model's config", model_json)
    layers = _list_or_fail(config.get("layers", []), "the model's layers", model_json)
    layers = [_dict_or_fail(layer, "a layer", model_json) for layer in layers]
    height, width = metadata.input_size or (None, None)
    labels = metadata.labels
    if not labels and weights:  # a foreign model: name the classes as its runner will
        from .labels import default_labels

        kernel = None
        outputs = config.get("output_layers") or [[layers[-1].get("name") if layers else ""]]
        if isinstance(outputs, list) and outputs and isinstance(outputs[0], list) and outputs[0]:
            kernel = weights.get(f"{outputs[0][0]}/kernel")
        try:
            labels = default_labels(int(kernel.shape[-1]), model_json) if kernel else ()
        except (ModelFileError, IndexError):
            labels = ()
    return {
        "inputs": [
            {
                "name": "image",
                "shape": [None, height, width, 3],
                "dtype": "float32",
                "preprocessing": "float RGB in [0, 1] (pixels / 255)",
            }
        ],
        "outputs": [{"name": "probabilities", "shape": [None, len(labels) or None]}],
        "labels": list(labels),
        "metadata": metadata.properties,
        "parameters": int(sum(w.values.size for w in weights.values())),
        "ops": dict(sorted(Counter(str(layer.get("class_name")) for layer in layers).items())),
        "weight_storage": storage,
        "shards": shards,
        "converted_by": document.get("convertedBy"),
    }


def _inspect_tfjs_graph(
    path: Path, document: dict, weights: dict, metadata, storage: dict, shards: int
) -> dict:
    """``inspect_tfjs`` for a graph model: ops are its nodes' ops (Const: its weights)."""
    from .labels import default_labels
    from .tfjs import model_json_of

    model_json = model_json_of(path)
    nodes = document["modelTopology"].get("node") or []
    nodes = _list_or_fail(nodes, "modelTopology's node list", model_json)
    nodes = [_dict_or_fail(node, "a node", model_json) for node in nodes]
    ops = Counter(str(node.get("op")) for node in nodes)
    matrices = [w for w in weights.values() if w.values.ndim == 2]  # the last MatMul's kernel
    labels = metadata.labels
    if not labels and matrices:
        try:
            labels = default_labels(int(matrices[-1].shape[-1]), model_json)
        except ModelFileError:
            labels = ()
    height, width = metadata.input_size or (None, None)
    return {
        "kind": "graph model",
        "inputs": [
            {
                "name": "image",
                "shape": [None, height, width, 3],
                "dtype": "float32",
                "preprocessing": "float RGB in [0, 1] (pixels / 255)",
            }
        ],
        "outputs": [{"name": "probabilities", "shape": [None, len(labels) or None]}],
        "labels": list(labels),
        "metadata": metadata.properties,
        "parameters": int(sum(w.values.size for w in weights.values())),
        "ops": dict(sorted(ops.items())),
        "weight_storage": storage,
        "shards": shards,
        "converted_by": document.get("convertedBy"),
    }
