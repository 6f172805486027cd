"""Import TF.js *graph* models (a frozen TensorFlow graph as JSON) as Keras 3 models.

A graph model's ``modelTopology`` is a GraphDef: a list of nodes, each an op
with named inputs and attributes; its weights are the ``Const`` nodes, stored in
the shards like a layers model's (read and checked by ``tfjs.read_model``).
This module rebuilds the graph with standard Keras layers, so that every
converter (Core ML, TFLite, the TF.js layers writer) takes the result:

=============================  ===============================================
op                             Keras
=============================  ===============================================
Placeholder                    ``keras.Input`` (fixed height, width, channels)
Mul / Sub / AddV2 by a scalar  ``Rescaling`` (``x * scale + offset``; a Mul
                               followed by Sub or AddV2 becomes one layer)
AddV2, Mul of two tensors      ``Add``, ``Multiply``
_FusedConv2D                   ``Conv2D`` (+ ``ReLU(6)`` or ``ReLU``)
FusedDepthwiseConv2dNative     ``DepthwiseConv2D`` (+ ``ReLU(6)`` or ``ReLU``)
AvgPool                        ``AveragePooling2D``
Squeeze                        ``Flatten`` (down to one axis) or ``Reshape``
_FusedMatMul                   ``Dense`` (+ ``ReLU(6)`` or ``ReLU``)
Softmax                        ``Softmax``
Identity, Const                no layer
=============================  ===============================================

The fused ops may fuse only ``BiasAdd`` and then ``Relu6`` or ``Relu``. Every
node and its attributes (padding, strides, dilations, data format, fused ops,
transposes) are checked before a layer is built: any other op or setting is
refused by name. This is the op set of NSFWJS's MobileNetV2Mid (TensorFlow
2.2 through tfjs-converter 1.7), whose BatchNorm is already folded into biases.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ModelFileError, UnsupportedOpError

SUPPORTED_OPS = (
    "Placeholder Const Identity Mul Sub AddV2 Add _FusedConv2D FusedDepthwiseConv2dNative "
    "AvgPool Squeeze _FusedMatMul Softmax"
).split()
ACTIVATIONS = {"Relu6": 6.0, "Relu": None}
"""Activations a fused op may apply after its BiasAdd: ReLU's max_value."""
_NOISE = {"StatefulPartitionedCall", "PartitionedCall"}
"""Name scopes TensorFlow adds to every node of a saved function; left out of layer names."""


@dataclass
class _Node:
    name: str
    op: str
    inputs: list[str]
    attr: dict

    def fail(self, what: str) -> UnsupportedOpError:
        return UnsupportedOpError(f"graph node {self.name!r} ({self.op}) {what}")

    def string(self, key: str, default: str | None = None) -> str | None:
        value = self.attr.get(key)
        if value is None:
            return default
        return base64.b64decode(value["s"], validate=True).decode()

    def strings(self, key: str) -> list[str]:
        value = self.attr.get(key) or {}
        return [base64.b64decode(s, validate=True).decode() for s in value["list"].get("s", [])]

    def ints(self, key: str, default: list[int]) -> list[int]:
        value = self.attr.get(key)
        return default if value is None else [int(i) for i in value["list"].get("i", [])]

    def integer(self, key: str, default: int) -> int:
        value = self.attr.get(key)
        return default if value is None else int(value.get("i", default))

    def flag(self, key: str) -> bool:
        return bool((self.attr.get(key) or {}).get("b", False))


@dataclass
class _Tensor:
    """A Keras tensor, possibly with a scalar affine map ``x * scale + offset`` still to apply."""

    tensor: object
    scale: float = 1.0
    offset: float = 0.0
    name: str = ""
    _made: object = field(default=None, repr=False)

    def materialize(self, keras):
        if self.scale == 1.0 and self.offset == 0.0:
            return self.tensor
        if self._made is None:
            layer = keras.layers.Rescaling(self.scale, self.offset, name=self.name)
            self._made = layer(self.tensor)
        return self._made


