"""Standard TFLite metadata (schema ``metadata_schema.fbs``, identifier ``M001``), by hand.

MediaPipe 1.2.3's metadata writer fails to import, so the toolkit builds the
metadata flatbuffer itself with the ``flatbuffers`` runtime, following the
published schema (semantic version 1.5.0; we use only 1.0.0 features), and
packs associated files as MetadataPopulator does: a ZIP archive of stored
(uncompressed) members appended to the model file. Android's TFLite Support
library and MediaPipe Tasks read both, so an ImageClassifier gets category
names from ``labels.txt`` with no extra files.

Reading needs no TensorFlow: ``read_metadata`` walks the flatbuffers itself.
"""

from __future__ import annotations

import contextlib
import io
import json
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import flatbuffers
import numpy as np
from flatbuffers import number_types as N
from flatbuffers.table import Table

from .errors import ModelFileError
from .metadata import ArtifactMetadata

METADATA_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.0.0"

# Union and enum values from metadata_schema.fbs.
CONTENT_FEATURE, CONTENT_IMAGE = 1, 2
PROCESS_NORMALIZATION = 1
COLOR_SPACE_RGB = 1
FILE_DESCRIPTIONS, FILE_TENSOR_AXIS_LABELS = 1, 2


@dataclass
class TFLiteMetadata:
    name: str
    description: str
    version: str
    author: str
    license: str
    input_name: str = "image"
    input_description: str = ""
    image_size: tuple[int, int] | None = None  # (width, height)
    normalization: tuple[list[float], list[float]] | None = None  # (mean, std)
    input_range: tuple[float, float] | None = None
    output_name: str = "probabilities"
    output_description: str = ""
    labels: list[str] = field(default_factory=list)
    labels_file: str = "labels.txt"
    properties: dict[str, str] = field(default_factory=dict)
    properties_file: str = "nsfw_mobile.json"

    def associated_files(self) -> dict[str, bytes]:
        return {
            self.labels_file: ("\n".join(self.labels) + "\n").encode(),
            self.properties_file: json.dumps(self.properties, indent=2).encode(),
        }


# ---------------------------------------------------------------- writing


def _strings(builder, *values):
    return [builder.CreateString(v) for v in values]


def _table(builder, fields):
    """fields: list of (slot, kind, value) with kind in 'offset', 'byte', 'uint'."""
    builder.StartObject(max(slot for slot, _, _ in fields) + 1)
    for slot, kind, value in fields:
        if kind == "offset":
            builder.PrependUOffsetTRelativeSlot(slot, value, 0)
        elif kind == "byte":
            builder.PrependInt8Slot(slot, value, 0)
        elif kind == "uint":
            builder.PrependUint32Slot(slot, value, 0)
    return builder.EndObject()


def _vector_of_offsets(builder, offsets):
    builder.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


def _vector_of_floats(builder, values):
    builder.StartVector(4, len(values), 4)
    for value in reversed(values):
        builder.PrependFloat32(value)
    return builder.EndVector()


def _associated_file(builder, name, description, file_type):
    name, description = _strings(builder, name, description)
    return _table(
        builder, [(0, "offset", name), (1, "offset", description), (2, "byte", file_type)]
    )


def _stats(builder, low, high):
    maximum = _vector_of_floats(builder, [high])
    minimum = _vector_of_floats(builder, [low])
    return _table(builder, [(0, "offset", maximum), (1, "offset", minimum)])


