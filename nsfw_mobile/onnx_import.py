"""ONNX -> Keras: the toolkit's own strict importer of ONNX image classifiers.

``onnx2keras(model, preprocessing)`` rebuilds an ONNX classifier as a Keras 3
model made only of built-in layers (no ``Lambda``), so that it saves, reloads
in safe mode and goes through every exporter of the registry unchanged. It is
strict: every node's op must be in :data:`SUPPORTED_OPS` and its attributes
among those the importer implements; anything else is refused before a
layer is built, naming the node, its op and the nearest supported
alternative.

Layouts. ONNX convolutions are NCHW; Keras's are NHWC. Every ONNX tensor is
tracked together with the permutation that maps it to its Keras tensor
(``keras = transpose(onnx, perm)``), so a ``Transpose`` costs nothing, a
tf2onnx export (NHWC input, then a transpose to NCHW) and a PyTorch export
(NCHW input) both come out as one NHWC Keras graph, and a tensor is permuted
for real (a ``Permute`` layer) only where an op needs the ONNX order, such
as a ``Flatten`` of a feature map larger than 1x1. Whether the input is
NCHW or NHWC is read from the graph (the first op that fixes it: a
convolution or pooling, or a transpose to NCHW), never guessed from its
shape. Weights are moved to Keras's layouts (Conv OIHW -> HWIO, depthwise
(C*k, 1, kh, kw) -> (kh, kw, C, k), Gemm with ``transB``); pads that are not
TF's ``same`` become ``ZeroPadding2D`` (convolutions, average pooling that
counts the pads) or edge replication (max pooling: ONNX pads with -inf, and a
window that holds a replicated edge holds the edge itself, so the maximum is
exact).

Preprocessing. The toolkit's contract stays the same for every artefact: RGB
pixels squashed to the model's input size, in [0, 1] for Keras. What the
source model expects on top of that (a scale, a per-channel mean and std, BGR
order, a centre crop from a larger squash) is a :class:`Preprocessing`,
declared at import (a Hugging Face ``preprocessor_config.json`` beside the
file, or ``--preprocess KEY=VALUE`` options; see :func:`declared_preprocessing`)
and built into the model as its first layers. ``source_feed`` applies the same
preprocessing in numpy, to run the original file in ONNX Runtime as the
reference (``OriginalOnnxRunner``).

Only the ``onnx`` package and numpy build the model (ONNX Runtime checks it).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ModelFileError, UnsupportedOpError, UsageError

# ------------------------------------------------------------------ the allowlist

SUPPORTED_OPS: dict[str, str] = {
    "Conv": "2-D, any stride, dilation and pads; grouped and depthwise (any multiplier)",
    "ConvTranspose": "2-D, group 1, no output_padding, pads within the kernel",
    "BatchNormalization": "inference form (one output)",
    "Relu": "",
    "Clip": "min 0 (ReLU6 and the like) or any finite min and max; attributes or inputs",
    "LeakyRelu": "",
    "Sigmoid": "",
    "HardSigmoid": "any alpha and beta",
    "HardSwish": "",
    "Mul": "two tensors (broadcast: SE blocks, SiLU), or a tensor and a scalar or "
    "per-channel constant",
    "Add": "as Mul",
    "Sub": "as Mul, either operand constant",
    "Div": "a tensor by a scalar or per-channel constant",
    "Cast": "to float32 (a float or uint8 input)",
    "MaxPool": "2-D, explicit or auto pads, ceil_mode, no dilation",
    "AveragePool": "2-D; pads that are TF 'same' or counted (count_include_pad=1)",
    "GlobalAveragePool": "",
    "ReduceMean": "over the spatial axes (axes as attribute or input)",
    "Flatten": "axis 1 (the ONNX element order, also from NCHW feature maps)",
    "Reshape": "to (batch, features), to (batch, C, 1, 1), or within the batch",
    "Transpose": "batch axis first",
    "Squeeze": "of 1x1 spatial axes",
    "Unsqueeze": "(batch, C) to (batch, C, 1, 1)",
    "Concat": "along any axis but the batch",
    "Pad": "constant 0 on the spatial axes (attribute or input pads)",
    "Gemm": "transA 0, any transB, alpha and beta, constant B and C",
    "MatMul": "a (batch, features) tensor by a constant matrix",
    "Softmax": "over the channels",
    "Identity": "",
    "Dropout": "inference (the mask output unused)",
    "Constant": "",
}
"""Every op the importer builds, with what it accepts; nothing else is imported."""

NEAREST: dict[str, str] = {
    "Shape": "Flatten: export with torch.flatten(x, 1) or a static Reshape, "
    "not x.view(x.size(0), -1)",
    "Gather": "Flatten (a shape computed at run time: export with static shapes)",
    "Relu6": "Clip",
    "Gelu": "Sigmoid with Mul (SiLU), or HardSwish",
    "Erf": "Sigmoid with Mul (SiLU)",
    "Tanh": "Sigmoid",
    "Elu": "LeakyRelu",
    "Selu": "LeakyRelu",
    "PRelu": "LeakyRelu (one slope)",
    "Swish": "Sigmoid with Mul (SiLU)",
    "GlobalMaxPool": "GlobalAveragePool",
    "ReduceMax": "ReduceMean",
    "ReduceSum": "ReduceMean",
    "InstanceNormalization": "BatchNormalization",
    "LayerNormalization": "BatchNormalization (CNN classifiers; transformers are out of scope)",
    "Resize": "a fixed input size (resize happens before the model)",
    "Upsample": "a fixed input size (resize happens before the model)",
    "LogSoftmax": "Softmax",
    "Slice": "Pad / a fixed input size",
    "Split": "Concat",
    "QuantizeLinear": "the float32 model: quantize with `convert --to onnx-int8` afterwards",
    "DequantizeLinear": "the float32 model: quantize with `convert --to onnx-int8` afterwards",
}

NCHW_TO_NHWC = (0, 2, 3, 1)
IMPORT_BOUND = 1e-4
"""Largest probability difference the imported model may show against ONNX Runtime on the
original file (float32, same pixels); a larger one is an import error, not a tolerance."""


class ImportFailed(UnsupportedOpError):
    """An ONNX node or attribute outside what the importer implements."""


def nearest(op: str) -> str:
    return NEAREST.get(op, "none close; the supported ops are " + ", ".join(SUPPORTED_OPS))


# ------------------------------------------------------------------ preprocessing


@dataclass(frozen=True)
class Preprocessing:
    """What the source model expects beyond RGB pixels squashed to its input size.

    The model's input is ``(pixel * scale - mean) / std`` per channel, channels
    in ``order``, after squashing the image to ``resize`` pixels and cropping
    its centre to the model's size (``crop``). ``mean`` and ``std`` are in the
    model's channel order. ``softmax``: the model outputs logits, append one.
    """

    scale: float = 1 / 255
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    order: str = "RGB"
    resize: tuple[int, int] | None = None
    """(height, width) the image is squashed to before the crop; None: no crop."""
    crop: tuple[int, int] | None = None
    """(height, width) of the centre crop: the ONNX model's own input size."""
    softmax: bool = False

    def __post_init__(self):
        if self.order not in ("RGB", "BGR"):
            raise UsageError(f"channel order {self.order!r}: choose RGB or BGR")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise UsageError("mean and std take three values, one per channel")
        if any(s == 0 or not math.isfinite(s) for s in self.std) or not math.isfinite(self.scale):
            raise UsageError("std must be finite and non-zero, scale finite")
        if (self.resize is None) != (self.crop is None):
            raise UsageError("a centre crop needs both sizes: resize=N and crop=M")
        if self.crop and (self.crop[0] > self.resize[0] or self.crop[1] > self.resize[1]):
            raise UsageError(f"crop {self.crop} is larger than the resize {self.resize}")

    @property
    def is_plain(self) -> bool:
        """Pixels / 255, RGB, no mean, std or crop: the toolkit's own contract."""
        return (
            math.isclose(self.scale * 255, 1.0, rel_tol=1e-6)
            and self.mean == (0.0, 0.0, 0.0)
            and self.std == (1.0, 1.0, 1.0)
            and self.order == "RGB"
            and self.crop is None
        )

    def describe(self) -> str:
        parts = [f"{self.order} pixels x {_short(self.scale)}"]
        if self.mean != (0.0, 0.0, 0.0):
            parts.append(f"minus mean [{', '.join(_short(m) for m in self.mean)}]")
        if self.std != (1.0, 1.0, 1.0):
            parts.append(f"divided by std [{', '.join(_short(s) for s in self.std)}]")
        if self.crop:
            parts.append(
                f"squashed to {self.resize[1]}x{self.resize[0]} then centre-cropped to "
                f"{self.crop[1]}x{self.crop[0]}"
            )
        if self.softmax:
            parts.append("softmax appended to its logits")
        return ", ".join(parts) + " (built into the model)"

    def to_dict(self) -> dict:
        return {
            "scale": self.scale,
            "mean": list(self.mean),
            "std": list(self.std),
            "order": self.order,
            "resize": list(self.resize) if self.resize else None,
            "crop": list(self.crop) if self.crop else None,
            "softmax": self.softmax,
        }


