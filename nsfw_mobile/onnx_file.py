"""The toolkit's own reader of ONNX (``.onnx``) and ORT format (``.ort``) model files.

ONNX Runtime is handed a file only after this module has read it and found
what the toolkit runs: one image input (N, height, width, 3) of uint8 or
float32, one output (N, classes), an IR version and opset ONNX Runtime
implements, tensors that declare a bounded number of elements, and external
data (weights in separate files) only inside the model's own folder. A file
that breaks any of these is refused with a ``ModelFileError`` that names the
problem, before ONNX Runtime parses or allocates anything.

``.onnx`` is protocol buffers: a small wire-format walker reads the fields
named below and skips the rest (weights are never copied), so the check needs
neither the ``onnx`` package nor ONNX Runtime. ``.ort`` is a FlatBuffer read
with the schema classes that ship inside ONNX Runtime itself (reading it means
running it, so ONNX Runtime is installed anyway). ``fuzz/targets.py``
(``fuzz_onnx``) feeds both readers arbitrary bytes.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ModelFileError
from .files import MAX_DECLARED_ELEMENTS
from .metadata import ArtifactMetadata

MAX_FILE_BYTES = 1 << 30
"""1 GiB: the largest image classifier worth running on a phone is far below it
(MobileNetV2 is 14 MB as float32); protobuf itself stops at 2 GiB."""
MAX_INPUT_SIDE = 4096
"""Largest input height or width: the predict path allocates (N, H, W, 3) images of it."""
MAX_CLASSES = 100_000
MAX_NESTING = 16
"""Subgraphs (If/Loop bodies) inside subgraphs; deeper files are refused, not recursed."""
IR_VERSIONS = range(3, 13)
"""ONNX IR versions 3 (ONNX 1.0) to 12: what ONNX Runtime 1.18+ reads."""
OPSETS = range(7, 26)
"""Default-domain opsets ONNX Runtime implements (7 up), to 25 (ONNX 1.20)."""
ELEMENT_TYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 10: "float16"}
"""TensorProto.DataType codes the reports name; others print as their number."""
IMAGE_TYPES = ("uint8", "float32")


@dataclass
class TensorInfo:
    """A graph input or output: its name, element type and dimensions (int, name or None)."""

    name: str
    dtype: str
    shape: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass
class OnnxSummary:
    """What the toolkit reads of an ONNX or ORT model file."""

    format: str
    """"onnx" or "ort"."""
    ir_version: int = 0
    opsets: dict[str, int] = field(default_factory=dict)
    producer: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    """``metadata_props``: the model contract when the toolkit wrote the file."""
    inputs: list[TensorInfo] = field(default_factory=list)
    """Graph inputs that are not initializers (weights)."""
    outputs: list[TensorInfo] = field(default_factory=list)
    ops: Counter = field(default_factory=Counter)
    parameters: int = 0
    """Elements of the weight tensors (initializers) of the main graph."""
    declared_elements: int = 0
    external_data: list[str] = field(default_factory=list)
    """Relative paths of files the weights are read from (empty: all weights inside)."""

    @property
    def image_input(self) -> TensorInfo:
        return self.inputs[0]

    @property
    def input_size(self) -> tuple[int, int]:
        _, height, width, _ = self.image_input.shape
        return int(height), int(width)

    @property
    def classes(self) -> int:
        return int(self.outputs[0].shape[-1])


# ------------------------------------------------------------------ protobuf wire format


class _Truncated(ValueError):
    pass


def _varint(data: bytes, position: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= end or shift > 63:
            raise _Truncated("a varint runs past its field")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _fields(data: bytes, start: int, end: int):
    """Yield (field number, wire type, value) of one message; length-delimited values are
    (start, end) offsets into ``data``, never copies."""
    position = start
    while position < end:
        key, position = _varint(data, position, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, position = _varint(data, position, end)
        elif wire == 1:
            value, position = position, position + 8
        elif wire == 2:
            length, position = _varint(data, position, end)
            value, position = (position, position + length), position + length
        elif wire == 5:
            value, position = position, position + 4
        else:
            raise _Truncated(f"wire type {wire} (groups are not used by ONNX)")
        if position > end or number == 0:
            raise _Truncated("a field runs past its message")
        yield number, wire, value


def _text(data: bytes, span) -> str:
    if not isinstance(span, tuple):
        raise _Truncated("a string field is not length-delimited")
    return bytes(data[span[0] : span[1]]).decode("utf-8", errors="replace")


def _message(span) -> tuple[int, int]:
    if not isinstance(span, tuple):
        raise _Truncated("a message field is not length-delimited")
    return span


def _int64s(data: bytes, wire: int, value) -> list[int]:
    """A repeated int64 field's values, packed or not."""
    if wire == 0:
        return [_signed(value)]
    start, end = _message(value)
    values = []
    while start < end:
        number, start = _varint(data, start, end)
        values.append(_signed(number))
    return values


