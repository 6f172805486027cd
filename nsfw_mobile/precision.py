"""The reference model run at a format's precision: how much a faithful conversion may differ.

A correct float16 or int8 conversion still changes a model's answers a little,
and how much depends on the model: a well-conditioned network moves by 0.01,
a briefly trained one with a tiny BatchNorm variance by ten times that. A fixed
bound set on one model fails another's faithful artefacts and, loosened, lets
broken ones pass. So the validator measures each model's own sensitivity:
it runs the reference Keras model the way the format computes, on the same
images, and bounds the artefact by a small multiple of that difference
(``formats.Tolerance``).

The emulation does what the converters do, in numpy and Keras:

* BatchNormalization after a convolution or dense layer is folded into it
  first (TFLite, Core ML and ONNX Runtime all fold before they round or
  quantize; TF.js keeps the layers apart, so its precisions do not fold);
* weights are rounded to float16, or quantized to int8 symmetrically per
  output channel (TFLite, Core ML, ONNX), or to uint8 per tensor (TF.js);
  where a converter leaves small tensors alone (TFLite's dynamic range: fewer
  than 1024 values; Core ML's int8: up to 2048), so does the emulation;
* where the format computes in reduced precision, each layer's output is
  rounded as well: to float16 (ML Programs), or quantized to uint8 with the
  range the images produce (full-integer models; a layer whose output only
  feeds a BatchNormalization or an activation is fused with it, as the
  converters fuse them), and the probabilities come out in steps of 1/256.

Measured on the pretrained model and the 21 shipped images, emulated against
real artefacts (max abs diff from the Keras reference, emulated / artefact):
float16 weights 0.0145 / 0.0145 (Core ML and TFLite), ML Program float16
compute 0.0097 / 0.0102, ML Program int8 weights 0.0182 / 0.0177, TFLite
dynamic range 0.039 / 0.032, TFLite full int8 0.196 / 0.193 (mean 0.0105 /
0.0108). ``python -m nsfw_mobile.precision MODEL ARTEFACT...`` prints these.

The model's weights are swapped in place for the run and restored afterwards
(also on error), so the caller's model is left as it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .errors import UsageError

FLOAT32 = "float32"


@dataclass(frozen=True)
class Precision:
    """How a format stores weights and computes, as the emulation reproduces it."""

    key: str
    description: str
    weights: str
    """none | float16 | int8-per-channel | uint8-per-tensor"""
    activations: str = "float32"
    """float32 | float16 | uint8"""
    fold_batchnorm: bool = True
    min_quantized_elements: int = 0
    """Weight tensors with fewer values stay as they are (the converter skips them)."""
    output_step: float | None = None
    """Probabilities come out quantized in steps of this size (full-integer outputs)."""
    dynamic_inputs: bool = False
    """Layers with int8 weights quantize their input to int8 per image as they run (TFLite's
    dynamic-range kernels)."""


PRECISIONS: dict[str, Precision] = {
    p.key: p
    for p in (
        Precision("float16-weights", "weights rounded to float16", "float16"),
        Precision(
            "float16-weights-unfolded",
            "weights rounded to float16, BatchNorm kept apart (TF.js)",
            "float16",
            fold_batchnorm=False,
        ),
        Precision(
            "float16-compute", "weights and every layer output in float16", "float16", "float16"
        ),
        Precision(
            "int8-weights-float16-compute",
            "int8 weights per output channel (tensors over 2048 values), float16 compute",
            "int8-per-channel",
            "float16",
            min_quantized_elements=2049,
        ),
        Precision(
            "int8-dynamic-range",
            "int8 weights per output channel (tensors of 1024 values or more), their layers' "
            "inputs quantized per image as they run",
            "int8-per-channel",
            min_quantized_elements=1024,
            dynamic_inputs=True,
        ),
        Precision(
            "uint8-weights-per-tensor",
            "uint8 kernels per tensor, vectors in float32, BatchNorm kept apart (TF.js)",
            "uint8-per-tensor",
            fold_batchnorm=False,
        ),
        Precision(
            "int8-full",
            "int8 weights per output channel, uint8 activations, outputs in steps of 1/256",
            "int8-per-channel",
            "uint8",
            output_step=1 / 256,
        ),
    )
}


def precision(key: str) -> Precision:
    try:
        return PRECISIONS[key]
    except KeyError:
        raise UsageError(
            f"unknown precision {key!r}: choose one of {', '.join(PRECISIONS)}"
        ) from None


# ------------------------------------------------------------------ weights


def quantize_symmetric(values: np.ndarray, axes: tuple[int, ...], bits: int = 8) -> np.ndarray:
    """Symmetric linear quantization (zero point 0), one scale per slice over ``axes``."""
    values = np.asarray(values, np.float64)
    largest = np.abs(values).max(axis=axes, keepdims=True)
    steps = 2 ** (bits - 1) - 1
    scale = np.where(largest > 0, largest / steps, 1.0)
    return np.clip(np.round(values / scale), -steps, steps) * scale


def _channel_axes(keras, layer, values: np.ndarray) -> tuple[int, ...]:
    """The axes one output channel's weights span: all but the last, except depthwise
    kernels (height, width, in, multiplier), whose channels are (in, multiplier) pairs."""
    if isinstance(layer, keras.layers.DepthwiseConv2D) and values.ndim == 4:
        return (0, 1)
    return tuple(range(values.ndim - 1))


def _store(keras, spec: Precision, layer, name: str, values: np.ndarray) -> np.ndarray:
    """``values`` as the format stores them (returned as float64)."""
    values = np.asarray(values, np.float64)
    if spec.weights == "float16":
        return values.astype(np.float16).astype(np.float64)
    is_kernel = values.ndim >= 2 and name != "bias"
    if not is_kernel or values.size < spec.min_quantized_elements:
        return values.astype(np.float16) if spec.activations == "float16" else values
    if spec.weights == "int8-per-channel":
        quantized = quantize_symmetric(values, _channel_axes(keras, layer, values))
        return quantized.astype(np.float16) if spec.activations == "float16" else quantized
    if spec.weights == "uint8-per-tensor":
        from .export.tfjs import quantize_uint8

        codes, low, scale = quantize_uint8(values)
        return codes.astype(np.float64) * scale + low
    return values


def _short(variable) -> str:
    return variable.path.split("/")[-1]


def _layers(model) -> list:
    return list(model._flatten_layers(include_self=False))


def _folded_pairs(keras, model) -> list[tuple[object, object]]:
    """(producer, BatchNormalization) pairs the converters fold: a convolution or dense
    layer without activation whose only consumer is the BatchNormalization."""
    producers = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    pairs = []
    for layer in _layers(model):
        if not isinstance(layer, keras.layers.BatchNormalization) or len(layer._inbound_nodes) != 1:
            continue
        inputs = layer._inbound_nodes[0].input_tensors
        if len(inputs) != 1:
            continue
        producer = inputs[0]._keras_history.operation
        if (
            isinstance(producer, producers)
            and type(producer) in producers
            and _is_linear(keras, producer)
            and len(producer._outbound_nodes) == 1
            and {_short(v) for v in producer.weights} <= {"kernel", "bias"}
        ):
            pairs.append((producer, layer))
    return pairs


def _is_linear(keras, layer) -> bool:
    return getattr(layer, "activation", None) in (None, keras.activations.linear)


def _fold(keras, producer, norm) -> tuple[np.ndarray, np.ndarray]:
    """The kernel and bias of ``producer`` followed by ``norm``, in float64."""
    weights = {_short(v): np.asarray(v.numpy(), np.float64) for v in producer.weights}
    stats = {_short(v): np.asarray(v.numpy(), np.float64) for v in norm.weights}
    factor = stats.get("gamma", 1.0) / np.sqrt(stats["moving_variance"] + norm.epsilon)
    kernel = weights["kernel"]
    if isinstance(producer, keras.layers.DepthwiseConv2D):  # channels: (in, multiplier) pairs
        folded = kernel.reshape(*kernel.shape[:2], -1) * factor
    else:
        folded = kernel * factor
    bias = (weights.get("bias", 0.0) - stats["moving_mean"]) * factor + stats.get("beta", 0.0)
    return folded.reshape(kernel.shape), bias


@contextlib.contextmanager
def stored_weights(keras, model, spec: Precision) -> Iterator[None]:
    """Within the block, ``model``'s weights are as ``spec`` stores them; restored after."""
    saved: list[tuple[object, np.ndarray]] = []

    def put(variable, values) -> None:
        saved.append((variable, variable.numpy()))
        variable.assign(np.asarray(values, variable.dtype).reshape(variable.shape))

    try:
        folded: set[int] = set()
        if spec.fold_batchnorm:
            for producer, norm in _folded_pairs(keras, model):
                kernel, bias = _fold(keras, producer, norm)
                kernel = _store(keras, spec, producer, "kernel", kernel)
                bias = _store(keras, spec, producer, "bias", bias)
                for variable in producer.weights:
                    put(variable, kernel if _short(variable) == "kernel" else 0.0)
                identity = {"gamma": 1.0, "beta": bias, "moving_mean": 0.0,
                            "moving_variance": 1.0 - norm.epsilon}  # fmt: skip
                for variable in norm.weights:
                    put(variable, np.broadcast_to(identity[_short(variable)], variable.shape))
                folded |= {id(producer), id(norm)}
        for layer in _layers(model):
            if id(layer) in folded:
                continue
            for variable in layer.weights:
                if np.issubdtype(np.dtype(variable.dtype), np.floating):
                    put(variable, _store(keras, spec, layer, _short(variable), variable.numpy()))
        yield
    finally:
        for variable, values in reversed(saved):
            variable.assign(values)