class _Builder:
    """Walks the graph from its output and builds one Keras layer per op (see the module doc)."""

    def __init__(self, keras, nodes: dict[str, _Node], weights: dict, source: Path):
        self.keras, self.nodes, self.weights, self.source = keras, nodes, weights, source
        self.used_weights: set[str] = set()
        self.names: set[str] = set()

    # ------------------------------------------------------------------ helpers

    def layer_name(self, node: _Node) -> str:
        parts = [p for p in node.name.split("/") if p and p not in _NOISE][-4:]
        base = re.sub(r"[^A-Za-z0-9_]", "_", "_".join(parts)) or "node"
        name, count = base, 1
        while name in self.names:
            count += 1
            name = f"{base}_{count}"
        self.names.add(name)
        return name

    def constant(self, node: _Node, value, role: str, ndim: int | None = None) -> np.ndarray:
        if not isinstance(value, np.ndarray):
            raise node.fail(f"reads a computed tensor as its {role}; only constants are supported")
        if ndim is not None and value.ndim != ndim:
            raise ModelFileError(
                f"{self.source}: graph node {node.name!r} ({node.op}) has a {role} of shape "
                f"{value.shape}, expected {ndim} dimensions"
            )
        return value

    def tensor(self, node: _Node, value) -> object:
        if not isinstance(value, _Tensor):
            raise node.fail("reads a constant where it expects a computed tensor")
        return value.materialize(self.keras)

    def fused_activation(self, node: _Node) -> float | None | bool:
        """The activation after BiasAdd: ReLU's max_value, None for ReLU, False for none."""
        fused = node.strings("fused_ops")
        if node.integer("num_args", 1) != 1 or not fused or fused[0] != "BiasAdd":
            raise node.fail(f"fuses {fused}; only BiasAdd, then Relu6 or Relu, is supported")
        if len(fused) == 1:
            return False
        if len(fused) == 2 and fused[1] in ACTIVATIONS:
            return ACTIVATIONS[fused[1]]
        raise node.fail(f"fuses {fused}; only BiasAdd, then Relu6 or Relu, is supported")

    def activate(self, name: str, tensor, activation):
        if activation is False:
            return tensor
        name += "_relu" if activation is None else f"_relu{activation:g}"
        self.names.add(name)
        return self.keras.layers.ReLU(max_value=activation, name=name)(tensor)

    def window(self, node: _Node, key: str) -> tuple[int, int]:
        values = node.ints(key, [1, 1, 1, 1])
        if len(values) != 4 or values[0] != 1 or values[3] != 1 or min(values) < 1:
            raise node.fail(f"has {key} {values}; expected [1, height, width, 1] (NHWC)")
        return values[1], values[2]

    def padding(self, node: _Node) -> str:
        padding = node.string("padding", "VALID")
        if padding not in ("SAME", "VALID"):
            raise node.fail(f"has padding {padding!r}; only SAME and VALID are supported")
        if node.string("data_format", "NHWC") != "NHWC":
            raise node.fail(f"has data format {node.string('data_format')!r}; only NHWC")
        return padding.lower()

    def convolution_options(self, node: _Node) -> dict:
        strides, dilations = self.window(node, "strides"), self.window(node, "dilations")
        if max(strides) > 1 and max(dilations) > 1:
            raise node.fail("has both strides and dilations above 1, which Keras does not support")
        return {"strides": strides, "dilation_rate": dilations, "padding": self.padding(node)}

    def with_weights(self, layer, node: _Node, tensor, weights: list[np.ndarray]):
        output = layer(tensor)
        expected = [tuple(w.shape) for w in layer.get_weights()]
        given = [tuple(w.shape) for w in weights]
        if expected != given:
            raise ModelFileError(
                f"{self.source}: graph node {node.name!r} ({node.op}) has weights of shapes "
                f"{given}; its input of shape {tuple(tensor.shape)} needs {expected}"
            )
        layer.set_weights(weights)
        return output

    # ------------------------------------------------------------------ ops

    def build(self, node: _Node, args: list):
        op = node.op
        if op == "Const":
            return self.read_constant(node)
        if op == "Identity":
            self.arity(node, args, 1)
            return args[0]
        if op in ("Mul", "Sub", "AddV2", "Add"):
            self.arity(node, args, 2)
            return self.arithmetic(node, *args)
        if op in ("_FusedConv2D", "FusedDepthwiseConv2dNative"):
            self.arity(node, args, 3)
            return self.convolution(node, *args)
        if op == "_FusedMatMul":
            self.arity(node, args, 3)
            return self.matmul(node, *args)
        self.arity(node, args, 1)
        x = self.tensor(node, args[0])
        keras, name = self.keras, self.layer_name(node)
        if op == "AvgPool":
            pool, strides = self.window(node, "ksize"), self.window(node, "strides")
            layer = keras.layers.AveragePooling2D(pool, strides, self.padding(node), name=name)
            return _Tensor(layer(x))
        if op == "Squeeze":
            return _Tensor(self.squeeze(node, x, name))
        if op == "Softmax":
            return _Tensor(keras.layers.Softmax(axis=-1, name=name)(x))
        raise node.fail("is not supported")  # unreachable: ops are checked up front

    def arity(self, node: _Node, args: list, count: int) -> None:
        if len(args) != count:
            raise ModelFileError(
                f"{self.source}: graph node {node.name!r} ({node.op}) has {len(args)} inputs, "
                f"expected {count}"
            )

    def read_constant(self, node: _Node) -> np.ndarray:
        if node.name not in self.weights:
            raise ModelFileError(
                f"{self.source}: constant {node.name!r} has no entry in the weights manifest"
            )
        self.used_weights.add(node.name)
        return np.asarray(self.weights[node.name].values)

    def arithmetic(self, node: _Node, a, b):
        keras, op = self.keras, node.op
        if isinstance(a, _Tensor) and isinstance(b, _Tensor):
            if op == "Sub":
                raise node.fail("subtracts two computed tensors, which is not supported")
            layer = keras.layers.Multiply if op == "Mul" else keras.layers.Add
            tensors = [a.materialize(keras), b.materialize(keras)]
            return _Tensor(layer(name=self.layer_name(node))(tensors))
        if not isinstance(a, _Tensor) and not isinstance(b, _Tensor):
            raise node.fail("combines two constants; fold them before converting")
        constant = b if isinstance(a, _Tensor) else a
        if constant.size != 1 or constant.ndim > 1:
            raise node.fail(
                f"combines a tensor with a constant of shape {constant.shape}; "
                "only scalar constants are supported"
            )
        c = float(constant.reshape(-1)[0])
        x = a if isinstance(a, _Tensor) else b
        name = self.layer_name(node)
        if op == "Mul":  # x * c
            if x.offset == 0.0 and x.scale == 1.0:
                return _Tensor(x.tensor, c, 0.0, name)
            return _Tensor(x.materialize(keras), c, 0.0, name)
        # x * scale + offset, then +c, -c or c - (...): one layer while the offset is still 0
        # (the sums are the ones the two ops would compute); a new one after that.
        if op == "Sub" and x is b:  # c - x
            if x.offset == 0.0:
                return _Tensor(x.tensor, -x.scale, c, name)
            return _Tensor(x.materialize(keras), -1.0, c, name)
        sign = -1.0 if op == "Sub" else 1.0  # x - c, x + c
        if x.offset == 0.0:
            return _Tensor(x.tensor, x.scale, sign * c, name)
        return _Tensor(x.materialize(keras), 1.0, sign * c, name)

    def convolution(self, node: _Node, x, kernel, bias):
        tensor = self.tensor(node, x)
        kernel = self.constant(node, kernel, "filter", ndim=4)
        bias = self.constant(node, bias, "bias", ndim=1)
        activation = self.fused_activation(node)
        options = self.convolution_options(node)
        height, width, _, out = kernel.shape
        name = self.layer_name(node)
        if node.op == "_FusedConv2D":
            if node.ints("explicit_paddings", []):
                raise node.fail("has explicit paddings, which are not supported")
            layer = self.keras.layers.Conv2D(out, (height, width), name=name, **options)
        else:
            layer = self.keras.layers.DepthwiseConv2D(
                (height, width), depth_multiplier=out, name=name, **options
            )
        output = self.with_weights(layer, node, tensor, [kernel, bias])
        return _Tensor(self.activate(name, output, activation))

    def matmul(self, node: _Node, x, kernel, bias):
        tensor = self.tensor(node, x)
        kernel = self.constant(node, kernel, "weight matrix", ndim=2)
        bias = self.constant(node, bias, "bias", ndim=1)
        if node.flag("transpose_a"):
            raise node.fail("transposes its input, which is not supported")
        if node.flag("transpose_b"):
            kernel = kernel.T
        activation = self.fused_activation(node)
        if len(tensor.shape) != 2:
            raise node.fail(f"multiplies a tensor of shape {tuple(tensor.shape)}; expected 2-D")
        name = self.layer_name(node)
        layer = self.keras.layers.Dense(kernel.shape[1], name=name)
        output = self.with_weights(layer, node, tensor, [np.ascontiguousarray(kernel), bias])
        return _Tensor(self.activate(name, output, activation))

    def squeeze(self, node: _Node, x, name: str):
        shape = list(x.shape)
        axes = [a + len(shape) if a < 0 else a for a in node.ints("squeeze_dims", [])]
        axes = axes or [i for i, d in enumerate(shape) if d == 1]
        if any(not 0 < a < len(shape) or shape[a] != 1 for a in axes):
            raise ModelFileError(
                f"{self.source}: graph node {node.name!r} (Squeeze) squeezes axes {axes} of a "
                f"tensor of shape {tuple(shape)}"
            )
        kept = [d for i, d in enumerate(shape) if i not in axes]
        if len(kept) == 2:
            return self.keras.layers.Flatten(name=name)(x)
        return self.keras.layers.Reshape(tuple(kept[1:]), name=name)(x)


