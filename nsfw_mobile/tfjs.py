"""Import TF.js models (model.json + binary shards) as Keras 3 models.

Layers models are rebuilt here, layer by layer; graph models (frozen TensorFlow
graphs) in ``tfjs_graph``. Both read their weights through ``read_model``: the
manifest is checked against the shards before anything is trusted: shard
paths stay inside the model's folder, byte counts match, and every weight is
used exactly once with the shape its layer (or graph constant) expects.
Quantized weights are dequantized as tfjs does (``q * scale + min`` in double
precision, stored as float32; float16 widened exactly).
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import MissingFileError, ModelFileError, UnsupportedOpError
from .metadata import ArtifactMetadata

BYTES_PER_ELEMENT = {"float32": 4, "int32": 4, "uint16": 2, "float16": 2, "uint8": 1, "bool": 1}

# Keras 2 layer classes we map onto Keras 3, by name. Anything else is refused.
SUPPORTED_LAYERS = (
    "InputLayer Conv2D DepthwiseConv2D SeparableConv2D BatchNormalization ReLU Activation "
    "Add Multiply Concatenate ZeroPadding2D AveragePooling2D MaxPooling2D "
    "GlobalAveragePooling2D GlobalMaxPooling2D Flatten Dense Dropout Reshape Softmax Rescaling "
    "Cropping2D"
).split()

# Options that only matter for training from scratch; weights come from the shards.
_TRAINING_ONLY_SUFFIXES = ("_initializer", "_regularizer", "_constraint")
_IGNORED_KEYS = {"activity_regularizer", "dtype"}

# Keras 2 (and tfjs) name some weights differently from Keras 3: {tfjs name: Keras 3 name}.
WEIGHT_ALIASES = {"depthwise_kernel": "kernel"}

SHARD_BYTES = 4 * 1024 * 1024
"""The TF.js converter cuts the weight bytes into shards of this size."""


def shard_name(index: int, count: int) -> str:
    """The TF.js converter's name for shard ``index`` (from 0) of ``count``."""
    return f"group1-shard{index + 1}of{count}.bin"


@dataclass(frozen=True)
class _WeightSpec:
    name: str
    shape: tuple[int, ...]
    values: np.ndarray


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise MissingFileError(path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: not a JSON file ({exc})") from None
    except RecursionError:
        raise ModelFileError(f"{path}: JSON nested too deeply to read") from None


CONTRACT_KEY = "nsfw_mobile"
"""Where a TF.js model.json keeps the toolkit's contract: ``userDefinedMetadata[CONTRACT_KEY]``."""


def model_json_of(path: Path) -> Path:
    """A TF.js model's model.json, given the file or its folder."""
    return path / "model.json" if path.is_dir() else path


def input_shape_of(topology) -> list | None:
    """The batch input shape the topology's input layer (a graph's Placeholder) declares, if it
    is readable; a graph's unknown batch size (-1) reads as None."""
    try:
        if isinstance(topology, dict) and "node" in topology:
            node = next(n for n in topology["node"] if n.get("op") == "Placeholder")
            dims = [int(d.get("size", -1)) for d in node["attr"]["shape"]["shape"]["dim"]]
            return [None if d < 0 else d for d in dims]
        config = topology.get("model_config", topology)["config"]
        layers = config["layers"] if isinstance(config, dict) else config
        first = layers[0]["config"]
        return list(first.get("batch_input_shape") or first.get("batch_shape"))
    except (*MALFORMED, IndexError, StopIteration):
        return None


def read_contract_properties(model_json: str | Path) -> dict:
    """The contract entries a model.json carries in its userDefinedMetadata; empty if none."""
    return contract_properties(read_json(Path(model_json)))


def contract_properties(document) -> dict:
    """``read_contract_properties`` for a model.json already parsed."""
    user = document.get("userDefinedMetadata") if isinstance(document, dict) else None
    entries = user.get(CONTRACT_KEY) if isinstance(user, dict) else None
    return {str(k): str(v) for k, v in entries.items()} if isinstance(entries, dict) else {}


def _dequantize(raw: bytes, spec: dict, where: str) -> np.ndarray:
    dtype = spec.get("dtype", "float32")
    quantization = spec.get("quantization")
    storage = quantization["dtype"] if quantization else dtype
    if storage not in BYTES_PER_ELEMENT:
        raise ModelFileError(f"{where}: unsupported weight dtype {storage!r}")
    stored = np.frombuffer(raw, dtype=np.dtype(storage).newbyteorder("<"))
    if not quantization:
        return stored.astype(dtype)
    if storage == "float16":
        return stored.astype(np.float32)
    if "scale" not in quantization or "min" not in quantization:
        raise ModelFileError(f"{where}: {storage} quantization without scale and min")
    values = stored.astype(np.float64) * float(quantization["scale"]) + float(quantization["min"])
    if dtype == "int32":
        return np.round(values).astype(np.int32)
    return values.astype(np.float32)


LAYERS_MODEL, GRAPH_MODEL = "layers-model", "graph-model"
"""The two kinds of TF.js model, as model.json's ``format`` names them (absent: layers)."""


def model_format(document) -> str:
    """A parsed model.json's kind: ``LAYERS_MODEL`` or ``GRAPH_MODEL``."""
    if not isinstance(document, dict):
        return LAYERS_MODEL
    return document.get("format") or LAYERS_MODEL


def read_model(model_json: str | Path) -> tuple[dict, dict[str, _WeightSpec]]:
    """Read and check a TF.js model folder, layers or graph: returns (model.json, weights)."""
    model_json = Path(model_json)
    document = read_json(model_json)
    if not isinstance(document, dict) or not isinstance(document.get("modelTopology"), dict):
        raise ModelFileError(f"{model_json}: no modelTopology: not a TF.js model")
    kind = model_format(document)
    if kind not in (LAYERS_MODEL, GRAPH_MODEL):
        raise ModelFileError(
            f"{model_json}: format {kind!r}; expected {LAYERS_MODEL!r} or {GRAPH_MODEL!r}"
        )
    try:
        return document, _read_weight_groups(model_json, document)
    except MALFORMED as exc:
        raise ModelFileError(
            f"{model_json}: malformed weightsManifest ({type(exc).__name__}: {exc})"
        ) from None


def read_weights(model_json: str | Path) -> tuple[dict, dict[str, _WeightSpec]]:
    """``read_model`` for callers that want the topology: returns (topology, weights by name)."""
    document, weights = read_model(model_json)
    return document["modelTopology"], weights


MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError)
"""What a JSON document of the wrong shape raises when it is walked or built."""