def _string_pair(data: bytes, span) -> tuple[str, str]:
    key = value = ""
    for number, _, item in _fields(data, *_message(span)):
        if number == 1:
            key = _text(data, item)
        elif number == 2:
            value = _text(data, item)
    return key, value


def _value_info(data: bytes, span) -> TensorInfo:
    info = TensorInfo(name="", dtype="unsupported")
    for number, _, item in _fields(data, *_message(span)):
        if number == 1:
            info.name = _text(data, item)
        elif number == 2:  # TypeProto
            for type_number, _, type_item in _fields(data, *_message(item)):
                if type_number != 1:  # not tensor_type: a sequence, map or optional
                    continue
                for tensor_number, tensor_wire, tensor_item in _fields(data, *_message(type_item)):
                    if tensor_number == 1 and tensor_wire == 0:
                        info.dtype = ELEMENT_TYPES.get(tensor_item, str(tensor_item))
                    elif tensor_number == 2:
                        info.shape = _shape(data, tensor_item)
    return info


def _shape(data: bytes, span) -> list:
    shape = []
    for number, _, dimension in _fields(data, *_message(span)):
        if number != 1:
            continue
        value = None
        for dim_number, dim_wire, item in _fields(data, *_message(dimension)):
            if dim_number == 1 and dim_wire == 0:
                value = _signed(item)
            elif dim_number == 2:
                value = _text(data, item) or None
        shape.append(value)
    return shape