def _parse_nodes(topology, source: Path) -> dict[str, _Node]:
    nodes: dict[str, _Node] = {}
    for entry in topology.get("node") or []:
        name, op = entry["name"], entry["op"]
        if not isinstance(name, str) or not isinstance(op, str):
            raise ModelFileError(f"{source}: graph node {entry!r:.80} has no name or op")
        if name in nodes:
            raise ModelFileError(f"{source}: graph node {name!r} appears twice")
        inputs = []
        for reference in entry.get("input") or []:
            if reference.startswith("^"):  # a control dependency: no data flows
                continue
            producer, _, index = reference.partition(":")
            if index not in ("", "0"):
                raise UnsupportedOpError(
                    f"graph node {name!r} ({op}) reads output {index} of {producer!r}; "
                    "only single-output ops are supported"
                )
            inputs.append(producer)
        nodes[name] = _Node(name, op, inputs, dict(entry.get("attr") or {}))
    if not nodes:
        raise ModelFileError(f"{source}: the graph model has no nodes")
    unsupported = sorted({n.op for n in nodes.values()} - set(SUPPORTED_OPS))
    if unsupported:
        first = next(n for n in nodes.values() if n.op == unsupported[0])
        raise UnsupportedOpError(
            f"graph node {first.name!r} is a {first.op}"
            + (f" (also unsupported: {', '.join(unsupported[1:])})" if unsupported[1:] else "")
            + f", which the TF.js graph importer does not support (supported: "
            f"{', '.join(SUPPORTED_OPS)})"
        )
    for node in nodes.values():
        dtype = (node.attr.get("T") or node.attr.get("dtype") or {}).get("type", "DT_FLOAT")
        if dtype != "DT_FLOAT":
            raise UnsupportedOpError(
                f"graph node {node.name!r} ({node.op}) computes in {dtype}; only DT_FLOAT "
                "graphs are supported"
            )
        for producer in node.inputs:
            if producer not in nodes:
                raise ModelFileError(
                    f"{source}: graph node {node.name!r} reads unknown node {producer!r}"
                )
    return nodes