def _read_weight_groups(model_json: Path, document: dict) -> dict[str, _WeightSpec]:
    folder = model_json.parent.resolve()
    weights: dict[str, _WeightSpec] = {}
    for group in document.get("weightsManifest", []):
        buffer = bytearray()
        for shard in group["paths"]:
            shard_path = (folder / shard).resolve()
            if not shard_path.is_relative_to(folder):
                raise ModelFileError(
                    f"{model_json}: shard path {shard!r} points outside the model's folder"
                )
            try:
                buffer += shard_path.read_bytes()
            except OSError as exc:
                raise ModelFileError(f"{shard_path}: cannot read shard ({exc.strerror})") from None
        offset = 0
        for spec in group["weights"]:
            name, shape = spec["name"], tuple(int(d) for d in spec["shape"])
            storage = (spec.get("quantization") or {}).get("dtype", spec.get("dtype", "float32"))
            size = int(np.prod(shape, dtype=np.int64)) * BYTES_PER_ELEMENT.get(storage, 4)
            if offset + size > len(buffer):
                raise ModelFileError(
                    f"{model_json}: shards {group['paths']} hold {len(buffer)} bytes but weight "
                    f"{name!r} needs bytes {offset}..{offset + size}: shard is short or truncated"
                )
            values = _dequantize(bytes(buffer[offset : offset + size]), spec, f"weight {name!r}")
            if name in weights:
                raise ModelFileError(f"{model_json}: weight {name!r} appears twice in the manifest")
            weights[name] = _WeightSpec(name, shape, values.reshape(shape))
            offset += size
        if offset != len(buffer):
            raise ModelFileError(
                f"{model_json}: shards {group['paths']} hold {len(buffer)} bytes, "
                f"the manifest describes {offset}: shard and manifest do not match"
            )
    return weights


def _layer_kwargs(layer_class, class_name: str, config: dict, layer_name: str) -> dict:
    accepted = set(inspect.signature(layer_class.__init__).parameters) | {"name", "trainable"}
    kwargs = {}
    for key, value in config.items():
        if key.endswith(_TRAINING_ONLY_SUFFIXES) or key in _IGNORED_KEYS:
            continue
        if key == "batch_input_shape":
            kwargs["batch_shape"] = tuple(value)
            continue
        if key not in accepted:
            raise UnsupportedOpError(
                f"layer {layer_name!r} ({class_name}) has option {key!r} that Keras 3 does not know"
            )
        if key == "axis" and isinstance(value, list) and len(value) == 1:
            value = value[0]
        kwargs[key] = value
    return kwargs