def _short(value: float) -> str:
    if math.isclose(value, 1 / 255, rel_tol=1e-6):
        return "1/255"
    return f"{value:.6g}"


OPTION_KEYS = ("scale", "mean", "std", "order", "resize", "crop", "softmax")
"""Keys of ``--preprocess KEY=VALUE``."""


def _size(value) -> tuple[int, int]:
    if isinstance(value, dict):
        if "height" in value and "width" in value:
            return int(value["height"]), int(value["width"])
        if "shortest_edge" in value:
            side = int(value["shortest_edge"])
            return side, side
        raise UsageError(f"size {value}: expected height and width, or shortest_edge")
    if isinstance(value, list | tuple):
        if len(value) != 2:
            raise UsageError(f"size {value}: give one side or height,width")
        return int(value[0]), int(value[1])
    text = str(value).lower().replace("x", ",")
    numbers = [int(float(v)) for v in text.split(",") if v.strip()]
    if len(numbers) == 1:
        return numbers[0], numbers[0]
    if len(numbers) == 2:
        return numbers[1], numbers[0]  # WIDTHxHEIGHT as the toolkit writes sizes
    raise UsageError(f"size {value!r}: give N or WIDTHxHEIGHT")


def _triple(value, key: str) -> tuple[float, float, float]:
    if isinstance(value, int | float):
        values = [float(value)] * 3
    elif isinstance(value, list | tuple):
        values = [float(v) for v in value]
    else:
        values = [float(eval_fraction(v)) for v in str(value).split(",") if v.strip()]
        values = values * 3 if len(values) == 1 else values
    if len(values) != 3:
        raise UsageError(f"{key}={value}: give one value or three (one per channel)")
    return tuple(values)


def eval_fraction(text: str) -> float:
    """'1/255' or '0.5' as a float (no eval)."""
    text = str(text).strip()
    try:
        if "/" in text:
            top, bottom = text.split("/", 1)
            return float(top) / float(bottom)
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"{text!r}: expected a number such as 0.5 or 1/255") from None


def _bool(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"{value!r}: expected true or false")


def parse_options(items) -> dict:
    """``--preprocess KEY=VALUE`` items as normalised preprocessing entries."""
    entries = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        key = key.strip().lower()
        if not sep or key not in OPTION_KEYS:
            raise UsageError(
                f"--preprocess {item!r}: expected KEY=VALUE with KEY one of "
                f"{', '.join(OPTION_KEYS)} (such as order=BGR or mean=104,117,123)"
            )
        entries[key] = _normalise(key, value)
    return entries


def _normalise(key: str, value):
    if key == "scale":
        return eval_fraction(value) if isinstance(value, str) else float(value)
    if key in ("mean", "std"):
        return _triple(value, key)
    if key == "order":
        order = str(value).upper()
        if order not in ("RGB", "BGR"):
            raise UsageError(f"order={value}: choose RGB or BGR")
        return order
    if key in ("resize", "crop"):
        return _size(value)
    return _bool(value)


def read_preprocessor_config(path: Path) -> dict:
    """A Hugging Face ``preprocessor_config.json`` as preprocessing entries.

    ``do_rescale``/``rescale_factor``, ``do_normalize``/``image_mean``/``image_std``,
    ``do_resize``/``size`` and ``do_center_crop``/``crop_size`` are read; the
    toolkit's own extension ``channel_order`` ("BGR") too. The resize is a squash
    (the toolkit's one resize rule); ``size`` as ``shortest_edge`` squashes to a square.
    """
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: not a readable JSON preprocessor config ({exc})") from None
    if not isinstance(document, dict):
        raise ModelFileError(f"{path}: expected a JSON object")
    entries: dict = {}
    try:
        if document.get("do_rescale", True) and "rescale_factor" in document:
            entries["scale"] = float(document["rescale_factor"])
        elif document.get("do_rescale") is False:
            entries["scale"] = 1.0
        if document.get("do_normalize", True) and "image_mean" in document:
            entries["mean"] = _triple(document["image_mean"], "image_mean")
            entries["std"] = _triple(document.get("image_std", 1.0), "image_std")
        if "channel_order" in document:
            entries["order"] = _normalise("order", document["channel_order"])
        if document.get("do_center_crop") and "crop_size" in document:
            entries["crop"] = _size(document["crop_size"])
            if document.get("do_resize", True) and "size" in document:
                entries["resize"] = _size(document["size"])
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: unreadable preprocessing entry ({exc})") from None
    return entries


def declared_preprocessing(
    model_path: Path, options: dict | None = None, *, default: dict | None = None
) -> tuple[Preprocessing | None, str]:
    """The preprocessing declared for an ONNX file, and where it was declared.

    From ``preprocessor_config.json`` beside the file and the ``--preprocess``
    options; an option that contradicts the file is an error (one of them is
    wrong, and guessing which would run the model on the wrong input).
    ``default`` (the toolkit's own contract in the file) fills in when neither
    says anything. None: nothing declared.
    """
    options = dict(options or {})
    config = Path(model_path).with_name("preprocessor_config.json")
    from_file = read_preprocessor_config(config) if config.is_file() else {}
    for key, value in options.items():
        if key in from_file and not _same(from_file[key], value):
            raise UsageError(
                f"--preprocess {key}={_plain(value)} contradicts {config} ({key} "
                f"{_plain(from_file[key])}): fix the file or drop the option"
            )
    merged = {**from_file, **options}
    sources = [s for s, d in ((str(config), from_file), ("--preprocess", options)) if d]
    if not merged:
        if default is None:
            return None, ""
        merged, sources = dict(default), ["the toolkit's contract in the file"]
    if "resize" in merged and "crop" not in merged:
        merged.pop("resize")  # a resize without crop is the toolkit's own squash
    return Preprocessing(**merged), " and ".join(sources)


def _same(a, b) -> bool:
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float | int) and isinstance(b, float | int):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)
    return a == b


def _plain(value) -> str:
    if isinstance(value, tuple | list):
        return ",".join(_short(v) if isinstance(v, float) else str(v) for v in value)
    return _short(value) if isinstance(value, float) else str(value)


# ------------------------------------------------------------------ reading the file


def load_onnx(path: str | Path):
    """The parsed ONNX model; a ModelFileError for what is not one."""
    import onnx

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
            from onnx.external_data_helper import load_external_data_for_model

            load_external_data_for_model(model, str(path.parent))
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelFileError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    if not model.graph.node:
        raise ModelFileError(f"{path}: not a readable ONNX model (no graph)")
    return model


def _check_file(path: Path) -> None:
    """The toolkit's reader first (``onnx_file``): size limits, IR and opset, external data
    inside the model's folder, one input and one output, before the onnx package parses it."""
    from .onnx_file import _external_problem, _version_problem, read_model_file

    summary = read_model_file(path)
    counts = None
    if len(summary.inputs) != 1:
        counts = f"{len(summary.inputs)} inputs; an image classifier takes one"
    elif len(summary.outputs) != 1:
        counts = f"{len(summary.outputs)} outputs; a classifier has one"
    for problem in (_version_problem(summary), _external_problem(path, summary), counts):
        if problem is not None:
            raise ModelFileError(f"{path}: {problem}")


def check_ops(model) -> None:
    """Refuse the first node whose op is not in the allowlist, before building anything."""
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise ImportFailed(
                f"node {node.name or node.output[0]!r}: op {node.domain}.{node.op_type} is "
                "outside the ONNX standard domain; export with standard ops only"
            )
        if node.op_type not in SUPPORTED_OPS:
            raise ImportFailed(
                f"node {node.name or node.output[0]!r}: op {node.op_type} is not supported by "
                f"the importer (nearest supported: {nearest(node.op_type)})"
            )
    if opsets.get("ai.onnx", 0) < 7:
        raise ImportFailed(f"opset {opsets.get('ai.onnx')}: the importer reads opset 7 and later")


def _graph_inputs(model) -> list:
    weights = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in weights]


def _dims(value_info) -> list:
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else None for d in shape.dim]


def input_layout(model) -> str:
    """ "NCHW" or "NHWC": what the graph does with its input, never its shape alone.

    Follows the input through element-wise ops (Cast, Mul, Add, ...) to the first
    op that fixes a layout: a Transpose to NCHW (an NHWC input), or a
    convolution, pooling, BatchNormalization or Pad (an NCHW input).
    """
    (image,) = _graph_inputs(model)
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    passing = {"Cast", "Mul", "Add", "Sub", "Div", "Identity", "Clip", "Relu"}
    fixing = {
        "Conv",
        "MaxPool",
        "AveragePool",
        "BatchNormalization",
        "GlobalAveragePool",
        "ConvTranspose",
    }
    frontier, seen, found = [image.name], set(), set()
    while frontier:
        name = frontier.pop()
        if name in seen:
            continue
        seen.add(name)
        for node in consumers.get(name, []):
            if node.op_type == "Transpose":
                perm = tuple(_attributes(node).get("perm", ()))
                found.add("NHWC" if perm == (0, 3, 1, 2) else f"transpose {list(perm)}")
            elif node.op_type in fixing:
                found.add("NCHW")
            elif node.op_type in passing:
                frontier.extend(node.output)
            else:
                found.add(f"{node.op_type}")
    layouts = found & {"NCHW", "NHWC"}
    if len(layouts) == 1 and len(found) == 1:
        return layouts.pop()
    raise ImportFailed(
        f"input {image.name!r}: the graph does not say whether it is NCHW or NHWC (its first "
        f"layout-fixing ops: {', '.join(sorted(found)) or 'none'}); expected a convolution or "
        "a transpose to NCHW after element-wise ops"
    )


