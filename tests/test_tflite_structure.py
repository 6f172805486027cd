"""The TFLite structure check (run before LiteRT loads a file) accepts every valid file.

Models are written with LiteRT's own flatbuffer schema; LiteRT is the judge of what is
valid: the smallest constant buffer it accepts for a tensor is that tensor's size.
"""

from __future__ import annotations

import flatbuffers
import pytest

from nsfw_mobile.tflite_metadata import TENSOR_TYPE_BITS, structure_problem

schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

TYPES = {name: value for name, value in vars(schema.TensorType).items() if name.isupper()}
ELEMENTS = 7  # odd: sub-byte types end in a padded byte
NOT_CONSTANTS = {"RESOURCE", "VARIANT"}  # handles: never a constant buffer in a real file


def model_with_constant(tensor_type: int, data: bytes | None, *, sparse: bool = False) -> bytes:
    """A float32 input passed through as the output, beside one constant tensor of
    ``tensor_type`` and shape [ELEMENTS] holding ``data`` (None: not a constant)."""
    model = schema.ModelT()
    model.version = 3
    empty, constant = schema.BufferT(), schema.BufferT()
    constant.data = list(data or b"")
    model.buffers = [empty, constant]
    image = schema.TensorT()
    image.shape, image.type, image.buffer, image.name = [1, 2], 0, 0, "input"
    tensor = schema.TensorT()
    tensor.shape, tensor.type, tensor.name = [ELEMENTS], tensor_type, "constant"
    tensor.buffer = 0 if data is None else 1
    if sparse:  # CSR over a [ELEMENTS] vector: values at 0, 3 and 6 only
        tensor.shape = [1, ELEMENTS]
        parameters = schema.SparsityParametersT()
        parameters.traversalOrder = [0, 1]
        dense, compressed = schema.DimensionMetadataT(), schema.DimensionMetadataT()
        dense.format, dense.denseSize = schema.DimensionType.DENSE, 1
        compressed.format = schema.DimensionType.SPARSE_CSR
        segments, indices = schema.Int32VectorT(), schema.Int32VectorT()
        segments.values, indices.values = [0, 3], [0, 3, 6]
        compressed.arraySegmentsType = compressed.arrayIndicesType = (
            schema.SparseIndexVector.Int32Vector
        )
        compressed.arraySegments, compressed.arrayIndices = segments, indices
        parameters.dimMetadata = [dense, compressed]
        tensor.sparsity = parameters
    subgraph = schema.SubGraphT()
    subgraph.tensors, subgraph.inputs, subgraph.outputs = [image, tensor], [0], [0]
    subgraph.operators = []
    model.subgraphs, model.operatorCodes = [subgraph], []
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def litert_accepts(model: bytes) -> bool:
    try:
        Interpreter(model_content=model).allocate_tensors()
    except (ValueError, RuntimeError):
        return False
    return True


def string_buffer(count: int) -> bytes:
    """TFLite's string tensor layout: int32 count, count + 1 int32 offsets, the bytes."""
    texts = [f"s{i}".encode() for i in range(count)]
    start = 4 * (count + 2)
    offsets = [start]
    for text in texts:
        offsets.append(offsets[-1] + len(text))
    header = b"".join(n.to_bytes(4, "little") for n in [count, *offsets])
    return header + b"".join(texts)


def test_the_size_table_covers_every_type_of_the_schema():
    assert {value: name for name, value in TYPES.items()} == {
        value: name for value, (name, _) in TENSOR_TYPE_BITS.items()
    }


@pytest.mark.parametrize("name", sorted(TYPES, key=TYPES.get))
def test_a_valid_file_of_every_tensor_type_passes_and_a_short_buffer_fails(name):
    tensor_type = TYPES[name]
    if name in NOT_CONSTANTS:
        valid = model_with_constant(tensor_type, None)
        assert litert_accepts(valid) and structure_problem(valid) is None
        return
    if name == "STRING":
        valid = model_with_constant(tensor_type, string_buffer(ELEMENTS))
        assert litert_accepts(valid) and structure_problem(valid) is None
        return
    # LiteRT decides the size: the smallest buffer it accepts
    sizes = range(1, 17 * ELEMENTS)
    size = next(n for n in sizes if litert_accepts(model_with_constant(tensor_type, bytes(n))))
    valid = model_with_constant(tensor_type, bytes(size))
    assert structure_problem(valid) is None, f"{name}: a valid {size}-byte constant refused"
    short = model_with_constant(tensor_type, bytes(size - 1))
    assert not litert_accepts(short)
    assert structure_problem(short) == f"tensor 1 needs {size} bytes, its buffer holds {size - 1}"


def test_a_sparse_constant_holds_only_its_values():
    float32 = TYPES["FLOAT32"]
    three_values = bytes(3 * 4)
    sparse = model_with_constant(float32, three_values, sparse=True)
    assert litert_accepts(sparse) and structure_problem(sparse) is None
    dense = model_with_constant(float32, three_values)
    assert not litert_accepts(dense) and structure_problem(dense) is not None