def _weight_elements(class_name: str, config: dict, in_channels: int) -> int:
    """How many weight values a layer of this config creates on an input of ``in_channels``."""

    def size(key, default=1) -> int:
        value = config.get(key, default)
        values = value if isinstance(value, list | tuple) else [value, value]
        return int(np.prod([max(1, int(v)) for v in values], dtype=object))

    area = size("kernel_size")
    multiplier = int(config.get("depth_multiplier", 1))
    if class_name == "Dense":
        return in_channels * int(config.get("units", 1)) + int(config.get("units", 1))
    if class_name == "Conv2D":
        return area * in_channels * int(config.get("filters", 1)) + int(config.get("filters", 1))
    if class_name == "DepthwiseConv2D":
        return area * in_channels * multiplier + in_channels * multiplier
    if class_name == "SeparableConv2D":
        filters = int(config.get("filters", 1))
        return area * in_channels * multiplier + in_channels * multiplier * filters + filters
    if class_name == "BatchNormalization":
        return 4 * in_channels
    return 0


SMALL_LAYER_ELEMENTS = 1 << 24
"""Layers up to 16 M weights (64 MB) are built and then checked weight by weight, which
names the mismatch; larger ones must fit in the manifest before they are built."""


def _check_layer_size(spec: dict, tensor, manifest_elements: int, source: Path) -> None:
    """Refuse a layer that would create more weights than the whole manifest holds, before
    Keras allocates them (a fuzzed config with 2e9 units asked TensorFlow for 25 GB;
    fuzz/targets.py: fuzz_tfjs)."""
    channels = tensor.shape[-1] if tensor.shape and tensor.shape[-1] is not None else 1
    wanted = _weight_elements(spec["class_name"], spec["config"], int(channels))
    if wanted > max(manifest_elements, SMALL_LAYER_ELEMENTS):
        raise ModelFileError(
            f"{source}: layer {spec.get('name') or spec['config'].get('name')!r} would create "
            f"{wanted:,} weights, more than the {manifest_elements:,} the weights manifest holds"
        )


def _build_layer(keras, spec: dict):
    class_name, config = spec["class_name"], dict(spec["config"])
    name = spec.get("name") or config.get("name")
    if class_name not in SUPPORTED_LAYERS:
        raise UnsupportedOpError(
            f"layer {name!r} is a {class_name}, which the TF.js importer does not support "
            f"(supported: {', '.join(SUPPORTED_LAYERS)})"
        )
    layer_class = getattr(keras.layers, class_name)
    return layer_class(**_layer_kwargs(layer_class, class_name, config, name))


def _model_layers(topology: dict) -> tuple[list[dict], list, list, str]:
    config = topology.get("model_config", topology)
    class_name = config.get("class_name")
    body = config.get("config", {})
    if class_name == "Sequential":
        layers = body["layers"] if isinstance(body, dict) else body
        return layers, [], [], body.get("name", "sequential") if isinstance(body, dict) else "model"
    if class_name in ("Model", "Functional"):
        return (
            body["layers"],
            body["input_layers"],
            body["output_layers"],
            body.get("name", "model"),
        )
    raise ModelFileError(f"model class {class_name!r} is neither Sequential nor Model")


def _assign_weights(model, weights: dict[str, _WeightSpec], source: Path) -> None:
    unused = set(weights)
    for layer in model.layers:
        for variable in layer.weights:
            short = variable.path.split("/")[-1]
            candidates = [f"{layer.name}/{short}"] + [
                f"{layer.name}/{old}" for old, new in WEIGHT_ALIASES.items() if new == short
            ]
            found = [c for c in candidates if c in weights]
            if not found:
                raise ModelFileError(
                    f"{source}: weight {candidates[0]!r} of layer {layer.name!r} is missing "
                    "from the weights manifest"
                )
            spec = weights[found[0]]
            if spec.shape != tuple(variable.shape):
                raise ModelFileError(
                    f"{source}: weight {spec.name!r} has shape {spec.shape}, "
                    f"layer {layer.name!r} expects {tuple(variable.shape)}"
                )
            variable.assign(spec.values)
            unused.discard(spec.name)
    if unused:
        raise ModelFileError(
            f"{source}: weights {sorted(unused)} in the manifest belong to no layer of the model"
        )