def _attributes(node) -> dict:
    from onnx import helper

    values = {}
    for attribute in node.attribute:
        value = helper.get_attribute_value(attribute)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, list):
            value = [v.decode() if isinstance(v, bytes) else v for v in value]
        values[attribute.name] = value
    return values


@dataclass
class InputSpec:
    name: str
    layout: str
    size: tuple[int, int]
    """(height, width) of the ONNX input."""
    dtype: str
    channels_first: bool


def input_spec(model, preprocessing: Preprocessing | None = None) -> InputSpec:
    """The one image input: its layout, size (static or declared) and type."""
    inputs = _graph_inputs(model)
    if len(inputs) != 1:
        names = ", ".join(repr(i.name) for i in inputs)
        raise ModelFileError(
            f"the model has {len(inputs)} inputs ({names}); an image classifier takes one"
        )
    (image,) = inputs
    elem = image.type.tensor_type.elem_type
    dtype = {1: "float32", 2: "uint8"}.get(elem)
    if dtype is None:
        raise ModelFileError(
            f"input {image.name!r}: element type {elem}; expected float32 or uint8"
        )
    dims = _dims(image)
    if len(dims) != 4:
        raise ModelFileError(f"input {image.name!r} has {len(dims)} dimensions; expected 4")
    layout = input_layout(model)
    channel_axis, spatial = (1, (2, 3)) if layout == "NCHW" else (3, (1, 2))
    if dims[channel_axis] not in (3, None):
        raise ModelFileError(
            f"input {image.name!r} ({layout}) has {dims[channel_axis]} channels; expected 3"
        )
    size = tuple(dims[a] for a in spatial)
    declared = preprocessing.crop if preprocessing is not None else None
    if None in size:
        if declared is None:
            raise UsageError(
                f"input {image.name!r} has a dynamic spatial size {_shape_text(dims)}: declare "
                "the input size (--preprocess crop=N, or crop_size in preprocessor_config.json)"
            )
        size = declared
    elif declared is not None and tuple(declared) != size:
        raise UsageError(
            f"the declared crop {declared[1]}x{declared[0]} contradicts the model's input "
            f"{size[1]}x{size[0]}"
        )
    return InputSpec(image.name, layout, (int(size[0]), int(size[1])), dtype, layout == "NCHW")


def _shape_text(dims) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


# ------------------------------------------------------------------ values


@dataclass
class _Value:
    """An ONNX tensor as a Keras tensor: ``keras = transpose(onnx, perm)``.

    ``pooled``: the ONNX tensor is (N, C, 1, 1) and the Keras tensor (N, C).
    """

    tensor: object
    perm: tuple[int, ...]
    pooled: bool = False

    @property
    def rank(self) -> int:
        return 4 if self.pooled else len(self.perm)

    @property
    def onnx_shape(self) -> list:
        if self.pooled:
            return [None, int(self.tensor.shape[-1]), 1, 1]
        keras_shape = list(self.tensor.shape)
        shape = [None] * len(self.perm)
        for keras_axis, onnx_axis in enumerate(self.perm):
            shape[onnx_axis] = keras_shape[keras_axis]
        return shape


def _identity(rank: int) -> tuple[int, ...]:
    return tuple(range(rank))