class _Walker:
    """Collects what ``OnnxSummary`` reports from a ModelProto's bytes."""

    def __init__(self, data: bytes, summary: OnnxSummary):
        self.data = data
        self.summary = summary

    def model(self) -> None:
        data, summary = self.data, self.summary
        graph = None
        for number, wire, value in _fields(data, 0, len(data)):
            if number == 1 and wire == 0:
                summary.ir_version = _signed(value)
            elif number == 2:
                summary.producer = _text(data, value)
            elif number == 7:
                graph = _message(value)
            elif number == 8:
                domain, version = "", 0
                for item_number, item_wire, item in _fields(data, *_message(value)):
                    if item_number == 1:
                        domain = _text(data, item)
                    elif item_number == 2 and item_wire == 0:
                        version = _signed(item)
                summary.opsets[domain or "ai.onnx"] = version
            elif number == 14:
                key, text = _string_pair(data, value)
                summary.metadata[key] = text
            elif number == 20:  # TrainingInfoProto: initialization and algorithm graphs
                for item_number, _, item in _fields(data, *_message(value)):
                    if item_number in (1, 2):
                        self.graph(item, depth=1)
            elif number == 25:  # FunctionProto: its nodes
                for item_number, _, item in _fields(data, *_message(value)):
                    if item_number == 7:
                        self.node(item, depth=1)
        if graph is None:
            raise ModelFileError("no graph in the model")
        self.graph(graph, depth=0)

    def graph(self, span, depth: int) -> None:
        if depth > MAX_NESTING:
            raise ModelFileError(f"subgraphs nested more than {MAX_NESTING} deep")
        data, summary = self.data, self.summary
        inputs, initializers = [], set()
        for number, _, value in _fields(data, *_message(span)):
            if number == 1:
                self.node(value, depth)
            elif number == 5:
                name, elements = self.tensor(value)
                initializers.add(name)
                if depth == 0:
                    summary.parameters += elements
            elif number == 15:  # SparseTensorProto: values and indices tensors
                for item_number, _, item in _fields(data, *_message(value)):
                    if item_number in (1, 2):
                        name, _ = self.tensor(item)
                        initializers.add(name)
            elif depth == 0 and number == 11:
                inputs.append(_value_info(data, value))
            elif depth == 0 and number == 12:
                summary.outputs.append(_value_info(data, value))
        if depth == 0:  # before IR 4, every initializer was also listed as an input
            summary.inputs = [info for info in inputs if info.name not in initializers]

    def node(self, span, depth: int) -> None:
        data = self.data
        op_type = domain = ""
        for number, _, value in _fields(data, *_message(span)):
            if number == 4:
                op_type = _text(data, value)
            elif number == 7:
                domain = _text(data, value)
            elif number == 5:
                self.attribute(value, depth)
        if depth == 0:
            self.summary.ops[f"{domain}:{op_type}" if domain else op_type] += 1

    def attribute(self, span, depth: int) -> None:
        for number, _, value in _fields(self.data, *_message(span)):
            if number in (5, 10):  # t, tensors
                self.tensor(value)
            elif number in (6, 11):  # g, graphs
                self.graph(value, depth + 1)
            elif number in (22, 23):  # sparse_tensor(s)
                for item_number, _, item in _fields(self.data, *_message(value)):
                    if item_number in (1, 2):
                        self.tensor(item)

    def tensor(self, span) -> tuple[str, int]:
        """Name and declared element count of a TensorProto; records external data files."""
        data = self.data
        name, dims, location, external = "", [], 0, {}
        for number, wire, value in _fields(data, *_message(span)):
            if number == 1:
                dims += _int64s(data, wire, value)
            elif number == 8:
                name = _text(data, value)
            elif number == 13:
                key, text = _string_pair(data, value)
                external[key] = text
            elif number == 14 and wire == 0:
                location = value
        elements = 1
        for dimension in dims:
            if dimension < 0:
                raise ModelFileError(f"tensor {name!r} has a negative dimension {dimension}")
            elements *= dimension
            if elements > MAX_DECLARED_ELEMENTS:
                break
        self.summary.declared_elements += elements
        if self.summary.declared_elements > MAX_DECLARED_ELEMENTS:
            raise ModelFileError(
                f"its tensors declare over {MAX_DECLARED_ELEMENTS:,} elements: refused "
                "before ONNX Runtime allocates them"
            )
        if location == 1 or external:
            self.summary.external_data.append(external.get("location", ""))
        return name, elements


def read_onnx_bytes(data: bytes) -> OnnxSummary:
    """Walk a serialized ModelProto; ModelFileError names what does not parse."""
    summary = OnnxSummary(format="onnx")
    try:
        _Walker(data, summary).model()
    except _Truncated as exc:
        raise ModelFileError(f"not an ONNX model: its protobuf does not parse ({exc})") from None
    return summary


# ------------------------------------------------------------------ ORT format (FlatBuffer)

ORT_IDENTIFIER = b"ORTM"


def _ort_tensor_info(value_info, check_length) -> TensorInfo:
    name = (value_info.Name() or b"").decode("utf-8", "replace")
    info = TensorInfo(name=name, dtype="unsupported")
    type_info = value_info.Type()
    if type_info is None or type_info.ValueType() != 1:  # TypeInfoValue.tensor_type
        return info
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs.TensorTypeAndShape import (
        TensorTypeAndShape,
    )

    table = type_info.Value()
    tensor = TensorTypeAndShape()
    tensor.Init(table.Bytes, table.Pos)
    info.dtype = ELEMENT_TYPES.get(tensor.ElemType(), str(tensor.ElemType()))
    shape = tensor.Shape()
    if shape is not None:
        check_length(shape.DimLength(), "shape")
        for index in range(shape.DimLength()):
            dimension = shape.Dim(index).Value()
            if dimension is None:
                info.shape.append(None)
            elif dimension.DimType() == 1:  # DimensionValueType.VALUE
                info.shape.append(dimension.DimValue())
            else:
                info.shape.append((dimension.DimParam() or b"").decode("utf-8", "replace") or None)
    return info