def build_metadata(meta: TFLiteMetadata) -> bytes:
    """Serialize ``meta`` as a ModelMetadata flatbuffer."""
    b = flatbuffers.Builder(1024)

    # Input tensor: an RGB image, optionally normalised.
    input_fields = []
    if meta.image_size:
        size = _table(b, [(0, "uint", meta.image_size[0]), (1, "uint", meta.image_size[1])])
        image = _table(b, [(0, "byte", COLOR_SPACE_RGB), (1, "offset", size)])
        input_content = _table(b, [(0, "byte", CONTENT_IMAGE), (1, "offset", image)])
        input_fields.append((3, "offset", input_content))
    if meta.normalization:
        mean = _vector_of_floats(b, meta.normalization[0])
        std = _vector_of_floats(b, meta.normalization[1])
        options = _table(b, [(0, "offset", mean), (1, "offset", std)])
        unit = _table(b, [(0, "byte", PROCESS_NORMALIZATION), (1, "offset", options)])
        input_fields.append((4, "offset", _vector_of_offsets(b, [unit])))
    if meta.input_range:
        input_fields.append((5, "offset", _stats(b, *meta.input_range)))
    name, description = _strings(b, meta.input_name, meta.input_description)
    input_tensor = _table(b, [(0, "offset", name), (1, "offset", description), *input_fields])

    # Output tensor: probabilities with their labels file.
    b.StartObject(0)
    feature = b.EndObject()  # FeatureProperties has no fields
    output_content = _table(b, [(0, "byte", CONTENT_FEATURE), (1, "offset", feature)])
    labels = _associated_file(
        b, meta.labels_file, "Class labels, one per line, in output order.", FILE_TENSOR_AXIS_LABELS
    )
    output_stats = _stats(b, 0.0, 1.0)
    name, description = _strings(b, meta.output_name, meta.output_description)
    output_tensor = _table(
        b,
        [
            (0, "offset", name),
            (1, "offset", description),
            (3, "offset", output_content),
            (5, "offset", output_stats),
            (6, "offset", _vector_of_offsets(b, [labels])),
        ],
    )

    subgraph = _table(
        b,
        [
            (2, "offset", _vector_of_offsets(b, [input_tensor])),
            (3, "offset", _vector_of_offsets(b, [output_tensor])),
        ],
    )
    properties = _associated_file(
        b, meta.properties_file, "Provenance written by nsfw-mobile (JSON).", FILE_DESCRIPTIONS
    )
    name, description, version, author, license_, parser = _strings(
        b, meta.name, meta.description, meta.version, meta.author, meta.license, MIN_PARSER_VERSION
    )
    model = _table(
        b,
        [
            (0, "offset", name),
            (1, "offset", description),
            (2, "offset", version),
            (3, "offset", _vector_of_offsets(b, [subgraph])),
            (4, "offset", author),
            (5, "offset", license_),
            (6, "offset", _vector_of_offsets(b, [properties])),
            (7, "offset", parser),
        ],
    )
    b.Finish(model, file_identifier=METADATA_IDENTIFIER)
    return bytes(b.Output())