class _Builder:
    def __init__(self, keras, model, spec: InputSpec):
        from onnx import numpy_helper

        self.keras = keras
        self.layers = keras.layers
        self.opset = next(
            (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13
        )
        self.constants: dict[str, np.ndarray] = {
            t.name: numpy_helper.to_array(t) for t in model.graph.initializer
        }
        self.values: dict[str, _Value] = {}
        self.spec = spec
        self.names: set[str] = set()
        self.consumers: dict[str, int] = {}
        self.consumer_nodes: dict[str, list] = {}
        for node in model.graph.node:
            for name in node.input:
                self.consumers[name] = self.consumers.get(name, 0) + 1
                self.consumer_nodes.setdefault(name, []).append(node)
        self.aliases: dict[str, str] = {}
        """Outputs of nodes folded into the layer before them -> that layer's output."""
        self.weights: list = []
        """(layer, weights) to set once the model is built."""
        self.node_outputs: list[tuple[str, str, str]] = []
        """(node name, op, ONNX output name) in graph order, for the layer-by-layer diagnosis."""

    # -- naming and weights

    def name(self, base: str) -> str:
        text = re.sub(r"[^A-Za-z0-9_.-]+", "_", base).strip("_") or "layer"
        candidate, index = text[:120], 1
        while candidate in self.names:
            index += 1
            candidate = f"{text[:110]}_{index}"
        self.names.add(candidate)
        return candidate

    def call(self, layer, inputs, weights=None):
        output = layer(inputs)
        if weights is not None:
            self.weights.append((layer, [np.asarray(w, np.float32) for w in weights]))
        return output

    # -- layouts

    def to_perm(self, value: _Value, perm: tuple[int, ...], where: str) -> _Value:
        """The same ONNX tensor with the Keras tensor in ``perm`` (a Permute if needed)."""
        if value.pooled:
            value = self.unpool(value, where)
        if value.perm == perm:
            return value
        if len(perm) != len(value.perm) or perm[0] != 0 or value.perm[0] != 0:
            raise ImportFailed(f"{where}: cannot move the batch axis")
        # keras_new = transpose(onnx, perm); onnx = transpose(keras_old, inverse(old))
        inverse_old = np.argsort(value.perm)
        dims = tuple(int(inverse_old[p]) for p in perm)  # keras_new = transpose(keras_old, dims)
        layer = self.layers.Permute(dims[1:], name=self.name(f"{where}_permute"))
        return _Value(self.call(layer, value.tensor), perm)

    def unpool(self, value: _Value, where: str) -> _Value:
        if not value.pooled:
            return value
        channels = int(value.tensor.shape[-1])
        layer = self.layers.Reshape((1, 1, channels), name=self.name(f"{where}_to_4d"))
        return _Value(self.call(layer, value.tensor), NCHW_TO_NHWC)

    def flat(self, value: _Value, where: str) -> _Value:
        """(N, features) in ONNX element order."""
        if value.pooled:
            return _Value(value.tensor, (0, 1))
        if value.rank == 2:
            return value
        shape = value.onnx_shape
        if value.rank == 4 and value.perm == NCHW_TO_NHWC and shape[2] == shape[3] == 1:
            layer = self.layers.Flatten(name=self.name(f"{where}_flatten"))
            return _Value(self.call(layer, value.tensor), (0, 1))
        value = self.to_perm(value, _identity(value.rank), where)
        layer = self.layers.Flatten(name=self.name(f"{where}_flatten"))
        return _Value(self.call(layer, value.tensor), (0, 1))

    def value(self, name: str, where: str) -> _Value:
        if name in self.constants:
            raise ImportFailed(f"{where}: a constant where the importer expects a tensor")
        if name not in self.values:
            raise ImportFailed(f"{where}: input {name!r} is not produced by any node")
        return self.values[name]

    def constant(self, name: str, where: str, what: str) -> np.ndarray:
        if name not in self.constants:
            raise ImportFailed(f"{where}: {what} must be a constant (an initializer)")
        return self.constants[name]

    def optional_constant(self, node, index: int, where: str, what: str):
        if len(node.input) > index and node.input[index]:
            return self.constant(node.input[index], where, what)
        return None

    # -- the graph

    def build(self, model, preprocessing: Preprocessing, name: str | None = None):
        keras, layers = self.keras, self.layers
        spec = self.spec
        outer = preprocessing.resize or spec.size
        inputs = keras.Input((outer[0], outer[1], 3), name="image")
        x = inputs
        if preprocessing.crop:
            (h, w), (ch, cw) = preprocessing.resize, preprocessing.crop
            top, left = (h - ch) // 2, (w - cw) // 2
            x = layers.Cropping2D(
                ((top, h - ch - top), (left, w - cw - left)), name="source_centre_crop"
            )(x)
        x = self._affine(x, preprocessing, spec)
        self.values[spec.name] = _Value(x, NCHW_TO_NHWC if spec.channels_first else (0, 1, 2, 3))
        for node in model.graph.node:
            where = f"node {node.name or node.output[0]!r} ({node.op_type})"
            if node.output[0] in self.aliases:
                self.values[node.output[0]] = self.values[self.aliases[node.output[0]]]
                self.node_outputs.append(
                    (node.name or node.output[0], node.op_type, node.output[0])
                )
                continue
            handler = getattr(self, f"op_{node.op_type}")
            outputs = handler(node, _attributes(node), where)
            if not isinstance(outputs, list):
                outputs = [outputs]
            for output, produced in zip(node.output, outputs, strict=False):
                if isinstance(produced, np.ndarray):
                    self.constants[output] = produced
                elif produced is not None:
                    self.values[output] = produced
                    self.node_outputs.append((node.name or output, node.op_type, output))
        (output,) = model.graph.output
        result = self.flat(self.value(output.name, f"output {output.name!r}"), "output")
        if preprocessing.softmax:
            result = _Value(
                layers.Softmax(name=self.name("appended_softmax"))(result.tensor), (0, 1)
            )
        built = keras.Model(
            inputs, result.tensor, name=name or self.name(model.graph.name or "imported")
        )
        for layer, weights in self.weights:
            layer.set_weights(weights)
        return built

    def _affine(self, x, preprocessing: Preprocessing, spec: InputSpec):
        """Keras input in [0, 1] RGB -> the ONNX input's values (in Keras's NHWC)."""
        gain = 255.0 * preprocessing.scale
        source = [2, 1, 0] if preprocessing.order == "BGR" else [0, 1, 2]
        weights = np.array([gain / s for s in preprocessing.std], np.float64)
        bias = np.array(
            [-m / s for m, s in zip(preprocessing.mean, preprocessing.std, strict=True)]
        )
        if source == [0, 1, 2] and np.allclose(weights, 1.0, rtol=1e-7) and not bias.any():
            return x
        if source == [0, 1, 2] and len(set(weights)) == 1 and len(set(bias)) == 1:
            layer = self.layers.Rescaling(float(weights[0]), float(bias[0]), name="source_scale")
            return layer(x)
        kernel = np.zeros((1, 1, 3, 3), np.float32)
        for out_channel, in_channel in enumerate(source):
            kernel[0, 0, in_channel, out_channel] = weights[out_channel]
        layer = self.layers.Conv2D(3, 1, name="source_preprocessing", trainable=False)
        return self.call(layer, x, [kernel, bias.astype(np.float32)])

    # -- ops: pass-through

    def op_Identity(self, node, attrs, where):
        if node.input[0] in self.constants:
            return self.constants[node.input[0]]
        return self.value(node.input[0], where)

    def op_Dropout(self, node, attrs, where):
        if len(node.output) > 1 and node.output[1] and self.consumers.get(node.output[1]):
            raise ImportFailed(f"{where}: its mask output is used")
        return [self.op_Identity(node, attrs, where), None]

    def op_Constant(self, node, attrs, where):
        from onnx import numpy_helper

        if "value" in attrs:
            return numpy_helper.to_array(attrs["value"])
        for key, kind in (
            ("value_float", np.float32),
            ("value_floats", np.float32),
            ("value_int", np.int64),
            ("value_ints", np.int64),
        ):
            if key in attrs:
                return np.array(attrs[key], kind)
        raise ImportFailed(f"{where}: a Constant of a kind the importer does not read")

    def op_Cast(self, node, attrs, where):
        if attrs.get("to") != 1:
            raise ImportFailed(f"{where}: a cast to type {attrs.get('to')}; only to float32")
        if node.input[0] in self.constants:
            return self.constants[node.input[0]].astype(np.float32)
        return self.value(node.input[0], where)

    # -- ops: convolutions

    def _padding(self, size, kernel, stride, dilation, pads, auto_pad, where, *, same_ok=True):
        """'same', 'valid' or explicit ((top, bottom), (left, right)) (``same_ok=False``:
        never 'same')."""
        effective = [(k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True)]
        same = []
        for n, k, s in zip(size, effective, stride, strict=True):
            total = max((math.ceil(n / s) - 1) * s + k - n, 0)
            same.append((total // 2, total - total // 2))
        if auto_pad == "SAME_UPPER":
            explicit = same
        elif auto_pad == "SAME_LOWER":
            explicit = [(b, a) for a, b in same]
        elif auto_pad == "VALID":
            return "valid"
        elif auto_pad not in ("NOTSET", "", None):
            raise ImportFailed(f"{where}: auto_pad {auto_pad}")
        else:
            pads = list(pads or [0, 0, 0, 0])
            explicit = [(pads[0], pads[2]), (pads[1], pads[3])]
        if all(p == (0, 0) for p in explicit):
            return "valid"
        if explicit == same and same_ok:
            return "same"
        return tuple(explicit)

    def _spatial(self, value: _Value):
        shape = value.onnx_shape
        return int(shape[2]), int(shape[3])

    def op_Conv(self, node, attrs, where):
        x = self.to_perm(self.value(node.input[0], where), NCHW_TO_NHWC, where)
        weight = self.constant(node.input[1], where, "the weight")
        bias = self.optional_constant(node, 2, where, "the bias")
        if weight.ndim != 4:
            raise ImportFailed(f"{where}: a {weight.ndim - 2}-D convolution; only 2-D")
        out_channels, per_group, kh, kw = weight.shape
        group = int(attrs.get("group", 1))
        in_channels = int(x.onnx_shape[1])
        if per_group * group != in_channels:
            raise ImportFailed(f"{where}: weight {list(weight.shape)} for {in_channels} channels")
        stride = tuple(attrs.get("strides", [1, 1]))
        dilation = tuple(attrs.get("dilations", [1, 1]))
        kernel_shape = tuple(attrs.get("kernel_shape", (kh, kw)))
        if kernel_shape != (kh, kw):
            raise ImportFailed(f"{where}: kernel_shape {kernel_shape} differs from the weight's")
        padding = self._padding(
            self._spatial(x),
            (kh, kw),
            stride,
            dilation,
            attrs.get("pads"),
            attrs.get("auto_pad", "NOTSET"),
            where,
        )
        tensor = self._pad(x.tensor, padding, where)
        mode = padding if isinstance(padding, str) else "valid"
        use_bias = bias is not None
        common = dict(strides=stride, dilation_rate=dilation, padding=mode, use_bias=use_bias)
        if group == 1:
            layer = self.layers.Conv2D(
                out_channels, (kh, kw), name=self.name(node.name or "conv"), **common
            )
            kernel = weight.transpose(2, 3, 1, 0)
        elif per_group == 1 and out_channels % group == 0:
            multiplier = out_channels // group
            if stride != (1, 1) and dilation != (1, 1):
                raise ImportFailed(f"{where}: a depthwise convolution with stride and dilation")
            layer = self.layers.DepthwiseConv2D(
                (kh, kw),
                depth_multiplier=multiplier,
                name=self.name(node.name or "depthwise"),
                **common,
            )
            kernel = weight.reshape(group, multiplier, kh, kw).transpose(2, 3, 0, 1)
        else:
            layer = self.layers.Conv2D(
                out_channels,
                (kh, kw),
                groups=group,
                name=self.name(node.name or "grouped_conv"),
                **common,
            )
            kernel = weight.transpose(2, 3, 1, 0)
        weights = [kernel] + ([bias] if use_bias else [])
        return _Value(self.call(layer, tensor, weights), NCHW_TO_NHWC)

    def op_ConvTranspose(self, node, attrs, where):
        x = self.to_perm(self.value(node.input[0], where), NCHW_TO_NHWC, where)
        weight = self.constant(node.input[1], where, "the weight")
        bias = self.optional_constant(node, 2, where, "the bias")
        if weight.ndim != 4 or int(attrs.get("group", 1)) != 1:
            raise ImportFailed(f"{where}: only 2-D ConvTranspose with group 1")
        if any(attrs.get("output_padding", [0, 0])) or "output_shape" in attrs:
            raise ImportFailed(f"{where}: output_padding / output_shape")
        if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", ""):
            raise ImportFailed(f"{where}: auto_pad {attrs['auto_pad']}")
        if tuple(attrs.get("dilations", [1, 1])) != (1, 1):
            raise ImportFailed(f"{where}: dilations")
        _, out_channels, kh, kw = weight.shape
        stride = tuple(attrs.get("strides", [1, 1]))
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        layer = self.layers.Conv2DTranspose(
            out_channels,
            (kh, kw),
            strides=stride,
            padding="valid",
            use_bias=bias is not None,
            name=self.name(node.name or "conv_transpose"),
        )
        weights = [weight.transpose(2, 3, 1, 0)] + ([bias] if bias is not None else [])
        tensor = self.call(layer, x.tensor, weights)
        if any(pads):
            tensor = self.layers.Cropping2D(
                ((pads[0], pads[2]), (pads[1], pads[3])), name=self.name(f"{layer.name}_crop")
            )(tensor)
        return _Value(tensor, NCHW_TO_NHWC)

    def _pad(self, tensor, padding, where):
        if isinstance(padding, str):
            return tensor
        return self.layers.ZeroPadding2D(padding, name=self.name(f"{where}_pad"))(tensor)

    def op_BatchNormalization(self, node, attrs, where):
        if len([o for o in node.output if o]) > 1 or attrs.get("training_mode", 0):
            raise ImportFailed(f"{where}: the training form (more than one output)")
        x = self.value(node.input[0], where)
        x = self.unpool(x, where) if x.pooled else x
        gamma, beta, mean, var = (
            self.constant(node.input[i], where, "its parameters") for i in range(1, 5)
        )
        layer = self.layers.BatchNormalization(
            axis=x.perm.index(1),
            epsilon=float(attrs.get("epsilon", 1e-5)),
            name=self.name(node.name or "batch_norm"),
        )
        return _Value(self.call(layer, x.tensor, [gamma, beta, mean, var]), x.perm)

    # -- ops: activations

    def _unary(self, node, where, layer):
        x = self.value(node.input[0], where)
        return dataclasses.replace(x, tensor=layer(x.tensor))

    def op_Relu(self, node, attrs, where):
        return self._unary(node, where, self.layers.ReLU(name=self.name(node.name or "relu")))

    def op_LeakyRelu(self, node, attrs, where):
        layer = self.layers.LeakyReLU(
            negative_slope=float(attrs.get("alpha", 0.01)),
            name=self.name(node.name or "leaky_relu"),
        )
        return self._unary(node, where, layer)

    def op_Sigmoid(self, node, attrs, where):
        layer = self.layers.Activation("sigmoid", name=self.name(node.name or "sigmoid"))
        return self._unary(node, where, layer)

    def op_Clip(self, node, attrs, where):
        if self.opset >= 11:
            low = self.optional_constant(node, 1, where, "min")
            high = self.optional_constant(node, 2, where, "max")
        else:
            low, high = attrs.get("min"), attrs.get("max")
        if low is None or high is None:
            raise ImportFailed(f"{where}: a Clip without both min and max")
        low, high = float(np.asarray(low).reshape(())), float(np.asarray(high).reshape(()))
        if not (math.isfinite(low) and math.isfinite(high)) or high < low:
            raise ImportFailed(f"{where}: Clip to [{low}, {high}]")
        base = self.name(node.name or "clip")
        x = self.value(node.input[0], where)
        if low == 0.0:
            return self._unary(node, where, self.layers.ReLU(max_value=high, name=base))
        tensor = self.layers.Rescaling(1.0, -low, name=self.name(f"{base}_shift"))(x.tensor)
        tensor = self.layers.ReLU(max_value=high - low, name=base)(tensor)
        tensor = self.layers.Rescaling(1.0, low, name=self.name(f"{base}_unshift"))(tensor)
        return dataclasses.replace(x, tensor=tensor)

    def _hard_sigmoid(self, tensor, alpha, beta, base):
        tensor = self.layers.Rescaling(alpha, beta, name=self.name(f"{base}_affine"))(tensor)
        return self.layers.ReLU(max_value=1.0, name=self.name(f"{base}_clip"))(tensor)

    def op_HardSigmoid(self, node, attrs, where):
        x = self.value(node.input[0], where)
        tensor = self._hard_sigmoid(
            x.tensor,
            float(attrs.get("alpha", 0.2)),
            float(attrs.get("beta", 0.5)),
            node.name or "hard_sigmoid",
        )
        return dataclasses.replace(x, tensor=tensor)

    def op_HardSwish(self, node, attrs, where):
        x = self.value(node.input[0], where)
        base = node.name or "hard_swish"
        gate = self._hard_sigmoid(x.tensor, 1 / 6, 0.5, base)
        tensor = self.layers.Multiply(name=self.name(base))([x.tensor, gate])
        return dataclasses.replace(x, tensor=tensor)

    def op_Softmax(self, node, attrs, where):
        x = self.value(node.input[0], where)
        rank = x.rank
        axis = int(attrs.get("axis", 1 if self.opset < 13 else -1)) % rank
        if self.opset < 13 and axis != rank - 1 and rank != 2:
            raise ImportFailed(f"{where}: an opset {self.opset} Softmax over more than one axis")
        if x.pooled:
            if axis != 1:
                raise ImportFailed(f"{where}: a softmax over a 1x1 spatial axis")
            keras_axis = -1
        else:
            keras_axis = x.perm.index(axis)
        layer = self.layers.Softmax(axis=keras_axis, name=self.name(node.name or "softmax"))
        return dataclasses.replace(x, tensor=layer(x.tensor))

    # -- ops: arithmetic

    def op_Add(self, node, attrs, where):
        return self._binary(node, where, "Add")

    def op_Sub(self, node, attrs, where):
        return self._binary(node, where, "Sub")

    def op_Mul(self, node, attrs, where):
        return self._binary(node, where, "Mul")

    def op_Div(self, node, attrs, where):
        return self._binary(node, where, "Div")

    def _binary(self, node, where, op):
        a, b = node.input[0], node.input[1]
        folds = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}
        if a in self.constants and b in self.constants:
            return folds[op](self.constants[a], self.constants[b])
        if a in self.constants or b in self.constants:
            constant_first = a in self.constants
            tensor = self.value(b if constant_first else a, where)
            constant = np.asarray(self.constants[a if constant_first else b], np.float64)
            return self._with_constant(node, where, op, tensor, constant, constant_first)
        x, y = self.value(a, where), self.value(b, where)
        base = self.name(node.name or op.lower())
        if x.pooled != y.pooled:
            x, y = self.unpool(x, where), self.unpool(y, where)
        if not x.pooled and x.perm != y.perm:
            if x.rank != y.rank:
                raise ImportFailed(f"{where}: operands of rank {x.rank} and {y.rank}")
            y = self.to_perm(y, x.perm, where)
        if op == "Mul":
            tensor = self.layers.Multiply(name=base)([x.tensor, y.tensor])
        elif op == "Add":
            tensor = self.layers.Add(name=base)([x.tensor, y.tensor])
        elif op == "Sub":
            negative = self.layers.Rescaling(-1.0, name=self.name(f"{base}_negate"))(y.tensor)
            tensor = self.layers.Add(name=base)([x.tensor, negative])
        else:
            raise ImportFailed(f"{where}: a division by a tensor (only by constants)")
        return _Value(tensor, x.perm, x.pooled)

    def _with_constant(self, node, where, op, x: _Value, constant, constant_first):
        base = self.name(node.name or op.lower())
        shape = x.onnx_shape
        if constant.ndim > len(shape):
            raise ImportFailed(
                f"{where}: a constant of rank {constant.ndim} for a rank {len(shape)} tensor"
            )
        full = constant.reshape((1,) * (len(shape) - constant.ndim) + constant.shape)
        varying = [axis for axis in range(len(shape)) if full.shape[axis] != 1]
        channel_axis = varying[0] if len(varying) == 1 and varying[0] > 0 else None
        if full.size == 1:
            value = float(full.reshape(()))
            per_channel = None
        elif channel_axis is not None and full.shape[channel_axis] == shape[channel_axis]:
            per_channel = full.reshape(-1)
            value = None
        else:
            raise ImportFailed(
                f"{where}: a constant of shape {list(constant.shape)} that is neither a scalar "
                f"nor per channel of a tensor {_shape_text(shape)}"
            )
        if op == "Div" and constant_first:
            raise ImportFailed(f"{where}: a constant divided by a tensor (Reciprocal)")
        # y = x * weight + bias
        if op == "Mul":
            weight, bias = (value if value is not None else per_channel), 0.0
        elif op == "Div":
            weight, bias = 1.0 / (value if value is not None else per_channel), 0.0
        elif op == "Add":
            weight, bias = 1.0, (value if value is not None else per_channel)
        else:  # Sub
            c = value if value is not None else per_channel
            weight, bias = (-1.0, c) if constant_first else (1.0, -c)
        if per_channel is None:
            layer = self.layers.Rescaling(float(weight), float(bias), name=base)
            return dataclasses.replace(x, tensor=layer(x.tensor))
        channels = per_channel.size
        weight = np.broadcast_to(np.asarray(weight, np.float64), (channels,))
        bias = np.broadcast_to(np.asarray(bias, np.float64), (channels,))
        if x.rank == 2 or x.pooled:
            tensor = self.layers.Reshape((1, 1, channels), name=self.name(f"{base}_to_4d"))(
                x.tensor
            )
            tensor = self._channelwise(tensor, weight, bias, base)
            tensor = self.layers.Reshape((channels,), name=self.name(f"{base}_to_2d"))(tensor)
            return _Value(tensor, (0, 1), x.pooled)
        if x.rank != 4:
            raise ImportFailed(f"{where}: a per-channel constant on a rank {x.rank} tensor")
        if x.perm.index(channel_axis) != 3:
            others = [axis for axis in (1, 2, 3) if axis != channel_axis]
            x = self.to_perm(x, (0, *others, channel_axis), where)
        return _Value(self._channelwise(x.tensor, weight, bias, base), x.perm)

    def _channelwise(self, tensor, weight, bias, base):
        """x * weight + bias per channel, exactly: a 1x1 depthwise convolution."""
        use_bias = bool(np.any(bias))
        layer = self.layers.DepthwiseConv2D(1, use_bias=use_bias, name=base)
        kernel = np.asarray(weight, np.float32).reshape(1, 1, -1, 1)
        return self.call(layer, tensor, [kernel] + ([bias] if use_bias else []))

    # -- ops: pooling

    def _pool_geometry(self, x: _Value, attrs, where, op="MaxPool"):
        kernel = tuple(attrs.get("kernel_shape", ()))
        if len(kernel) != 2:
            raise ImportFailed(f"{where}: a {len(kernel)}-D pooling; only 2-D")
        stride = tuple(attrs.get("strides", [1, 1]))
        if tuple(attrs.get("dilations", [1, 1])) != (1, 1):
            raise ImportFailed(f"{where}: a dilated pooling")
        size = self._spatial(x)
        padding = self._padding(
            size,
            kernel,
            stride,
            (1, 1),
            attrs.get("pads"),
            attrs.get("auto_pad", "NOTSET"),
            where,
            same_ok=not (op == "AveragePool" and attrs.get("count_include_pad", 0)),
        )
        if attrs.get("ceil_mode", 0):
            explicit = padding if isinstance(padding, tuple) else None
            if padding == "same":
                explicit = None
            pads = explicit or ((0, 0), (0, 0))
            extra = []
            for n, k, s, (b, e) in zip(size, kernel, stride, pads, strict=True):
                floor_out = (n + b + e - k) // s + 1
                ceil_out = math.ceil((n + b + e - k) / s) + 1
                if (ceil_out - 1) * s >= n + b:  # ONNX drops a window that starts in the pad
                    ceil_out -= 1
                extra.append((ceil_out - floor_out) * s)
            if any(extra):
                if padding == "same":
                    raise ImportFailed(f"{where}: ceil_mode with auto pads")
                padding = tuple((b, e + x_) for (b, e), x_ in zip(pads, extra, strict=True))
        return kernel, stride, padding

    def op_MaxPool(self, node, attrs, where):
        if len([o for o in node.output if o]) > 1:
            raise ImportFailed(f"{where}: the Indices output")
        x = self.to_perm(self.value(node.input[0], where), NCHW_TO_NHWC, where)
        kernel, stride, padding = self._pool_geometry(x, attrs, where)
        base = self.name(node.name or "max_pool")
        tensor = x.tensor
        if isinstance(padding, tuple):
            if any(p >= k for pair, k in zip(padding, kernel, strict=True) for p in pair):
                raise ImportFailed(f"{where}: pads {padding} as large as the kernel {kernel}")
            tensor = self._replicate_pad(tensor, padding, base)
        layer = self.layers.MaxPooling2D(
            kernel, stride, padding=padding if isinstance(padding, str) else "valid", name=base
        )
        return _Value(layer(tensor), NCHW_TO_NHWC)

    def _replicate_pad(self, tensor, padding, base):
        """Edge replication (exact for a max pool whose pads are smaller than its kernel)."""
        for axis, (before, after) in ((1, padding[0]), (2, padding[1])):
            if not before and not after:
                continue
            side = int(tensor.shape[axis])
            parts = []
            crop_first = ((0, side - 1), (0, 0)) if axis == 1 else ((0, 0), (0, side - 1))
            crop_last = ((side - 1, 0), (0, 0)) if axis == 1 else ((0, 0), (side - 1, 0))
            if before:
                edge = self.layers.Cropping2D(crop_first, name=self.name(f"{base}_edge"))(tensor)
                parts += [edge] * before
            parts.append(tensor)
            if after:
                edge = self.layers.Cropping2D(crop_last, name=self.name(f"{base}_edge"))(tensor)
                parts += [edge] * after
            tensor = self.layers.Concatenate(axis=axis, name=self.name(f"{base}_replicate"))(parts)
        return tensor

    def op_AveragePool(self, node, attrs, where):
        x = self.to_perm(self.value(node.input[0], where), NCHW_TO_NHWC, where)
        kernel, stride, padding = self._pool_geometry(x, attrs, where, "AveragePool")
        base = self.name(node.name or "average_pool")
        tensor = x.tensor
        if isinstance(padding, tuple):
            if not attrs.get("count_include_pad", 0):
                raise ImportFailed(
                    f"{where}: pads {padding} that are not TF 'same' without count_include_pad"
                )
            tensor = self._pad(tensor, padding, where)
            padding = "valid"
        layer = self.layers.AveragePooling2D(kernel, stride, padding=padding, name=base)
        return _Value(layer(tensor), NCHW_TO_NHWC)

    def op_GlobalAveragePool(self, node, attrs, where):
        x = self.to_perm(self.value(node.input[0], where), NCHW_TO_NHWC, where)
        layer = self.layers.GlobalAveragePooling2D(name=self.name(node.name or "global_pool"))
        return _Value(layer(x.tensor), (0, 1), pooled=True)

    def op_ReduceMean(self, node, attrs, where):
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self.constant(node.input[1], where, "axes").tolist()
        x = self.value(node.input[0], where)
        if axes is None or x.rank != 4 or sorted(a % 4 for a in axes) not in ([2, 3], [1, 2]):
            raise ImportFailed(f"{where}: a mean over axes {axes}; only over the spatial axes")
        spatial = sorted(a % 4 for a in axes)
        channel = ({0, 1, 2, 3} - set(spatial) - {0}).pop()
        x = self._channels_last(x, spatial, channel, where)
        layer = self.layers.GlobalAveragePooling2D(name=self.name(node.name or "reduce_mean"))
        tensor = layer(x.tensor)
        if attrs.get("keepdims", 1):
            if channel != 1:
                tensor = self.layers.Reshape(
                    (1, 1, int(tensor.shape[-1])), name=self.name(f"{layer.name}_keep")
                )(tensor)
                return _Value(tensor, (0, 1, 2, 3))
            return _Value(tensor, (0, 1), pooled=True)
        return _Value(tensor, (0, 1))

    def _channels_last(self, x: _Value, spatial, channel, where) -> _Value:
        """Keras (N, H, W, C) for ONNX spatial axes ``spatial`` and channel axis ``channel``."""
        perm = (0, spatial[0], spatial[1], channel)
        return self.to_perm(x, perm, where)

    # -- ops: shapes

    def op_Flatten(self, node, attrs, where):
        if int(attrs.get("axis", 1)) != 1:
            raise ImportFailed(f"{where}: Flatten axis {attrs.get('axis')}; only axis 1")
        return self.flat(self.value(node.input[0], where), node.name or "flatten")

    def op_Reshape(self, node, attrs, where):
        if node.input[0] in self.constants:
            shape = self.constant(node.input[1], where, "the shape")
            return self.constants[node.input[0]].reshape(shape)
        x = self.value(node.input[0], where)
        target = [int(v) for v in self.constant(node.input[1], where, "the shape")]
        if attrs.get("allowzero", 0) and 0 in target:
            raise ImportFailed(f"{where}: allowzero with a zero in the shape")
        shape = x.onnx_shape
        features = int(np.prod([d for d in shape[1:]]))
        if (
            len(target) == 2
            and target[1] in (features, -1)
            and target[0] in (-1, 0, 1)
            or (len(target) == 2 and target[0] == -1 and target[1] == features)
        ):
            return self.flat(x, node.name or "reshape")
        if (
            len(target) == 4
            and target[1] * target[2] * target[3] == features
            and target[2:] == [1, 1]
            and (x.rank == 2 or x.pooled)
        ):
            return _Value(x.tensor, (0, 1), pooled=True)
        if len(target) == 4 and target[1:] == [d for d in shape[1:]]:
            return x
        rest = [features // max(1, -int(np.prod(target[1:]))) if v == -1 else v for v in target[1:]]
        if target[0] not in (-1, 0) and not (len(target) and target[0] == 1):
            raise ImportFailed(f"{where}: a reshape across the batch axis to {target}")
        if sum(d != 1 for d in shape[1:]) <= 1 and sum(d != 1 for d in rest) <= 1:
            # A vector relabelled (tf2onnx writes NCHW (N, C, 1, 1) -> (N, 1, 1, C) so): the
            # Keras tensor may already have the target's shape, and then nothing moves.
            keras_shape = [int(d) for d in x.tensor.shape[1:]]
            if x.pooled and len(rest) == 3:
                layer = self.layers.Reshape(tuple(rest), name=self.name(node.name or "reshape"))
                return _Value(layer(x.tensor), _identity(4))
            if keras_shape == rest:
                return _Value(x.tensor, _identity(len(target)))
        x = self.to_perm(x, _identity(x.rank), where) if not x.pooled else self.flat(x, where)
        layer = self.layers.Reshape(tuple(rest), name=self.name(node.name or "reshape"))
        return _Value(layer(x.tensor), _identity(len(target)))

    def op_Transpose(self, node, attrs, where):
        if node.input[0] in self.constants:
            return np.transpose(self.constants[node.input[0]], attrs.get("perm"))
        x = self.value(node.input[0], where)
        x = self.unpool(x, where) if x.pooled else x
        perm = tuple(attrs.get("perm", tuple(reversed(range(x.rank)))))
        if perm[0] != 0:
            raise ImportFailed(f"{where}: perm {list(perm)} moves the batch axis")
        inverse = np.argsort(perm)
        new = tuple(int(inverse[p]) for p in x.perm)
        return _Value(x.tensor, new)

    def _axes(self, node, attrs, where):
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self.constant(node.input[1], where, "axes").tolist()
        return axes

    def op_Squeeze(self, node, attrs, where):
        x = self.value(node.input[0], where)
        axes = self._axes(node, attrs, where)
        if x.rank == 4 and (axes is None or sorted(a % 4 for a in axes) == [2, 3]):
            shape = x.onnx_shape
            if x.pooled or shape[2] == shape[3] == 1:
                return self.flat(x, node.name or "squeeze")
        raise ImportFailed(f"{where}: a squeeze of axes {axes}; only of 1x1 spatial axes")

    def op_Unsqueeze(self, node, attrs, where):
        x = self.value(node.input[0], where)
        axes = self._axes(node, attrs, where)
        if x.rank == 2 and axes is not None and sorted(a % 4 for a in axes) == [2, 3]:
            return _Value(x.tensor, (0, 1), pooled=True)
        raise ImportFailed(f"{where}: an unsqueeze of axes {axes}; only (N, C) to (N, C, 1, 1)")

    def op_Concat(self, node, attrs, where):
        values = [self.value(name, where) for name in node.input if name]
        if any(name in self.constants for name in node.input):
            raise ImportFailed(f"{where}: a constant among the concatenated tensors")
        first = values[0]
        rank = first.rank
        axis = int(attrs.get("axis", 1)) % rank
        if axis == 0:
            raise ImportFailed(f"{where}: a concatenation along the batch axis")
        if first.pooled:
            values = [self.unpool(v, where) for v in values]
            first = values[0]
        values = [self.to_perm(v, first.perm, where) for v in values]
        layer = self.layers.Concatenate(
            axis=first.perm.index(axis), name=self.name(node.name or "concat")
        )
        return _Value(layer([v.tensor for v in values]), first.perm)

    def op_Pad(self, node, attrs, where):
        mode = attrs.get("mode", "constant")
        if mode != "constant":
            raise ImportFailed(f"{where}: mode {mode}; only constant (zero) padding")
        if self.opset >= 11:
            pads = self.constant(node.input[1], where, "pads").tolist()
            value = self.optional_constant(node, 2, where, "the value")
            if len(node.input) > 3 and node.input[3]:
                raise ImportFailed(f"{where}: the axes input")
        else:
            pads, value = attrs.get("pads", []), attrs.get("value", 0.0)
        if value is not None and float(np.asarray(value).reshape(())) != 0.0:
            raise ImportFailed(f"{where}: a pad value other than 0")
        x = self.value(node.input[0], where)
        x = self.unpool(x, where) if x.pooled else x
        if x.rank != 4 or len(pads) != 8:
            raise ImportFailed(f"{where}: a pad of a rank {x.rank} tensor")
        before, after = pads[:4], pads[4:]
        keras_before = [before[a] for a in x.perm]
        keras_after = [after[a] for a in x.perm]
        if keras_before[0] or keras_after[0] or keras_before[3] or keras_after[3]:
            raise ImportFailed(f"{where}: pads {pads} outside the spatial axes")
        padding = ((keras_before[1], keras_after[1]), (keras_before[2], keras_after[2]))
        layer = self.layers.ZeroPadding2D(padding, name=self.name(node.name or "pad"))
        return _Value(layer(x.tensor), x.perm)

    # -- ops: dense

    def op_Gemm(self, node, attrs, where):
        if attrs.get("transA", 0):
            raise ImportFailed(f"{where}: transA 1")
        x = self.flat(self.value(node.input[0], where), where)
        weight = self.constant(node.input[1], where, "B")
        if attrs.get("transB", 0):
            weight = weight.T
        weight = weight * float(attrs.get("alpha", 1.0))
        bias = self.optional_constant(node, 2, where, "C")
        units = weight.shape[1]
        if bias is not None:
            bias = np.broadcast_to(bias * float(attrs.get("beta", 1.0)), (1, units)).reshape(-1)
        layer = self.layers.Dense(
            units, use_bias=bias is not None, name=self.name(node.name or "gemm")
        )
        weights = [weight] + ([bias] if bias is not None else [])
        return _Value(self.call(layer, x.tensor, weights), (0, 1))

    def op_MatMul(self, node, attrs, where):
        x = self.value(node.input[0], where)
        if x.rank != 2 and not x.pooled:
            raise ImportFailed(f"{where}: a MatMul of a rank {x.rank} tensor")
        x = self.flat(x, where)
        weight = self.constant(node.input[1], where, "the second operand")
        if weight.ndim != 2:
            raise ImportFailed(f"{where}: a MatMul by a rank {weight.ndim} constant")
        units = weight.shape[1]
        bias = self._bias_after(node, units)
        layer = self.layers.Dense(
            units, use_bias=bias is not None, name=self.name(node.name or "matmul")
        )
        weights = [weight] + ([bias] if bias is not None else [])
        return _Value(self.call(layer, x.tensor, weights), (0, 1))

    def _bias_after(self, node, units):
        """The bias of an Add that alone follows a MatMul (tf2onnx's Dense), folded into one
        Dense layer; that Add then passes its input through (``aliases``)."""
        users = self.consumer_nodes.get(node.output[0], [])
        if len(users) != 1 or users[0].op_type != "Add":
            return None
        add = users[0]
        other = add.input[1] if add.input[0] == node.output[0] else add.input[0]
        if other not in self.constants:
            return None
        bias = np.asarray(self.constants[other])
        if bias.size not in (1, units) or bias.ndim > 2 or (bias.ndim == 2 and bias.shape[0] != 1):
            return None
        self.aliases[add.output[0]] = node.output[0]
        return np.broadcast_to(bias.reshape(-1), (units,))


# ------------------------------------------------------------------ the importer


def ends_in_softmax(model) -> bool:
    """Whether the output is a softmax (then, at most, shape ops): a probability vector."""
    producers = {out: node for node in model.graph.node for out in node.output}
    name = model.graph.output[0].name
    passing = {"Identity", "Reshape", "Flatten", "Squeeze", "Dropout", "Cast"}
    while name in producers:
        node = producers[name]
        if node.op_type == "Softmax":
            return True
        if node.op_type not in passing:
            return False
        name = node.input[0]
    return False


def onnx2keras(model, preprocessing: Preprocessing | None = None, *, name: str | None = None):
    """An ONNX classifier (a ModelProto or a path) as a Keras model of built-in layers.

    The Keras model takes RGB in [0, 1], (N, H, W, 3), at the size the images are
    squashed to, and applies ``preprocessing`` as its first layers. Refuses
    (``ImportFailed``, ``ModelFileError``, ``UsageError``) before building
    anything when an op, attribute, input or output is outside what it imports.
    """
    from ._tf import import_keras

    if isinstance(model, str | Path):
        model = load_onnx(model)
    preprocessing = preprocessing or Preprocessing()
    check_ops(model)
    spec = input_spec(model, preprocessing)
    if len(model.graph.output) != 1:
        raise ModelFileError(
            f"the model has {len(model.graph.output)} outputs; a classifier has one"
        )
    dims = _dims(model.graph.output[0])
    if len(dims) not in (2, 4) or (len(dims) == 4 and dims[2:] != [1, 1]):
        raise ModelFileError(
            f"output {model.graph.output[0].name!r} has shape {_shape_text(dims)}; expected "
            "(batch, classes)"
        )
    if preprocessing.softmax and ends_in_softmax(model):
        raise UsageError("softmax=true, but the model already ends in a Softmax")
    builder = _Builder(import_keras(), model, spec)
    built = builder.build(model, preprocessing, name)
    _LAST_BUILD["builder"] = builder  # import_onnx_file keeps its tensors for diagnose()
    return built


_LAST_BUILD: dict = {}


def check_probability_output(model, *, has_contract: bool, preprocessing: Preprocessing) -> None:
    """Logits are imported only with softmax declared; a toolkit file is trusted."""
    if has_contract or preprocessing.softmax or ends_in_softmax(model):
        return
    raise ModelFileError(
        f"output {model.graph.output[0].name!r} is not a softmax: if the model outputs logits, "
        "declare it (--preprocess softmax=true, or add a Softmax before exporting)"
    )


# ------------------------------------------------------------------ ONNX Runtime on the original


def source_feed(pixels: np.ndarray, preprocessing: Preprocessing, spec: InputSpec) -> np.ndarray:
    """What the original ONNX file takes for uint8 RGB pixels squashed to the outer size."""
    pixels = np.asarray(pixels)
    if preprocessing.crop:
        (h, w), (ch, cw) = preprocessing.resize, preprocessing.crop
        top, left = (h - ch) // 2, (w - cw) // 2
        pixels = pixels[:, top : top + ch, left : left + cw, :]
    if spec.dtype == "uint8":
        if not (
            preprocessing.scale == 1.0
            and preprocessing.order == "RGB"
            and preprocessing.mean == (0.0,) * 3
            and preprocessing.std == (1.0,) * 3
        ):
            raise UsageError("a uint8 input takes raw RGB pixels: declare no scale, mean or std")
        feed = pixels.astype(np.uint8)
    else:
        values = pixels.astype(np.float32)
        if preprocessing.order == "BGR":
            values = values[..., ::-1]
        values = values * np.float32(preprocessing.scale)
        values = (values - np.asarray(preprocessing.mean, np.float32)) / np.asarray(
            preprocessing.std, np.float32
        )
        feed = values.astype(np.float32)
    if spec.channels_first:
        feed = feed.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(feed)


PROVIDERS = ["CPUExecutionProvider"]


def _onnxruntime():
    """ONNX Runtime, or the extra that installs it (this module sits below ``runtime/``)."""
    try:
        import onnxruntime
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "checking an ONNX import needs ONNX Runtime: pip install 'nsfw-mobile[onnx]'",
            name="onnxruntime",
        ) from exc
    return onnxruntime


class OriginalOnnxRunner:
    """ONNX Runtime on the original file, fed by ``source_feed``: the end-to-end reference."""

    def __init__(self, path, preprocessing: Preprocessing, spec: InputSpec, labels):
        ort = _onnxruntime()
        self.path, self.preprocessing, self.spec = Path(path), preprocessing, spec
        self.labels = tuple(labels)
        self.input_size = preprocessing.resize or spec.size
        self.name = f"onnxruntime:{self.path.name} (original)"
        options = ort.SessionOptions()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), options, providers=PROVIDERS)
        self.output_name = self.session.get_outputs()[0].name

    def predict(self, pixels: np.ndarray, batch_size: int = 16) -> np.ndarray:
        outputs = []
        for start in range(0, len(pixels), batch_size):
            feed = source_feed(pixels[start : start + batch_size], self.preprocessing, self.spec)
            (probabilities,) = self.session.run([self.output_name], {self.spec.name: feed})
            probabilities = np.asarray(probabilities, np.float32).reshape(len(feed), -1)
            if self.preprocessing.softmax:
                shifted = np.exp(probabilities - probabilities.max(axis=1, keepdims=True))
                probabilities = shifted / shifted.sum(axis=1, keepdims=True)
            outputs.append(probabilities)
        if not outputs:
            return np.zeros((0, len(self.labels)), np.float32)
        return np.concatenate(outputs)

    def close(self) -> None:
        self.session = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ------------------------------------------------------------------ the source model