# ------------------------------------------------------------------ activations


def _quantization_point(keras, layer) -> bool:
    """Whether a reduced-precision model rounds or quantizes this layer's output: not where
    the converter fuses it with the BatchNormalization or activation that alone consumes it."""
    if not isinstance(
        layer,
        (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense,
         keras.layers.BatchNormalization, keras.layers.Add),
    ) or not _is_linear(keras, layer):  # fmt: skip
        return True
    fused = (keras.layers.BatchNormalization, keras.layers.ReLU, keras.layers.Activation)
    consumers = [node.operation for node in layer._outbound_nodes]
    return not consumers or not all(isinstance(c, fused) for c in consumers)


def _uint8(values: np.ndarray) -> np.ndarray:
    """Affine uint8 over the tensor's range (which always holds 0), back to float."""
    low, high = min(0.0, float(values.min())), max(0.0, float(values.max()))
    if high == low:
        return values
    scale = (high - low) / 255
    zero = np.round(-low / scale)
    return ((np.clip(np.round(values / scale) + zero, 0, 255) - zero) * scale).astype(np.float32)


def _uint8_per_image(values: np.ndarray) -> np.ndarray:
    return np.stack([_uint8(image) for image in np.asarray(values, np.float32)])


def _input_rule(keras, spec: Precision) -> Callable | None:
    """Dynamic-range kernels quantize the input of each layer whose weights are int8."""
    if not spec.dynamic_inputs:
        return None
    hybrid = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)

    def quantized(layer) -> bool:
        return isinstance(layer, hybrid) and any(
            _short(v) == "kernel" and np.prod(v.shape) >= spec.min_quantized_elements
            for v in layer.weights
        )

    return lambda layer, values: _uint8_per_image(values) if quantized(layer) else values