def read_ort_bytes(data: bytes) -> OnnxSummary:
    """Walk an ORT format model with ONNX Runtime's own FlatBuffer schema classes."""

    def _check_length(length: int, what: str) -> None:
        """A vector claims ``length`` entries of 4 bytes or more: no longer than the file."""
        if length < 0 or 4 * length > len(data):
            raise ModelFileError(f"ORT format: its {what} list claims {length} entries")

    if len(data) < 8 or data[4:8] != ORT_IDENTIFIER:
        raise ModelFileError("not an ORT format model (no ORTM identifier)")
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs.InferenceSession import (
        InferenceSession,
    )

    summary = OnnxSummary(format="ort")
    try:
        model = InferenceSession.GetRootAs(data, 0).Model()
        graph = model.Graph() if model is not None else None
        if graph is None:
            raise ModelFileError("ORT format: no model graph")
        summary.ir_version = model.IrVersion()
        _check_length(model.OpsetImportLength(), "opset")
        for index in range(model.OpsetImportLength()):
            opset = model.OpsetImport(index)
            domain = (opset.Domain() or b"").decode("utf-8", "replace")
            summary.opsets[domain or "ai.onnx"] = opset.Version()
        summary.producer = (model.ProducerName() or b"").decode("utf-8", "replace")
        _check_length(model.MetadataPropsLength(), "metadata")
        for index in range(model.MetadataPropsLength()):
            entry = model.MetadataProps(index)
            summary.metadata[(entry.Key() or b"").decode("utf-8", "replace")] = (
                entry.Value() or b""
            ).decode("utf-8", "replace")
        _check_length(graph.NodeArgsLength(), "value")
        args = {}
        for index in range(graph.NodeArgsLength()):
            info = _ort_tensor_info(graph.NodeArgs(index), _check_length)
            args[info.name] = info
        _check_length(graph.InitializersLength(), "initializer")
        weights = set()
        for index in range(graph.InitializersLength()):
            tensor = graph.Initializers(index)
            _check_length(tensor.DimsLength(), "dims")
            elements = 1
            for dimension in (tensor.Dims(d) for d in range(tensor.DimsLength())):
                if dimension < 0:
                    raise ModelFileError("ORT format: a tensor has a negative dimension")
                elements = min(elements * dimension, MAX_DECLARED_ELEMENTS + 1)
            summary.parameters += elements
            summary.declared_elements += elements
            if summary.declared_elements > MAX_DECLARED_ELEMENTS:
                raise ModelFileError(
                    f"its tensors declare over {MAX_DECLARED_ELEMENTS:,} elements: refused "
                    "before ONNX Runtime allocates them"
                )
            weights.add((tensor.Name() or b"").decode("utf-8", "replace"))
        for length, item, into in (
            (graph.InputsLength(), graph.Inputs, summary.inputs),
            (graph.OutputsLength(), graph.Outputs, summary.outputs),
        ):
            _check_length(length, "input/output")
            for index in range(length):
                name = item(index).decode("utf-8", "replace")
                if into is summary.inputs and name in weights:
                    continue
                into.append(args.get(name, TensorInfo(name=name, dtype="unsupported")))
        _check_length(graph.NodesLength(), "node")
        for index in range(graph.NodesLength()):
            node = graph.Nodes(index)
            op_type = (node.OpType() or b"").decode("utf-8", "replace")
            domain = (node.Domain() or b"").decode("utf-8", "replace")
            summary.ops[f"{domain}:{op_type}" if domain else op_type] += 1
    except ModelFileError:
        raise
    except (IndexError, ValueError, TypeError, AttributeError, struct.error, OverflowError) as exc:
        raise ModelFileError(
            f"not a loadable ORT format model: its FlatBuffer does not parse ({type(exc).__name__})"
        ) from None
    return summary


# ------------------------------------------------------------------ the checks