def tfjs2keras(model_json: str | Path, *, input_name: str = "image"):
    """Build a Keras 3 model from a TF.js model folder, layers or graph model.

    The model's (single) input is named ``input_name`` so that every export has
    an input called ``image``.
    """
    model_json = Path(model_json)
    document, weights = read_model(model_json)
    try:
        if model_format(document) == GRAPH_MODEL:
            from .tfjs_graph import graph2keras

            return graph2keras(document, weights, model_json, input_name=input_name)
        return _build_model(model_json, document["modelTopology"], weights, input_name)
    except (*MALFORMED, RecursionError) as exc:  # Keras's own errors on a bad config
        raise ModelFileError(
            f"{model_json}: the topology does not build a model ({type(exc).__name__}: {exc})"
        ) from None


def _build_model(model_json: Path, topology, weights: dict[str, _WeightSpec], input_name: str):
    from ._tf import import_keras

    keras = import_keras()

    specs, input_refs, output_refs, model_name = _model_layers(topology)
    budget = sum(int(np.prod(w.shape, dtype=np.int64)) for w in weights.values())
    if not specs:
        raise ModelFileError(f"{model_json}: the topology has no layers")

    if not input_refs:  # Sequential: chain the layers.
        first = dict(specs[0]["config"])
        shape = first.get("batch_input_shape")
        if shape is None:
            raise ModelFileError(f"{model_json}: first Sequential layer has no batch_input_shape")
        inputs = keras.Input(batch_shape=tuple(shape), name=input_name)
        tensor = inputs
        for spec in specs:
            if spec["class_name"] == "InputLayer":
                continue
            config = {k: v for k, v in spec["config"].items() if k != "batch_input_shape"}
            _check_layer_size(spec, tensor, budget, model_json)
            tensor = _build_layer(keras, {**spec, "config": config})(tensor)
        model = keras.Model(inputs, tensor, name=model_name)
        _assign_weights(model, weights, model_json)
        return model

    if len(input_refs) != 1:
        raise UnsupportedOpError(
            f"{model_json}: models with {len(input_refs)} inputs are not supported"
        )
    tensors: dict[str, object] = {}
    input_layer_name = input_refs[0][0]
    for spec in specs:
        name = spec["name"]
        if spec["class_name"] == "InputLayer":
            shape = spec["config"].get("batch_input_shape") or spec["config"].get("batch_shape")
            tensors[name] = keras.Input(
                batch_shape=tuple(shape),
                name=input_name if name == input_layer_name else name,
            )
            continue
        layer = _build_layer(keras, spec)
        nodes = spec.get("inbound_nodes") or []
        if len(nodes) != 1:
            raise UnsupportedOpError(
                f"layer {name!r} is called {len(nodes)} times; shared layers are not supported"
            )
        try:
            sources = [tensors[ref[0]] for ref in nodes[0]]
        except KeyError as exc:
            raise ModelFileError(
                f"{model_json}: layer {name!r} reads unknown layer {exc}"
            ) from None
        for source in sources:
            _check_layer_size(spec, source, budget, model_json)
        tensors[name] = layer(sources if len(sources) > 1 else sources[0])
    outputs = [tensors[ref[0]] for ref in output_refs]
    model = keras.Model(
        tensors[input_layer_name], outputs if len(outputs) > 1 else outputs[0], name=model_name
    )
    _assign_weights(model, weights, model_json)
    return model


def artifact_metadata(path: Path) -> ArtifactMetadata:
    """A TF.js model folder's contract, from ``userDefinedMetadata`` in its model.json."""
    model_json = model_json_of(Path(path))
    document = read_json(model_json)
    properties = contract_properties(document)
    try:
        labels = json.loads(properties.get("labels", "[]"))
    except (ValueError, RecursionError):
        labels = ()
    labels = tuple(labels) if isinstance(labels, list) else ()
    shape = (
        input_shape_of(document.get("modelTopology", {})) if isinstance(document, dict) else None
    )
    sized = shape is not None and len(shape) == 4 and all(isinstance(d, int) for d in shape[1:3])
    return ArtifactMetadata(
        labels=labels if all(isinstance(label, str) for label in labels) else (),
        input_size=(shape[1], shape[2]) if sized else None,
        info={"name": model_json.parent.name},
        properties=properties,
    )
