"""Keras -> ONNX (float32, float16, static int8 QDQ) and ONNX Runtime's ORT format.

**Converter.** tf2onnx 1.17 (the first release that converts Keras 3 models,
onnx/tensorflow-onnx#2329 and #2348) on a ``tf.function`` of the model.
Keras's own ``model.export(format="onnx")`` runs the same tf2onnx, but first
patches it for numpy 2 by assigning ``numpy.object`` and replacing tf2onnx
functions (keras/src/export/tf2onnx_lib.py), changes a library must not leave
in its caller's process; tf2onnx 1.17 itself needs no patch on the path used
here (its remaining numpy-2 call, onnx/tensorflow-onnx#2373, is in the
external-data writer of models over 2 GB).

**Opset 13, IR version 7.** The oldest opset with per-channel QDQ
(``axis`` on QuantizeLinear/DequantizeLinear), which the int8 model needs.
ONNX Runtime since 1.6 and every onnxruntime-web release implement it, and the
ORT Mobile pre-built packages list it (opsets 12-13 in 1.8, 12-15 in 1.11).
IR 7 is what ONNX 1.8 wrote for opset 13: runtimes that reject newer IR
versions still load it.

**Input: uint8 NHWC RGB, the /255 inside the graph** (``Cast`` then ``Div``).
An app feeds the raw RGB bytes it has (Android ``Bitmap`` pixels, a canvas's
``ImageData`` without alpha, the uint8 batch of ``images.py``), exactly as it
feeds the int8 TFLite and Core ML models; the scaling cannot be forgotten,
done twice or done with the wrong constant, and the input is a quarter of a
float tensor's size. The price for onnxruntime-web and ORT Mobile users who
hold float tensors in [0, 1] is one multiply by 255 and a cast to uint8.
Output: ``probabilities`` (N, classes) float32 in label order; the batch is free.

**float16**: kernels (tensors of two or more dimensions) stored as float16 and
cast to float32 in the graph, as the float16 TFLite and Core ML models store
their weights: half the download, float32 compute on every execution provider.
Vectors (biases, BatchNorm scales; tf2onnx leaves some unfolded) stay float32,
so no value is rounded twice: on the tiny test model max 0.028 with them kept,
0.033 with them rounded too (TFLite float16: 0.026; bound 0.03). ONNX Runtime's
converter (``onnxruntime.transformers.float16``), which also computes in
float16, moved it by 0.033 as well.
**int8**: ``quant_pre_process`` then static QDQ quantization
(``quantize_static``: per-channel int8 weights, uint8 activations, MinMax
calibration on the same images as full-integer TFLite). **ORT format**: the int8
model saved by ONNX Runtime as ``convert_onnx_models_to_ort`` does by default
(all optimizations but the x86-only NCHWc layout, no int8-on-ARM rewrite).

The model contract goes into ``metadata_props`` (``metadata.provenance``),
which ``InferenceSession.get_modelmeta().custom_metadata_map`` returns.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
import warnings
import weakref
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import ConversionError, UnsupportedOpError, UsageError
from ..metadata import provenance
from ..models import INPUT_NAME, SourceModel
from ..quiet import native_output
from ..version import __version__
from . import Artifact, calibration_for, check_quantization, description

OPSET = 13
IR_VERSION = 7
OUTPUT_NAME = "probabilities"
_SCALED = "image_scaled"
_BATCH = "batch"


@contextlib.contextmanager
def _environment_kept(*names: str):
    """tf2onnx.convert sets TF_CPP_MIN_LOG_LEVEL when imported; put it back."""
    saved = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _tf2onnx():
    from .._tf import import_tensorflow

    tf = import_tensorflow()
    with _environment_kept("TF_CPP_MIN_LOG_LEVEL"), native_output():
        import tf2onnx.convert
    return tf, tf2onnx


class _LastResult:
    """One conversion result per stage, for the source model object it came from.

    ``convert --to all`` and ``release`` make three ONNX files and an ORT file from
    one model; tracing and quantizing it once instead of four times saves most of
    their time. A weak reference makes sure a different model never matches, and
    the key holds a digest of the weights, so a model trained further does not.
    """

    def __init__(self):
        self.model: weakref.ref | None = None
        self.key: tuple = ()
        self.value: bytes = b""

    def get(self, model, key: tuple) -> bytes | None:
        if self.model is not None and self.model() is model and self.key == key:
            return self.value
        return None

    def put(self, model, key: tuple, value: bytes) -> bytes:
        self.model, self.key, self.value = weakref.ref(model, self._forget), key, value
        return value

    def _forget(self, reference) -> None:
        """The model is gone: so is its result (the bytes of a whole model)."""
        if reference is self.model:
            self.model, self.key, self.value = None, (), b""


_FLOAT32 = _LastResult()
_INT8 = _LastResult()


def _layer_of(node_name: str, layer_names: set[str]) -> str | None:
    """The Keras layer a TensorFlow node came from: the deepest scope naming a layer
    (Keras appends ``_1``, ``_2`` to the scopes of a traced call)."""
    found = None
    for scope in node_name.split("/")[:-1]:
        base = scope.rsplit("_", 1)[0] if scope.rsplit("_", 1)[-1].isdigit() else scope
        if scope in layer_names or base in layer_names:
            found = scope if scope in layer_names else base
    return found


def _refuse_unconverted_ops(proto, model) -> None:
    """tf2onnx leaves a TensorFlow op it cannot express as a node of the same name;
    name the Keras layer it came from (nothing has been written yet)."""
    import onnx.defs

    layers = {layer.name: type(layer).__name__ for layer in model._flatten_layers()}
    for node in proto.graph.node:
        try:
            onnx.defs.get_schema(node.op_type, OPSET, node.domain)
        except onnx.defs.SchemaError:
            layer = _layer_of(node.name, set(layers))
            where = f"layer {layer!r} ({layers[layer]})" if layer else f"node {node.name!r}"
            raise UnsupportedOpError(
                f"{where} uses the TensorFlow op {node.op_type}, which the ONNX export "
                f"(tf2onnx, opset {OPSET}) cannot express; no file was written"
            ) from None


def _uint8_input(proto, size: tuple[int, int], classes: int) -> None:
    """Make the image input uint8 and scale it inside: image -> Cast -> Div 255."""
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    (traced,) = graph.input
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name == traced.name:
                node.input[index] = _SCALED
    graph.input.remove(traced)
    height, width = size
    graph.input.append(
        helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, [_BATCH, height, width, 3])
    )
    graph.initializer.append(numpy_helper.from_array(np.array(255, np.float32), "pixel_scale"))
    graph.node.insert(
        0, helper.make_node("Div", ["image_float", "pixel_scale"], [_SCALED], name="scale_1_255")
    )
    graph.node.insert(
        0, helper.make_node("Cast", [INPUT_NAME], ["image_float"], to=TensorProto.FLOAT,
                            name="image_to_float")
    )  # fmt: skip
    (output,) = graph.output
    for node in graph.node:
        for index, name in enumerate(node.output):
            if name == output.name:
                node.output[index] = OUTPUT_NAME
    graph.output.remove(output)
    graph.output.append(
        helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [_BATCH, classes])
    )


def _weights_digest(model) -> str:
    digest = hashlib.sha256()
    for weights in model.get_weights():
        digest.update(np.ascontiguousarray(weights).tobytes())
    return digest.hexdigest()


def _float32_model(source: SourceModel) -> bytes:
    """The traced model as ONNX with its uint8 input (cached per model object)."""
    key = (_weights_digest(source.model),)
    cached = _FLOAT32.get(source.model, key)
    if cached is not None:
        return cached
    tf, tf2onnx = _tf2onnx()
    height, width = source.input_size
    model = source.model
    forward = tf.function(lambda x: model(x, training=False))
    signature = [tf.TensorSpec((None, height, width, 3), tf.float32, name=INPUT_NAME)]
    try:
        with native_output():  # tf2onnx logs every rewrite
            proto, _ = tf2onnx.convert.from_function(forward, signature, opset=OPSET)
    except Exception as exc:  # TensorFlow and tf2onnx raise many types, all fatal here
        raise ConversionError(f"ONNX conversion (tf2onnx) failed: {exc}") from exc
    _refuse_unconverted_ops(proto, model)
    _uint8_input(proto, source.input_size, len(source.labels))
    return _FLOAT32.put(source.model, key, proto.SerializeToString())


FLOAT16_MAX = 65504.0


def _float16(model_bytes: bytes) -> bytes:
    """Kernels stored as float16, each cast back to float32 by a ``Cast`` node that ONNX
    Runtime folds when it loads the model: half the file, float32 compute."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    proto = onnx.load_from_string(model_bytes)
    graph = proto.graph
    casts = []
    for tensor in graph.initializer:
        if tensor.data_type != TensorProto.FLOAT or len(tensor.dims) < 2:  # vectors stay
            continue
        values = numpy_helper.to_array(tensor)
        if np.abs(values).max(initial=0.0) > FLOAT16_MAX:
            raise ConversionError(
                f"weight {tensor.name!r} holds values beyond float16's range (65504)"
            )
        name = tensor.name
        tensor.CopyFrom(numpy_helper.from_array(values.astype(np.float16), f"{name}_float16"))
        casts.append(helper.make_node("Cast", [tensor.name], [name], to=TensorProto.FLOAT))
    for node in reversed(casts):
        graph.node.insert(0, node)
    return proto.SerializeToString()