@dataclass
class ImportedOnnx:
    """An imported ONNX file: the Keras model and what the import decided and measured."""

    model: object
    path: Path
    preprocessing: Preprocessing
    declared_by: str
    spec: InputSpec
    properties: dict
    """The file's contract entries (metadata_props, config.json's labels)."""
    has_contract: bool
    max_abs_diff: float | None = None
    """Largest probability difference vs ONNX Runtime on the check images."""
    check_images: int = 0
    ops: dict = field(default_factory=dict)
    nodes: list = field(default_factory=list, repr=False)
    """(node, op, ONNX output) in graph order."""
    values: dict = field(default_factory=dict, repr=False)
    """ONNX tensor name -> (Keras tensor, perm, pooled), for ``diagnose``."""

    def runner(self, labels) -> OriginalOnnxRunner:
        return OriginalOnnxRunner(self.path, self.preprocessing, self.spec, labels)


def _config_labels(path: Path) -> tuple[str, ...]:
    config = path.with_name("config.json")
    if not config.is_file():
        return ()
    try:
        document = json.loads(config.read_text())
        id2label = document.get("id2label") if isinstance(document, dict) else None
        if not id2label:
            return ()
        return tuple(str(id2label[k]) for k in sorted(id2label, key=lambda k: int(k)))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ModelFileError(f"{config}: unreadable id2label ({exc})") from None


