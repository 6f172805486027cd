"""Keras 3 -> TF.js layers model: model.json and binary weight shards.

tfjs-layers 4.22 loads Keras 2 style topologies, so the Keras 3 graph is
rewritten rather than copied (tensorflow/tfjs#8328): nested models are
flattened into one graph, ``inbound_nodes`` become Keras 2 lists, the input
layer gets ``batch_input_shape``, and initializers, regularizers and dtype
policies (which tfjs does not all know, and which do not matter once weights
are loaded) are written as ``Zeros``, null and ``"float32"``. Only layers that
both tfjs and this toolkit's importer run are written; any other fails before
a file is made.

Weights are stored as float32, float16, or uint8 with per-tensor affine
quantization (``{dtype, min, scale}``, decoded by tfjs as ``q * scale + min``),
the range nudged so that zero stays exact, as the TF.js converter does. With
uint8, vectors (biases and BatchNorm parameters: 3% of MobileNetV2's values,
0.2 MB) stay float32, which the per-entry manifest allows: quantized too, they
took a float-trained model's worst output error from 0.26 to 0.35. The
format details are shared with the importer in ``nsfw_mobile.tfjs``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import ConversionError, UnsupportedOpError
from ..labels import NSFWJS_LABELS
from ..metadata import TOOLKIT, provenance
from ..models import SourceModel
from ..tfjs import CONTRACT_KEY, SHARD_BYTES, SUPPORTED_LAYERS, WEIGHT_ALIASES, shard_name
from . import Artifact, check_quantization

KERAS2_VERSION = "2.15.0"
"""The Keras version the topology claims: the config dialect tfjs-layers reads."""

ZEROS = {"class_name": "Zeros", "config": {}}
# Options tfjs does not read: each must hold the value tfjs assumes, or the export is refused.
_ASSUMED = {
    "groups": 1,
    "negative_slope": 0.0,
    "threshold": 0.0,
    "keepdims": False,
    "renorm": False,
    "lora_rank": None,
    "quantization_config": None,
}
_DROPPED_KEYS = {
    "module", "registered_name", "build_config", "synchronized", "renorm_clipping",
    "renorm_momentum", "lora_alpha", "optional", *_ASSUMED,
}  # fmt: skip
WEB_SAMPLE_MODULE = "web_sample/nsfw-classifier.js"


def _plain(value):
    """JSON-ready: tuples become lists, recursively."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _layer_config(layer) -> dict:
    class_name = type(layer).__name__
    if class_name not in SUPPORTED_LAYERS or class_name == "InputLayer":
        raise UnsupportedOpError(
            f"layer {layer.name!r} is a {class_name}, which the TF.js export does not write "
            f"(supported: {', '.join(n for n in SUPPORTED_LAYERS if n != 'InputLayer')})"
        )
    config = layer.get_config()
    for key, assumed in _ASSUMED.items():
        if key in config and config[key] != assumed:
            raise UnsupportedOpError(
                f"layer {layer.name!r} ({class_name}) has {key}={config[key]!r}; "
                f"TF.js supports only {key}={assumed!r}"
            )
    written = {}
    for key, value in config.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "dtype":
            value = "float32"
        elif key.endswith("_initializer"):
            value = ZEROS
        elif key.endswith(("_regularizer", "_constraint")):
            value = None
        written[key] = _plain(value)
    return {"class_name": class_name, "config": written}


class _Graph:
    """A Keras 3 model flattened into one list of Keras 2 style layer entries."""

    def __init__(self, keras):
        self.keras = keras
        self.layers: list[dict] = []
        self.weights: list[tuple[str, np.ndarray]] = []
        self.names: set[str] = set()

    def add_model(self, model, input_refs: list) -> list:
        """Emit ``model``'s layers, its inputs bound to ``input_refs``; return its output refs."""
        functional = getattr(model, "_functional", None) or model  # Sequential wraps one
        refs = {id(tensor): ref for tensor, ref in zip(functional.inputs, input_refs, strict=True)}
        for depth in sorted(functional._nodes_by_depth, reverse=True):
            for node in functional._nodes_by_depth[depth]:
                operation = node.operation
                if isinstance(operation, self.keras.layers.InputLayer):
                    continue
                inbound = [refs[id(tensor)] for tensor in node.input_tensors]
                if isinstance(operation, self.keras.Model):
                    outputs = self.add_model(operation, inbound)
                else:
                    name = self.add_layer(operation, inbound)
                    outputs = [(name, 0, index) for index in range(len(node.outputs))]
                for tensor, ref in zip(node.outputs, outputs, strict=True):
                    refs[id(tensor)] = ref
        return [refs[id(tensor)] for tensor in functional.outputs]

    def _claim(self, name: str) -> None:
        if name in self.names:
            raise UnsupportedOpError(
                f"layer {name!r} is called more than once, or two nested models both have a "
                "layer of that name; TF.js export needs each layer once under a unique name"
            )
        self.names.add(name)

    def add_input(self, name: str, shape) -> tuple:
        self._claim(name)
        config = {"batch_input_shape": _plain(shape), "dtype": "float32", "sparse": False}
        self.layers.append(
            {
                "class_name": "InputLayer",
                "name": name,
                "config": {**config, "name": name},
                "inbound_nodes": [],
            }
        )
        return (name, 0, 0)

    def add_layer(self, layer, inbound: list) -> str:
        self._claim(layer.name)
        entry = _layer_config(layer)
        entry["name"] = layer.name
        entry["inbound_nodes"] = [[[name, node, index, {}] for name, node, index in inbound]]
        self.layers.append(entry)
        for variable in layer.weights:
            short = variable.path.split("/")[-1]
            if type(layer).__name__ == "DepthwiseConv2D":
                short = next((old for old, new in WEIGHT_ALIASES.items() if new == short), short)
            self.weights.append((f"{layer.name}/{short}", np.asarray(variable.numpy(), np.float32)))
        return layer.name