def _activation_rule(keras, spec: Precision) -> Callable | None:
    if spec.activations == "float16":
        return lambda layer, values: (
            values.astype(np.float16).astype(np.float32)
            if _quantization_point(keras, layer)
            else values
        )
    if spec.activations == "uint8":
        return lambda layer, values: _uint8(values) if _quantization_point(keras, layer) else values
    return None


# ------------------------------------------------------------------ running the graph


def run_layers(keras, model, inputs: list, after: Callable | None, before: Callable | None = None):
    """Run a functional model layer by layer (nested models included), passing each layer's
    single input through ``before(layer, numpy_values)`` and each output through
    ``after(layer, numpy_values)``; returns the model's outputs."""
    functional = getattr(model, "_functional", None) or model
    values = {id(tensor): value for tensor, value in zip(functional.inputs, inputs, strict=True)}
    for depth in sorted(functional._nodes_by_depth, reverse=True):
        for node in functional._nodes_by_depth[depth]:
            layer = node.operation
            if isinstance(layer, keras.layers.InputLayer):
                continue
            args, kwargs = node.arguments.fill_in(values)
            if isinstance(layer, keras.Model):
                outputs = run_layers(keras, layer, keras.tree.flatten(args), after, before)
            else:
                if before is not None and len(args) == 1 and not isinstance(args[0], list | tuple):
                    args = (before(layer, np.asarray(args[0])),)
                if "training" in layer._call_signature.parameters:
                    kwargs = {**kwargs, "training": False}
                outputs = keras.tree.flatten(layer(*args, **kwargs))
                if after is not None:
                    outputs = [after(layer, np.asarray(value)) for value in outputs]
            for tensor, value in zip(node.outputs, outputs, strict=True):
                values[id(tensor)] = value
    return [np.asarray(values[id(tensor)]) for tensor in functional.outputs]