def import_onnx_file(path, *, preprocessing_options: dict | None = None) -> ImportedOnnx:
    """Read, check and import an ONNX classifier file (not yet compared with ONNX Runtime)."""
    path = Path(path)
    _check_file(path)
    model = load_onnx(path)
    check_ops(model)
    properties = {p.key: p.value for p in model.metadata_props}
    has_contract = "toolkit" in properties and "preprocessing" in properties
    default = None
    if has_contract:  # the toolkit's own file: its contract is RGB pixels (raw if uint8)
        inputs = _graph_inputs(model)
        raw = len(inputs) == 1 and inputs[0].type.tensor_type.elem_type == 2
        default = {"scale": 1.0 if raw else 1 / 255}
    preprocessing, declared_by = declared_preprocessing(
        path,
        parse_options(preprocessing_options)
        if isinstance(preprocessing_options, list | tuple)
        else preprocessing_options,
        default=default,
    )
    if preprocessing is None:
        raise UsageError(
            f"{path}: a foreign ONNX file (no nsfw-mobile contract in its metadata) declares no "
            "preprocessing, and running it on the toolkit's own (RGB / 255) would be a guess: "
            "put a preprocessor_config.json beside it or pass --preprocess KEY=VALUE (such as "
            "scale=1/255 mean=0.485,0.456,0.406 std=0.229,0.224,0.225; see `nsfw-mobile "
            "convert --help`)"
        )
    check_probability_output(model, has_contract=has_contract, preprocessing=preprocessing)
    keras_model = onnx2keras(model, preprocessing, name=re.sub(r"[^A-Za-z0-9_]+", "_", path.stem))
    builder = _LAST_BUILD.pop("builder")
    labels = _config_labels(path)
    if labels and "labels" not in properties:
        properties["labels"] = json.dumps(list(labels))
    from collections import Counter

    return ImportedOnnx(
        keras_model,
        path,
        preprocessing,
        declared_by,
        input_spec(model, preprocessing),
        properties,
        has_contract,
        ops=dict(Counter(n.op_type for n in model.graph.node)),
        nodes=builder.node_outputs,
        values={k: (v.tensor, v.perm, v.pooled) for k, v in builder.values.items()},
    )