def _image_input_problem(summary: OnnxSummary) -> str | None:
    if len(summary.inputs) != 1:
        return f"{len(summary.inputs)} inputs; expected one image input (N, height, width, 3)"
    image = summary.image_input
    shape = image.shape
    if image.dtype not in IMAGE_TYPES:
        return f"input {image.name!r} is {image.dtype}; expected uint8 or float32 pixels"
    if len(shape) != 4 or shape[3] != 3:
        return f"input {image.name!r} has shape {shape}; expected (N, height, width, 3) RGB"
    if isinstance(shape[0], int) and shape[0] != 1:
        return f"input {image.name!r} has a fixed batch of {shape[0]}; expected 1 or a free batch"
    if not all(isinstance(side, int) and 0 < side <= MAX_INPUT_SIDE for side in shape[1:3]):
        return (
            f"input {image.name!r} has height and width {shape[1:3]}; expected fixed sizes "
            f"of 1 to {MAX_INPUT_SIDE}"
        )
    return None


def _output_problem(summary: OnnxSummary) -> str | None:
    if len(summary.outputs) != 1:
        return f"{len(summary.outputs)} outputs; expected one (N, classes) output"
    output = summary.outputs[0]
    shape = output.shape
    if output.dtype != "float32" or len(shape) != 2:
        return f"output {output.name!r} is {output.dtype} {shape}; expected float32 (N, classes)"
    if not isinstance(shape[1], int) or not 0 < shape[1] <= MAX_CLASSES:
        return f"output {output.name!r} has {shape[1]!r} classes; expected a fixed count"
    return None


def _version_problem(summary: OnnxSummary) -> str | None:
    if summary.ir_version not in IR_VERSIONS:
        return (
            f"IR version {summary.ir_version}; ONNX Runtime reads {IR_VERSIONS.start} to "
            f"{IR_VERSIONS.stop - 1}"
        )
    opset = summary.opsets.get("ai.onnx")
    if opset not in OPSETS:
        return f"opset {opset}; ONNX Runtime runs opsets {OPSETS.start} to {OPSETS.stop - 1}"
    return None


def _external_problem(path: Path, summary: OnnxSummary) -> str | None:
    folder = path.parent.resolve()
    for location in summary.external_data:
        if not location or "\x00" in location or Path(location).is_absolute():
            return f"external data location {location!r} is not a relative file name"
        target = (folder / location).resolve()
        if folder not in target.parents:
            return f"external data {location!r} leaves the model's folder; refused"
        if not target.is_file():
            return f"external data file {location!r} is missing"
    return None


def read_model_file(path: str | Path) -> OnnxSummary:
    """Read an ``.onnx`` or ``.ort`` file (no checks beyond parsing it)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ModelFileError(
                f"{path}: {size:,} bytes, over the limit of {MAX_FILE_BYTES:,} for a model file"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    reader = read_ort_bytes if path.suffix.lower() == ".ort" else read_onnx_bytes
    try:
        return reader(data)
    except ModelFileError as exc:
        raise ModelFileError(f"{path}: {exc}") from None


def check_model_file(path: str | Path) -> OnnxSummary:
    """Read a model file and refuse what the toolkit does not run; see the module doc."""
    path = Path(path)
    summary = read_model_file(path)
    for problem in (
        _version_problem(summary),
        _image_input_problem(summary),
        _output_problem(summary),
        _external_problem(path, summary),
    ):
        if problem is not None:
            raise ModelFileError(f"{path}: {problem}")
    return summary


def artifact_metadata(path: Path, summary=None) -> ArtifactMetadata:
    """An ONNX or ORT file's contract, from its ``metadata_props``."""
    summary = summary if summary is not None else read_model_file(path)
    properties = dict(summary.metadata)
    try:
        labels = json.loads(properties.get("labels", "[]"))
    except ValueError:
        labels = ()
    labels = tuple(labels) if isinstance(labels, list) else ()
    shape = summary.inputs[0].shape if len(summary.inputs) == 1 else []
    sized = len(shape) == 4 and all(isinstance(side, int) for side in shape[1:3])
    return ArtifactMetadata(
        labels=labels if all(isinstance(label, str) for label in labels) else (),
        input_size=(shape[1], shape[2]) if sized else None,
        info={"name": Path(path).stem},
        properties=properties,
    )