def _output_name(document: dict, nodes: dict[str, _Node], source: Path) -> str:
    signature = (document.get("userDefinedMetadata") or {}).get("signature") or {}
    outputs = [name.partition(":")[0] for name in (signature.get("outputs") or {})]
    if not outputs:
        consumed = {producer for node in nodes.values() for producer in node.inputs}
        outputs = [n.name for n in nodes.values() if n.name not in consumed and n.op != "Const"]
    if len(outputs) != 1:
        raise UnsupportedOpError(
            f"{source}: the graph has {len(outputs)} outputs ({', '.join(outputs[:5])}); "
            "only single-output models are supported"
        )
    if outputs[0] not in nodes:
        raise ModelFileError(f"{source}: the signature's output {outputs[0]!r} is not a node")
    return outputs[0]


def _evaluation_order(nodes: dict[str, _Node], output: str, source: Path) -> list[_Node]:
    """The nodes the output depends on, each after its inputs (iterative: graphs may be deep)."""
    order, state = [], {}
    stack = [(output, False)]
    while stack:
        name, expanded = stack.pop()
        if expanded:
            state[name] = "done"
            order.append(nodes[name])
            continue
        if state.get(name) == "done":
            continue
        if state.get(name) == "open":
            raise ModelFileError(f"{source}: the graph has a cycle through node {name!r}")
        state[name] = "open"
        stack.append((name, True))
        for producer in reversed(nodes[name].inputs):
            if state.get(producer) == "open":
                raise ModelFileError(f"{source}: the graph has a cycle through node {producer!r}")
            if state.get(producer) != "done":
                stack.append((producer, False))
    return order