def attach_metadata(model_bytes: bytes, meta: TFLiteMetadata) -> bytes:
    """Return the model with ``meta`` in its metadata and its associated files appended."""
    from ._tf import import_tensorflow

    import_tensorflow()
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    schema = flatbuffer_utils.schema_fb
    buffer = schema.BufferT()
    buffer.data = list(build_metadata(meta))
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != METADATA_NAME] + [entry]
    packed = io.BytesIO(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    packed.seek(0, io.SEEK_END)
    with zipfile.ZipFile(packed, "a", compression=zipfile.ZIP_STORED) as archive:
        for file_name, content in meta.associated_files().items():
            archive.writestr(file_name, content)
    return packed.getvalue()


# ---------------------------------------------------------------- reading


def _root(buffer: bytes, offset: int = 0) -> Table:
    return Table(
        buffer,
        offset
        + N.UOffsetTFlags.py_type(
            flatbuffers.encode.Get(N.UOffsetTFlags.packer_type, buffer, offset)
        ),
    )


def _field(table: Table, slot: int) -> int:
    return table.Offset(4 + 2 * slot)


def _string(table: Table, slot: int) -> str | None:
    offset = _field(table, slot)
    return table.String(offset + table.Pos).decode() if offset else None


def _subtable(table: Table, slot: int) -> Table | None:
    offset = _field(table, slot)
    return Table(table.Bytes, table.Indirect(offset + table.Pos)) if offset else None


def _tables(table: Table, slot: int) -> list[Table]:
    offset = _field(table, slot)
    if not offset:
        return []
    start, count = table.Vector(offset), table.VectorLen(offset)
    return [Table(table.Bytes, table.Indirect(start + 4 * i)) for i in range(count)]


def _scalar(table: Table, slot: int, kind, default=0):
    offset = _field(table, slot)
    return table.Get(kind, offset + table.Pos) if offset else default


def _floats(table: Table, slot: int) -> list[float]:
    offset = _field(table, slot)
    if not offset:
        return []
    start = table.Vector(offset)
    return [table.Get(N.Float32Flags, start + 4 * i) for i in range(table.VectorLen(offset))]


def _metadata_buffer(model: bytes) -> bytes | None:
    """The TFLITE_METADATA buffer of a TFLite flatbuffer (Model: buffers=4, metadata=6)."""
    root = _root(model)
    for entry in _tables(root, 6):
        if _string(entry, 0) == METADATA_NAME:
            index = _scalar(entry, 1, N.Uint32Flags)
            buffers = _tables(root, 4)
            data_offset = _field(buffers[index], 0)
            start = buffers[index].Vector(data_offset)
            return bytes(model[start : start + buffers[index].VectorLen(data_offset)])
    return None


def _ints(table: Table, slot: int) -> list[int]:
    offset = _field(table, slot)
    if not offset:
        return []
    start = table.Vector(offset)
    return [table.Get(N.Int32Flags, start + 4 * i) for i in range(table.VectorLen(offset))]


TENSOR_TYPE_BITS: dict[int, tuple[str, int | None]] = {
    0: ("FLOAT32", 32), 1: ("FLOAT16", 16), 2: ("INT32", 32), 3: ("UINT8", 8),
    4: ("INT64", 64), 5: ("STRING", None), 6: ("BOOL", 8), 7: ("INT16", 16),
    8: ("COMPLEX64", 64), 9: ("INT8", 8), 10: ("FLOAT64", 64), 11: ("COMPLEX128", 128),
    12: ("UINT64", 64), 13: ("RESOURCE", None), 14: ("VARIANT", None), 15: ("UINT32", 32),
    16: ("UINT16", 16), 17: ("INT4", 4), 18: ("BFLOAT16", 16), 19: ("INT2", 2),
    20: ("UINT4", 4), 21: ("FLOAT8_E4M3FN", 8), 22: ("FLOAT8_E5M2", 8),
}  # fmt: skip
"""Every ``TensorType`` of the TFLite schema (LiteRT's ``schema.fbs``, up to FLOAT8_E5M2 = 22):
value -> (name, bits per element). None: the buffer's size does not follow from the shape
(STRING holds a table of offsets and bytes; RESOURCE and VARIANT hold handles). Sub-byte types
(INT4, UINT4, INT2) are stored packed, several to a byte, the last byte padded. BOOL takes one
byte. A type newer than this table is left to LiteRT, which refuses what it does not know."""


def constant_buffer_bytes(tensor_type: int, elements: int) -> int | None:
    """The bytes a dense constant of ``elements`` values of ``tensor_type`` occupies in the
    file, or None where that does not follow from the type and shape."""
    bits = TENSOR_TYPE_BITS.get(tensor_type, (None, None))[1]
    return None if bits is None else (elements * bits + 7) // 8


OPERATOR_ARITY = {
    0: (2, 2), 1: (1, 1), 2: (1, None), 3: (2, 3), 4: (2, 3), 6: (1, 1), 9: (2, 4),
    14: (1, 1), 17: (1, 1), 18: (2, 2), 19: (1, 1), 21: (1, 1), 22: (1, 2), 25: (1, 1),
    34: (2, 3), 40: (2, 2), 45: (4, 4), 77: (1, 1), 83: (1, None), 114: (1, 1), 117: (1, 1),
}  # fmt: skip
"""(fewest, most) inputs of the ops image classifiers use, each with one output: ADD,
AVERAGE_POOL_2D, CONCATENATION, CONV_2D, DEPTHWISE_CONV_2D, DEQUANTIZE, FULLY_CONNECTED,
LOGISTIC, MAX_POOL_2D, MUL, RELU, RELU6, RESHAPE, SOFTMAX, PAD, MEAN, STRIDED_SLICE, SHAPE,
PACK, QUANTIZE, HARD_SWISH. A STRIDED_SLICE with one input segfaulted LiteRT's prepare
step before its own arity check ran (fuzz_tflite)."""

WINDOW_OPTION_SLOTS = {
    1: (1, 2, 3, 4),  # AVERAGE_POOL_2D, Pool2DOptions: stride_w, stride_h, filter_w, filter_h
    17: (1, 2, 3, 4),  # MAX_POOL_2D
    3: (1, 2, 4, 5),  # CONV_2D, Conv2DOptions: stride_w, stride_h, dilation_w, dilation_h
    4: (1, 2, 3, 5, 6),  # DEPTHWISE_CONV_2D: strides, depth_multiplier, dilations
}
"""Integer options of windowed ops that size LiteRT's buffers: an average pool with a
100 M-wide filter made allocate_tensors take 4.6 GB (fuzz_tflite)."""


def structure_problem(model: bytes) -> str | None:
    """The first index or buffer size in the graph that points outside what the file holds
    (operator tensors, operator codes, constant buffers whose size is not their tensor's), or
    None. A float32 bias of shape [] over a 12-byte buffer made LiteRT's allocate_tensors take
    4.6 GB before failing.
    LiteRT's own verifier checks the flatbuffer's layout but not all of these, and a kernel
    then reads out of bounds (a segfault in allocate_tensors; fuzz/targets.py: fuzz_tflite)."""
    root = _root(model)
    codes, buffers = len(_tables(root, 1)), _tables(root, 4)
    if not _tables(root, 2):
        return "no subgraph"  # LiteRT segfaults on such a file (fuzz_tflite)
    for number, code in enumerate(_tables(root, 1)):
        # OperatorCode: where builtin_code is set (files from TF 2.4 on), the int8
        # deprecated_builtin_code must equal it below 127 (PLACEHOLDER_FOR_GREATER_OP_CODES).
        # LiteRT takes the larger of the two, so a mismatch runs one kernel on another op's
        # options (a segfault in allocate_tensors, fuzz_tflite).
        deprecated, builtin = _scalar(code, 0, N.Int8Flags), _scalar(code, 3, N.Int32Flags)
        if builtin and deprecated != min(builtin, 127):
            return f"operator code {number} says both {deprecated} and {builtin}"
    for number, subgraph in enumerate(_tables(root, 2)):
        tensors = _tables(subgraph, 0)
        for index in _ints(subgraph, 1) + _ints(subgraph, 2):
            if not 0 <= index < len(tensors):
                return f"subgraph {number} names tensor {index} of {len(tensors)}"
        largest_dimension = max([1, *(d for t in tensors for d in _ints(t, 0))])
        for op_number, operator in enumerate(_tables(subgraph, 3)):
            code_index = _scalar(operator, 0, N.Uint32Flags)
            if not 0 <= code_index < codes:
                return f"operator {op_number} has no operator code"
            code = _tables(root, 1)[code_index]
            kind = max(_scalar(code, 0, N.Int8Flags), _scalar(code, 3, N.Int32Flags))
            arity = OPERATOR_ARITY.get(kind)
            count, outputs = len(_ints(operator, 1)), len(_ints(operator, 2))
            if arity and not (arity[0] <= count <= (arity[1] or count) and outputs == 1):
                return (
                    f"operator {op_number} (builtin {kind}) has {count} inputs, {outputs} outputs"
                )
            options = _subtable(operator, 4)
            for slot in WINDOW_OPTION_SLOTS.get(kind, ()) if options is not None else ():
                value = _scalar(options, slot, N.Int32Flags)
                if not 0 <= value <= largest_dimension:
                    return (
                        f"operator {op_number} has a window, stride or dilation of {value}, "
                        f"beyond any tensor's dimensions (at most {largest_dimension})"
                    )
            for index in _ints(operator, 1) + _ints(operator, 2):
                if not -1 <= index < len(tensors):
                    return f"operator {op_number} names tensor {index} of {len(tensors)}"
        for tensor_number, tensor in enumerate(tensors):
            # Tensor: shape 0, type 1, buffer 2, sparsity 6
            buffer_index = _scalar(tensor, 2, N.Uint32Flags)
            if buffer_index >= len(buffers):
                return f"tensor {tensor_number} names buffer {buffer_index} of {len(buffers)}"
            data = _field(buffers[buffer_index], 0)
            length = buffers[buffer_index].VectorLen(data) if data else 0
            if not length or _field(tensor, 6):  # not a constant, or sparse (only its values)
                continue
            elements = int(np.prod([max(d, 0) for d in _ints(tensor, 0)], dtype=np.int64))
            needed = constant_buffer_bytes(_scalar(tensor, 1, N.Int8Flags), elements)
            if needed is not None and length != needed:
                # shorter: kernels read past it; longer: a shape that is not the data's
                return f"tensor {tensor_number} needs {needed} bytes, its buffer holds {length}"
    return None


def input_shapes(model: bytes) -> list[list[int]]:
    """The declared shapes of the main subgraph's inputs."""
    subgraph = _tables(_root(model), 2)[0]
    tensors = _tables(subgraph, 0)
    return [_ints(tensors[index], 0) for index in _ints(subgraph, 1)]


def declared_tensor_elements(model: bytes) -> int:
    """Elements of every tensor of every subgraph, summed (shapes as written in the file)."""
    total = 0
    for subgraph in _tables(_root(model), 2):
        for tensor in _tables(subgraph, 0):
            shape_offset = _field(tensor, 0)
            if not shape_offset:
                continue
            start = tensor.Vector(shape_offset)
            elements = 1
            for i in range(tensor.VectorLen(shape_offset)):
                elements *= max(1, tensor.Get(N.Int32Flags, start + 4 * i))
            total += elements
    return total


def constant_elements(model: bytes) -> int:
    """Number of weight values: elements of tensors backed by a non-empty buffer."""
    root = _root(model)
    buffers = _tables(root, 4)  # Model.buffers
    total = 0
    for tensor in _tables(_tables(root, 2)[0], 0):  # subgraphs[0].tensors
        buffer = buffers[_scalar(tensor, 2, N.Uint32Flags)]  # Tensor.buffer
        data = _field(buffer, 0)
        if data and buffer.VectorLen(data):
            shape_offset = _field(tensor, 0)
            start = tensor.Vector(shape_offset)
            shape = [
                tensor.Get(N.Int32Flags, start + 4 * i)
                for i in range(tensor.VectorLen(shape_offset))
            ]
            total += int(np.prod(shape)) if shape else 1
    return total


def read_metadata(path: str | Path) -> TFLiteMetadata | None:
    """Read our metadata back from a .tflite file; None when it has none."""
    data = Path(path).read_bytes()
    try:
        raw = _metadata_buffer(data)
    except (IndexError, ValueError, TypeError, struct.error):
        return None  # not a model we can walk: the interpreter names the problem
    if raw is None or raw[4:8] != METADATA_IDENTIFIER:
        return None
    try:
        return _parse_metadata(raw, data)
    except MALFORMED as exc:
        raise ModelFileError(
            f"{path}: malformed TFLite metadata ({type(exc).__name__}: {exc})"
        ) from None


MALFORMED = (
    IndexError, ValueError, TypeError, KeyError, AttributeError, struct.error, zipfile.BadZipFile,
    zipfile.LargeZipFile, EOFError, NotImplementedError, zlib.error, RecursionError,
    RuntimeError,  # zipfile: "File is encrypted, password required" (fuzz_tflite)
)  # fmt: skip
"""What walking a corrupt flatbuffer, zip archive or JSON file raises."""


def _parse_metadata(raw: bytes, data: bytes) -> TFLiteMetadata:
    root = _root(raw)
    subgraph = _tables(root, 3)[0]
    input_tensor = _tables(subgraph, 2)[0]
    output_tensor = _tables(subgraph, 3)[0]
    meta = TFLiteMetadata(
        name=_string(root, 0) or "",
        description=_string(root, 1) or "",
        version=_string(root, 2) or "",
        author=_string(root, 4) or "",
        license=_string(root, 5) or "",
        input_name=_string(input_tensor, 0) or "",
        input_description=_string(input_tensor, 1) or "",
        output_name=_string(output_tensor, 0) or "",
        output_description=_string(output_tensor, 1) or "",
    )
    content = _subtable(input_tensor, 3)
    if content is not None and _scalar(content, 0, N.Uint8Flags) == CONTENT_IMAGE:
        size = _subtable(_subtable(content, 1), 1)
        if size is not None:
            meta.image_size = (_scalar(size, 0, N.Uint32Flags), _scalar(size, 1, N.Uint32Flags))
    for unit in _tables(input_tensor, 4):
        if _scalar(unit, 0, N.Uint8Flags) == PROCESS_NORMALIZATION:
            options = _subtable(unit, 1)
            meta.normalization = (_floats(options, 0), _floats(options, 1))
    stats = _subtable(input_tensor, 5)
    if stats is not None:
        meta.input_range = (_floats(stats, 1)[0], _floats(stats, 0)[0])
    files = {}
    with (
        contextlib.suppress(zipfile.BadZipFile),  # no associated files
        zipfile.ZipFile(io.BytesIO(data)) as archive,
    ):
        files = {name: archive.read(name) for name in archive.namelist()}
    for file_table in _tables(output_tensor, 6):
        if _scalar(file_table, 2, N.Int8Flags) == FILE_TENSOR_AXIS_LABELS:
            meta.labels_file = _string(file_table, 0) or meta.labels_file
            text = files.get(meta.labels_file, b"").decode()
            meta.labels = [line.strip() for line in text.splitlines() if line.strip()]
    for file_table in _tables(root, 6):
        name = _string(file_table, 0)
        if name in files and name.endswith(".json"):
            meta.properties_file = name
            meta.properties = json.loads(files[name])
    return meta


def artifact_metadata(path: Path) -> ArtifactMetadata:
    """A TFLite file's labels, input size and provenance (``formats.read_metadata``)."""
    meta = read_metadata(path)
    if meta is None:
        return ArtifactMetadata()
    width_height = meta.image_size
    return ArtifactMetadata(
        labels=tuple(meta.labels),
        input_size=(width_height[1], width_height[0]) if width_height else None,
        info={
            "name": meta.name,
            "description": meta.description,
            "version": meta.version,
            "author": meta.author,
            "license": meta.license,
        },
        properties=dict(meta.properties),
    )