def _calibration_reader(pixels: np.ndarray):
    """One image per step; the first gets a black and a white pixel so that the scaled
    input's calibrated range is exactly [0, 1] (as in export/tflite.py)."""
    from onnxruntime.quantization import CalibrationDataReader

    images = pixels.copy()
    images[0, 0, 0, :], images[0, 0, 1, :] = 0, 255

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(images[index : index + 1] for index in range(len(images)))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    return Reader()


def _int8(source: SourceModel, calibration: np.ndarray) -> bytes:
    key = (
        _weights_digest(source.model),
        hashlib.sha256(np.ascontiguousarray(calibration).tobytes()).hexdigest(),
    )
    cached = _INT8.get(source.model, key)
    if cached is not None:
        return cached
    float32 = _float32_model(source)
    # catch_warnings: the quantizer's shape inference imports sympy, which adds a global
    # warning filter when imported; the caller's filters are put back.
    with (
        warnings.catch_warnings(),
        tempfile.TemporaryDirectory(prefix="nsfw-onnx-") as work,
        native_output(),
    ):
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        work = Path(work)
        (work / "float32.onnx").write_bytes(float32)
        quant_pre_process(str(work / "float32.onnx"), str(work / "prepared.onnx"))
        quantize_static(
            str(work / "prepared.onnx"),
            str(work / "int8.onnx"),
            _calibration_reader(calibration),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
        return _INT8.put(source.model, key, (work / "int8.onnx").read_bytes())


def _finish(
    model_bytes: bytes, source: SourceModel, *, target: str, quantization: str, record: dict
):
    """The contract in metadata_props, our producer, IR 7, and only the opsets used."""
    import onnx

    proto = onnx.load_from_string(model_bytes)
    used = {node.domain for node in proto.graph.node}
    kept = [o for o in proto.opset_import if o.domain in ("", "ai.onnx") or o.domain in used]
    del proto.opset_import[:]
    proto.opset_import.extend(kept)
    proto.ir_version = IR_VERSION
    proto.producer_name, proto.producer_version = "nsfw-mobile", __version__
    proto.doc_string = description(source)
    proto.graph.name = source.contract.name
    del proto.metadata_props[:]
    entries = provenance(source, target=target, quantization=quantization, opset=OPSET, **record)
    onnx.helper.set_model_props(proto, entries)
    onnx.checker.check_model(proto)
    return proto


QUANTIZATIONS = {"onnx": ("none", "float16", "int8"), "ort": ("int8",)}
"""What keras2onnx and keras2ort implement (the registry's rows; a house test checks)."""


def _onnx_proto(source: SourceModel, quantization: str, calibration, target: str):
    """The finished model for ``target`` (onnx, ort) and the calibration pixels it took."""
    check_quantization(f"keras2{target}", quantization, QUANTIZATIONS[target])
    calibration, record = calibration_for(quantization, calibration, "int8 quantization")
    try:
        if quantization == "int8":
            model_bytes = _int8(source, calibration)
        elif quantization == "float16":
            model_bytes = _float16(_float32_model(source))
        else:
            model_bytes = _float32_model(source)
        finished = _finish(
            model_bytes, source, target=target, quantization=quantization, record=record
        )
        return finished, calibration
    except (UnsupportedOpError, ConversionError, UsageError):
        raise
    except Exception as exc:  # onnx, the quantizer and ORT raise many types, all fatal here
        raise ConversionError(f"ONNX conversion ({quantization}) failed: {exc}") from exc


def keras2onnx(
    source: SourceModel,
    out: str | Path,
    *,
    quantization: str = "none",
    calibration: np.ndarray | None = None,
) -> Artifact:
    """Write ``source`` as an ONNX file at ``out`` (atomically); see the module doc.

    ``calibration``: an ``images.ImageBatch`` (its files' SHA-256 are recorded, so that
    validation leaves them out) or uint8 images (N, H, W, 3), at least
    MIN_CALIBRATION_IMAGES, required for ``quantization="int8"``.
    """
    started = time.perf_counter()
    proto, calibration = _onnx_proto(source, quantization, calibration, "onnx")
    out = Path(out)
    with atomic_path(out) as temporary:
        temporary.write_bytes(proto.SerializeToString())
    artifact = Artifact(out, "onnx", quantization, 0.0)
    artifact.notes.append(f"opset {OPSET}, IR {IR_VERSION}, uint8 input")
    if quantization == "int8":
        artifact.notes.append(f"calibrated on {len(calibration)} images")
    return artifact.finish(started)


def keras2ort(
    source: SourceModel,
    out: str | Path,
    *,
    quantization: str = "int8",
    calibration: np.ndarray | None = None,
) -> Artifact:
    """Write ``source`` in ONNX Runtime's ORT format at ``out`` (atomically)."""
    started = time.perf_counter()
    proto, calibration = _onnx_proto(source, quantization, calibration, "ort")
    import onnxruntime as ort

    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="nsfw-ort-") as work:
        onnx_path = Path(work) / "model.onnx"
        onnx_path.write_bytes(proto.SerializeToString())
        with atomic_path(out) as temporary:
            options = ort.SessionOptions()
            options.optimized_model_filepath = str(temporary)
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.add_session_config_entry("session.save_model_format", "ORT")
            options.add_session_config_entry("session.qdqisint8allowed", "0")
            try:
                with native_output():
                    ort.InferenceSession(
                        str(onnx_path),
                        options,
                        providers=["CPUExecutionProvider"],
                        disabled_optimizers=["NchwcTransformer"],
                    )
            except Exception as exc:  # ORT's own exception types
                raise ConversionError(f"ORT format conversion failed: {exc}") from exc
    artifact = Artifact(out, "ort", quantization, 0.0)
    artifact.notes.append(
        f"ORT format written by onnxruntime {ort.__version__}: load it with that version or newer"
    )
    if quantization == "int8":
        artifact.notes.append(f"calibrated on {len(calibration)} images")
    return artifact.finish(started)