def _input_shape(node: _Node, source: Path) -> tuple[int, ...]:
    dims = [int(d.get("size", -1)) for d in node.attr["shape"]["shape"].get("dim", [])]
    if len(dims) != 4 or dims[0] not in (-1, 1) or min(dims[1:]) < 1:
        raise ModelFileError(
            f"{source}: input {node.name!r} has shape {dims}; expected images "
            "[-1, height, width, channels] of a fixed size"
        )
    return tuple(dims[1:])


def graph2keras(document: dict, weights: dict, source: Path, *, input_name: str = "image"):
    """Build a Keras 3 model from a parsed graph model.json and its checked weights."""
    from ._tf import import_keras

    nodes = _parse_nodes(document["modelTopology"], source)
    placeholders = [n for n in nodes.values() if n.op == "Placeholder"]
    if len(placeholders) != 1:
        raise UnsupportedOpError(
            f"{source}: the graph has {len(placeholders)} inputs; only single-input models "
            "are supported"
        )
    shape = _input_shape(placeholders[0], source)
    order = _evaluation_order(nodes, _output_name(document, nodes, source), source)
    keras = import_keras()
    builder = _Builder(keras, nodes, weights, source)
    inputs = keras.Input(shape=shape, name=input_name)
    values: dict[str, object] = {}
    for node in order:
        if node.op == "Placeholder":
            values[node.name] = _Tensor(inputs)
            continue
        values[node.name] = builder.build(node, [values[p] for p in node.inputs])
    output = values[order[-1].name]
    if not isinstance(output, _Tensor):
        raise ModelFileError(f"{source}: the graph's output is a constant")
    unused = sorted(set(weights) - builder.used_weights)
    if unused:
        raise ModelFileError(
            f"{source}: weights {unused[:5]} in the manifest belong to no node the output uses"
        )
    name = re.sub(r"[^A-Za-z0-9_]", "_", source.parent.name) or "graph_model"
    return keras.Model(inputs, output.materialize(keras), name=name)