def measure_import(imported: ImportedOnnx, pixels: np.ndarray, labels) -> float:
    """Largest difference between the imported model and ONNX Runtime on ``pixels``."""
    scaled = np.asarray(pixels, np.float32) / np.float32(255)
    keras_probs = (
        np.asarray(imported.model.predict_on_batch(scaled), np.float64)
        if len(pixels)
        else np.zeros((0, 1))
    )
    with imported.runner(labels) as runner:
        reference = runner.predict(pixels).astype(np.float64)
    difference = float(np.abs(keras_probs - reference).max()) if len(pixels) else 0.0
    imported.max_abs_diff, imported.check_images = difference, len(pixels)
    return difference


# ------------------------------------------------------------------ layer-by-layer diagnosis


@dataclass
class NodeDifference:
    node: str
    op: str
    output: str
    max_abs_diff: float
    scale: float
    """Largest magnitude of the ONNX tensor (the difference is judged against it)."""

    @property
    def relative(self) -> float:
        return self.max_abs_diff / max(self.scale, 1.0)


def diagnose(
    path,
    pixels: np.ndarray,
    *,
    preprocessing_options=None,
    threshold: float = 1e-3,
    imported: ImportedOnnx | None = None,
):
    """Every node's output in ONNX Runtime and in the imported model, in graph order.

    Returns (differences, the first node whose relative difference exceeds
    ``threshold`` or None). ONNX Runtime is asked for every intermediate tensor
    (each added as a graph output); the Keras tensor of the same ONNX tensor is
    transposed back to the ONNX layout before comparing.
    """
    import onnx

    from ._tf import import_keras

    if imported is None:
        imported = import_onnx_file(path, preprocessing_options=preprocessing_options)
    model = load_onnx(path)
    nodes, builder_values = imported.nodes, imported.values
    keras = import_keras()
    wanted = [(node, op, name) for node, op, name in nodes if name in builder_values]
    probe = keras.Model(imported.model.input, [builder_values[n][0] for _, _, n in wanted])
    keras_outputs = probe.predict_on_batch(np.asarray(pixels, np.float32) / np.float32(255))
    keras_outputs = keras_outputs if isinstance(keras_outputs, list) else [keras_outputs]
    known = {o.name for o in model.graph.output}
    for _, _, name in wanted:
        if name not in known:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    ort = _onnxruntime()
    session = ort.InferenceSession(model.SerializeToString(), providers=PROVIDERS)
    feed = source_feed(pixels, imported.preprocessing, imported.spec)
    names = [name for _, _, name in wanted]
    ort_outputs = session.run(names, {imported.spec.name: feed})
    differences, first = [], None
    for (node, op, name), ours, theirs in zip(wanted, keras_outputs, ort_outputs, strict=True):
        perm, pooled = builder_values[name][1], builder_values[name][2]
        ours = np.asarray(ours)
        ours = ours.reshape(*ours.shape, 1, 1) if pooled else ours.transpose(np.argsort(perm))
        theirs = np.asarray(theirs, np.float64)
        if ours.shape != theirs.shape:
            difference = float("inf")
        else:
            difference = float(np.abs(ours - theirs).max()) if theirs.size else 0.0
        entry = NodeDifference(node, op, name, difference, float(np.abs(theirs).max(initial=0)))
        differences.append(entry)
        if first is None and entry.relative > threshold:
            first = entry
    return differences, first