def emulate(model, pixels: np.ndarray, key: str, *, batch_size: int = 64) -> np.ndarray:
    """The probabilities ``model`` gives on uint8 ``pixels`` at precision ``key``.

    Activation ranges of full-integer emulation come from all of ``pixels``
    together, as a converter's calibration pass takes them from its images.
    """
    from ._tf import import_keras

    keras = import_keras()
    spec = precision(key)
    if not hasattr(getattr(model, "_functional", None) or model, "_nodes_by_depth"):
        raise UsageError(
            f"{model.name}: a subclassed Keras model cannot be run layer by layer; "
            "validate quantized formats against a functional or Sequential model"
        )
    after, before = _activation_rule(keras, spec), _input_rule(keras, spec)
    x = pixels.astype(np.float32) / np.float32(255)
    if spec.activations == "float16":  # the scaled image is a float16 tensor too
        x = x.astype(np.float16).astype(np.float32)
    with stored_weights(keras, model, spec):
        if spec.activations == "uint8":  # ranges over the whole set: one pass
            (outputs,) = run_layers(keras, model, [x], after, before)
        else:
            outputs = np.concatenate(
                [
                    run_layers(keras, model, [x[start : start + batch_size]], after, before)[0]
                    for start in range(0, max(len(x), 1), batch_size)
                ]
            )
    outputs = np.asarray(outputs, np.float32)
    if spec.output_step:
        outputs = np.clip(np.round(outputs / spec.output_step), 0, 255) * spec.output_step
    return outputs.astype(np.float32)


def main(argv=None) -> None:
    """Print emulated and real differences from the reference for artefacts of one model."""
    import argparse

    from .formats import by_key, format_of
    from .images import load_images, sample_images
    from .resolve import MEASURE, SOURCE, resolve_model

    parser = argparse.ArgumentParser(prog="python -m nsfw_mobile.precision")
    parser.add_argument("model", help="reference: .keras, model.json or 'pretrained'")
    parser.add_argument("artifacts", nargs="+")
    parser.add_argument("--images", nargs="*", default=None)
    arguments = parser.parse_args(argv)
    source = resolve_model(arguments.model, use=SOURCE).load_source()
    batch = load_images(arguments.images or sample_images(), source.input_size)
    from .runtime.keras_runner import KerasRunner

    with KerasRunner(source) as reference:
        expected = reference.predict(batch.pixels)
    for path in arguments.artifacts:
        fmt = format_of(path)
        key = fmt.tolerance.precision
        with resolve_model(path, use=MEASURE).open_runner() as runner:
            actual = np.abs(runner.predict(batch.pixels) - expected)
        emulated = np.abs(emulate(source.model, batch.pixels, key) - expected) if key else None
        print(
            f"{by_key(fmt.key).key:<20} artefact max {actual.max():.4f} mean {actual.mean():.5f}"
            + (
                f" | emulated {key}: max {emulated.max():.4f} mean {emulated.mean():.5f}"
                if emulated is not None
                else ""
            )
        )


if __name__ == "__main__":
    main()