def keras_topology(model, *, input_name: str = "image") -> tuple[dict, list]:
    """The tfjs ``modelTopology`` of a single-input Keras model, and its weights in order."""
    from .._tf import import_keras

    keras = import_keras()
    if len(model.inputs) != 1:
        raise UnsupportedOpError(f"TF.js export takes one input, the model has {len(model.inputs)}")
    graph = _Graph(keras)
    input_ref = graph.add_input(input_name, tuple(model.inputs[0].shape))
    outputs = graph.add_model(model, [input_ref])
    topology = {
        "class_name": "Model",
        "config": {
            "name": model.name,
            "layers": graph.layers,
            "input_layers": [list(input_ref)],
            "output_layers": [list(ref) for ref in outputs],
        },
        "keras_version": KERAS2_VERSION,
        "backend": "tensorflow",
    }
    return topology, graph.weights


def quantize_uint8(values: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Per-tensor affine uint8 as the TF.js converter writes it: (codes, min, scale).

    The range is nudged so that 0 is a code exactly when it lies inside it; a
    constant tensor gets scale 1 and min equal to its value.
    """
    values = np.asarray(values, np.float64)
    if values.size == 0:
        return np.zeros(values.shape, np.uint8), 0.0, 1.0
    low, high = float(values.min()), float(values.max())
    if low == high:
        return np.zeros(values.shape, np.uint8), low, 1.0
    scale = (high - low) / 255.0
    if low <= 0.0 <= high:
        low = -round(-low / scale) * scale
    codes = np.clip(np.round((values - low) / scale), 0, 255).astype(np.uint8)
    return codes, low, scale


def encode_weights(weights, quantization: str) -> tuple[list[dict], bytes]:
    """Manifest entries and the concatenated little-endian bytes, in the same order."""
    specs, chunks = [], []
    for name, values in weights:
        spec = {"name": name, "shape": list(values.shape), "dtype": "float32"}
        if quantization == "none":
            data = values.astype("<f4")
        elif quantization == "float16":
            spec["quantization"] = {"dtype": "float16"}
            data = values.astype("<f2")
        elif values.ndim <= 1:
            data = values.astype("<f4")
        else:
            data, low, scale = quantize_uint8(values)
            spec["quantization"] = {"dtype": "uint8", "min": low, "scale": scale}
        specs.append(spec)
        chunks.append(data.tobytes())
    return specs, b"".join(chunks)


def nsfwjs_note(labels) -> str:
    """What the export says about loading it with NSFWJS."""
    if tuple(labels) == NSFWJS_LABELS:
        return "loads with nsfwjs.load(url): its five labels are the ones NSFWJS names"
    return (
        f"NSFWJS maps outputs to its fixed classes {', '.join(NSFWJS_LABELS)}; this model's "
        f"labels are {', '.join(labels)}: use {WEB_SAMPLE_MODULE}, which reads them from "
        "model.json"
    )


QUANTIZATIONS = ("none", "float16", "uint8")
"""What this converter implements (the registry's tfjs rows; a house test checks)."""


def keras2tfjs(source: SourceModel, out: str | Path, *, quantization: str = "none") -> Artifact:
    """Write ``source`` as a TF.js layers model folder at ``out`` (atomically)."""
    check_quantization("keras2tfjs", quantization, QUANTIZATIONS)
    started = time.perf_counter()
    topology, weights = keras_topology(source.model)
    specs, data = encode_weights(weights, quantization)
    count = max(1, -(-len(data) // SHARD_BYTES))
    paths = [shard_name(index, count) for index in range(count)]
    from .._tf import import_keras

    document = {
        "format": "layers-model",
        "generatedBy": f"keras v{import_keras().__version__}",
        "convertedBy": TOOLKIT,
        "modelTopology": topology,
        "weightsManifest": [{"paths": paths, "weights": specs}],
        "userDefinedMetadata": {
            CONTRACT_KEY: provenance(source, target="tfjs", quantization=quantization)
        },
    }
    out = Path(out)
    try:
        with atomic_path(out) as folder:
            folder.mkdir()
            for index, path in enumerate(paths):
                (folder / path).write_bytes(data[index * SHARD_BYTES : (index + 1) * SHARD_BYTES])
            (folder / "model.json").write_text(json.dumps(document))
    except OSError as exc:
        raise ConversionError(f"writing the TF.js model to {out} failed: {exc}") from exc
    artifact = Artifact(out, "tfjs", quantization, 0.0)
    artifact.notes.append(f"{len(specs)} weights in {count} shard(s); {nsfwjs_note(source.labels)}")
    return artifact.finish(started)
