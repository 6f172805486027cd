"""A numpy executor for Core ML *neural network* models (.mlmodel), for Linux.

It runs the layers coremltools emits for MobileNet-family classifiers and the
common neighbours of those layers. Every layer is checked when the model is
opened: an unknown layer type (or an unknown variant of a known one) raises
UnsupportedOpError naming the layer; the executor never guesses.

Blobs are numpy arrays with a leading batch dimension of 1, laid out as Core
ML lays them out: images and feature maps (1, C, H, W), vectors (1, C) for the
rank-aware (ND) layers, so layers that address "the channel axis" use axis -3
of rank-4 blobs as Core ML's rank-5 layers do.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import ModelFileError, UnsupportedOpError
from . import numpy_ops as ops
from .coreml_spec import class_labels, model_body


def decode_weights(params, shape: tuple[int, ...] | None = None, where: str = "") -> np.ndarray:
    """WeightParams -> float32 array: float32, float16, raw float and 1-8 bit quantized."""
    if len(params.floatValue):
        values = np.asarray(params.floatValue, np.float32)
    elif params.float16Value:
        values = np.frombuffer(params.float16Value, np.float16).astype(np.float32)
    elif params.HasField("quantization"):
        values = _dequantize(params, shape, where)
    elif params.rawValue:
        values = np.frombuffer(params.rawValue, np.float32).copy()
    elif params.int8RawValue:
        raise UnsupportedOpError(f"{where}: int8 weights without quantization parameters")
    else:
        values = np.zeros(0, np.float32)
    return values.reshape(shape) if shape is not None else values


def _dequantize(params, shape, where):
    quantization = params.quantization
    bits = int(quantization.numberOfBits)
    count = int(np.prod(shape)) if shape else None
    raw = np.frombuffer(params.rawValue, np.uint8)
    if bits == 8:
        codes = raw
    elif bits in (1, 2, 4):
        # MSB-first bit packing, as coremltools' quantization_utils writes it.
        bitstream = np.unpackbits(raw)[: count * bits].reshape(count, bits)
        codes = bitstream @ (1 << np.arange(bits - 1, -1, -1))
    else:
        raise UnsupportedOpError(f"{where}: {bits}-bit quantized weights are not supported")
    kind = quantization.WhichOneof("QuantizationType")
    if kind == "lookupTableQuantization":
        table = np.asarray(quantization.lookupTableQuantization.floatValue, np.float32)
        return table[codes.astype(np.int64)]
    if kind == "linearQuantization":
        scale = np.asarray(quantization.linearQuantization.scale, np.float32)
        bias = np.asarray(quantization.linearQuantization.bias, np.float32)
        channels = len(scale)
        grid = (
            codes.astype(np.float32).reshape(channels, -1)
            if channels > 1
            else codes.astype(np.float32)[None]
        )
        return (grid * scale[:, None] + bias[:, None]).reshape(-1)
    raise UnsupportedOpError(f"{where}: unknown weight quantization {kind!r}")


def _conv_pads(params, height, width, kernel, strides, dilations, where):
    mode = params.WhichOneof("ConvolutionPaddingType")
    if mode == "valid":
        borders = params.valid.paddingAmounts.borderAmounts
        if len(borders) == 0:
            return (0, 0, 0, 0)
        return (
            borders[0].startEdgeSize,
            borders[0].endEdgeSize,
            borders[1].startEdgeSize,
            borders[1].endEdgeSize,
        )
    if mode == "same":
        heavy_end = params.same.asymmetryMode == 0  # BOTTOM_RIGHT_HEAVY
        top, bottom = ops.split_padding(
            ops.same_padding(height, kernel[0], strides[0], dilations[0]), heavy_end
        )
        left, right = ops.split_padding(
            ops.same_padding(width, kernel[1], strides[1], dilations[1]), heavy_end
        )
        return (top, bottom, left, right)
    raise UnsupportedOpError(f"{where}: padding mode {mode!r} is not supported")


Layer = Callable[[list[np.ndarray]], list[np.ndarray]]


def _convolution(p, where) -> Layer:
    if p.isDeconvolution:
        raise UnsupportedOpError(f"{where}: deconvolution is not supported")
    groups = p.nGroups or 1
    kernel = tuple(p.kernelSize) or (3, 3)
    strides = tuple(p.stride) or (1, 1)
    dilations = tuple(p.dilationFactor) or (1, 1)
    weight = decode_weights(p.weights, (p.outputChannels, p.kernelChannels, *kernel), where)
    bias = decode_weights(p.bias, (p.outputChannels,), where) if p.hasBias else None

    def run(inputs):
        x = inputs[0]
        pads = _conv_pads(p, x.shape[-2], x.shape[-1], kernel, strides, dilations, where)
        return [
            ops.conv2d(
                x, weight, bias, strides=strides, dilations=dilations, groups=groups, pads=pads
            )
        ]

    return run


def _inner_product(p, where) -> Layer:
    weight = decode_weights(p.weights, (p.outputChannels, p.inputChannels), where)
    bias = decode_weights(p.bias, (p.outputChannels,), where) if p.hasBias else None

    def run(inputs):
        x = inputs[0]
        rank5_style = x.ndim >= 3 and x.shape[-2:] == (1, 1)
        vector = x[..., 0, 0] if rank5_style else x
        y = vector @ weight.T + (0 if bias is None else bias)
        return [y[..., None, None] if rank5_style else y]

    return run


def _batchnorm(p, where) -> Layer:
    """Inference batchnorm from stored statistics. (coremltools folds a Keras 3
    BatchNormalization into the convolution before it, or writes it as multiply and add.)"""
    if p.computeMeanVar or p.instanceNormalization:
        raise UnsupportedOpError(
            f"{where}: batchnorm computing its own mean/variance is not supported"
        )
    c = p.channels
    gamma, beta, mean, variance = (
        decode_weights(getattr(p, f), (c,), where) for f in ("gamma", "beta", "mean", "variance")
    )
    scale = gamma / np.sqrt(variance + p.epsilon)
    shift = beta - mean * scale

    def run(inputs):
        x = inputs[0]
        shape = (c,) + (1,) * 2 if x.ndim >= 3 else (c,)
        return [x * scale.reshape(shape) + shift.reshape(shape)]

    return run


_ACTIVATIONS: dict[str, Callable] = {
    "ReLU": lambda a, x: np.maximum(x, 0),
    "leakyReLU": lambda a, x: np.where(x >= 0, x, a.alpha * x),
    "thresholdedReLU": lambda a, x: np.where(x > a.alpha, x, 0),
    "tanh": lambda a, x: np.tanh(x),
    "scaledTanh": lambda a, x: a.alpha * np.tanh(a.beta * x),
    "sigmoid": lambda a, x: 1 / (1 + np.exp(-x)),
    "sigmoidHard": lambda a, x: np.clip(a.alpha * x + a.beta, 0, 1),
    "linear": lambda a, x: a.alpha * x + a.beta,
    "ELU": lambda a, x: np.where(x >= 0, x, a.alpha * (np.exp(x) - 1)),
    "softsign": lambda a, x: x / (1 + np.abs(x)),
    "softplus": lambda a, x: np.logaddexp(0, x),
}


def _activation(p, where) -> Layer:
    kind = p.WhichOneof("NonlinearityType")
    if kind not in _ACTIVATIONS:
        raise UnsupportedOpError(f"{where}: activation {kind!r} is not supported")
    params, function = getattr(p, kind), _ACTIVATIONS[kind]
    return lambda inputs: [function(params, inputs[0]).astype(np.float32)]


_UNARY = {
    0: lambda x, p: np.sqrt(x),  # SQRT
    1: lambda x, p: 1 / np.sqrt(x + p.epsilon),  # RSQRT
    2: lambda x, p: 1 / (x + p.epsilon),  # INVERSE
    3: lambda x, p: np.power(x, p.alpha),  # POWER
    4: lambda x, p: np.exp(x),  # EXP
    5: lambda x, p: np.log(x + p.epsilon),  # LOG
    6: lambda x, p: np.abs(x),  # ABS
    7: lambda x, p: np.maximum(x, p.alpha),  # THRESHOLD
}


def _unary(p, where) -> Layer:
    if p.type not in _UNARY:
        raise UnsupportedOpError(f"{where}: unary function type {p.type} is not supported")
    function = _UNARY[p.type]
    scale, shift = (p.scale if p.scale != 0 else 1.0), p.shift
    return lambda inputs: [function(inputs[0] * scale + shift, p).astype(np.float32)]


def _elementwise(combine) -> Callable:
    def build(p, where) -> Layer:
        def run(inputs):
            if len(inputs) == 1:
                return [combine(inputs[0], np.float32(p.alpha))]
            out = inputs[0]
            for other in inputs[1:]:
                out = combine(out, other)
            return [out]

        return run

    return build


def _broadcastable(combine) -> Callable:
    return lambda p, where: lambda inputs: [combine(inputs[0], inputs[1])]


def _border_amounts(borders, where) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) from a BorderAmounts list of (height, width) or none."""
    if len(borders) == 0:
        return (0, 0, 0, 0)
    if len(borders) != 2:
        raise UnsupportedOpError(f"{where}: {len(borders)} padding border amounts, expected 2")
    return (
        borders[0].startEdgeSize,
        borders[0].endEdgeSize,
        borders[1].startEdgeSize,
        borders[1].endEdgeSize,
    )


def _pooling(p, where) -> Layer:
    """PoolingLayerParams: max or average, valid (explicit amounts), same (TensorFlow's
    split, the odd cell at the end unless asymmetryMode is TOP_LEFT_HEAVY) or
    includeLastPixel (symmetric amounts, output rounded up, a last window that
    would start in the end padding dropped when either axis is padded).
    ``avgPoolExcludePadding`` decides whether padded cells count in an average."""
    kind = {0: "max", 1: "avg"}.get(p.type)
    if kind is None:
        raise UnsupportedOpError(f"{where}: L2 pooling is not supported")
    kernel, strides = tuple(p.kernelSize) or (3, 3), tuple(p.stride) or (1, 1)
    mode = p.WhichOneof("PoolingPaddingType")
    if not p.globalPooling and mode not in ("valid", "same", "includeLastPixel"):
        raise UnsupportedOpError(f"{where}: pooling padding {mode!r} is not supported")
    if mode == "includeLastPixel" and len(p.includeLastPixel.paddingAmounts) not in (0, 2):
        raise UnsupportedOpError(f"{where}: includeLastPixel needs 2 padding amounts")
    fixed_pads = _border_amounts(p.valid.paddingAmounts.borderAmounts, where)

    def run(inputs):
        x = inputs[0]
        if p.globalPooling:
            reduce = np.max if kind == "max" else np.mean
            return [reduce(x, axis=(-2, -1), keepdims=True)]
        ceil_mode, ceil_trim = False, None
        if mode == "valid":
            pads = fixed_pads
        elif mode == "same":
            heavy_end = p.same.asymmetryMode == 0  # BOTTOM_RIGHT_HEAVY
            top, bottom = ops.split_padding(
                ops.same_padding(x.shape[-2], kernel[0], strides[0]), heavy_end
            )
            left, right = ops.split_padding(
                ops.same_padding(x.shape[-1], kernel[1], strides[1]), heavy_end
            )
            pads = (top, bottom, left, right)
        else:  # includeLastPixel
            pad_h, pad_w = tuple(p.includeLastPixel.paddingAmounts) or (0, 0)
            pads, ceil_mode = (pad_h, pad_h, pad_w, pad_w), True
            ceil_trim = (pad_h > 0 or pad_w > 0,) * 2
        return [
            ops.pool2d(
                x,
                kind,
                kernel,
                strides,
                pads,
                exclude_padding=p.avgPoolExcludePadding,
                ceil_mode=ceil_mode,
                ceil_trim=ceil_trim,
            )
        ]

    return run


def _padding(p, where) -> Layer:
    kind = p.WhichOneof("PaddingType")
    borders = p.paddingAmounts.borderAmounts
    (top, bottom), (left, right) = (
        ((b.startEdgeSize, b.endEdgeSize) for b in borders)
        if len(borders) == 2
        else ((0, 0), (0, 0))
    )
    mode = {"constant": "constant", "reflection": "reflect", "replication": "replicate"}[kind]
    value = p.constant.value if kind == "constant" else 0.0

    def run(inputs):
        x = inputs[0]
        pairs = [(0, 0)] * (x.ndim - 2) + [(top, bottom), (left, right)]
        return [ops.pad(x, pairs, mode, value)]

    return run


def _reshape_static(p, where) -> Layer:
    shape = tuple(int(d) for d in p.targetShape)
    return lambda inputs: [inputs[0].reshape(shape)]


def _reshape(p, where) -> Layer:
    if p.mode != 0:
        raise UnsupportedOpError(f"{where}: reshape mode CHANNEL_LAST is not supported")
    shape = tuple(int(d) for d in p.targetShape)[-3:]
    return lambda inputs: [inputs[0].reshape((1, *shape))]


def _flatten(p, where) -> Layer:
    def run(inputs):
        x = inputs[0]
        if p.mode == 1 and x.ndim >= 3:  # CHANNEL_LAST
            x = np.moveaxis(x, -3, -1)
        return [x.reshape(x.shape[0], -1, 1, 1)]

    return run


def _transpose(p, where) -> Layer:
    axes = tuple(int(a) for a in p.axes)
    return lambda inputs: [np.transpose(inputs[0], axes)]


def _softmax(p, where) -> Layer:
    return lambda inputs: [ops.softmax(inputs[0], axis=-3 if inputs[0].ndim >= 3 else -1)]


def _softmax_nd(p, where) -> Layer:
    return lambda inputs: [ops.softmax(inputs[0], axis=int(p.axis))]


def _batched_matmul(p, where) -> Layer:
    if p.transposeA or p.transposeB:
        raise UnsupportedOpError(f"{where}: transposed batched matmul is not supported")
    weight = None
    if p.weightMatrixFirstDimension:
        # Stored output-major, (second, first), like innerProduct's (out, in).
        weight = decode_weights(
            p.weights, (p.weightMatrixSecondDimension, p.weightMatrixFirstDimension), where
        ).T
    bias = decode_weights(p.bias, (p.weightMatrixSecondDimension,), where) if p.hasBias else 0

    def run(inputs):
        if weight is not None:
            return [inputs[0] @ weight + bias]
        return [inputs[0] @ inputs[1]]

    return run


def _load_constant(p, where) -> Layer:
    shape = tuple(int(d) for d in p.shape)
    value = decode_weights(p.data, shape, where)[None]
    return lambda inputs: [value]


def _load_constant_nd(p, where) -> Layer:
    value = decode_weights(p.data, tuple(int(d) for d in p.shape), where)
    return lambda inputs: [value]


def _reduce(p, where) -> Layer:
    modes = {3: np.mean, 1: np.sum, 5: np.max, 6: np.min}  # MEAN, SUM, MAX, MIN
    axes = {0: (-3, -2, -1), 1: (-2, -1), 2: (-3,), 3: (-2,), 4: (-1,)}  # CHW, HW, C, H, W
    if p.mode not in modes or p.axis not in axes:
        raise UnsupportedOpError(
            f"{where}: reduce mode {p.mode} over axis {p.axis} is not supported"
        )
    return lambda inputs: [modes[p.mode](inputs[0], axis=axes[p.axis], keepdims=True)]


def _reduce_mean(p, where) -> Layer:
    def run(inputs):
        x = inputs[0]
        axes = None if p.reduceAll else tuple(int(a) for a in p.axes)
        return [np.mean(x, axis=axes, keepdims=bool(p.keepDims))]

    return run


def _clip(p, where) -> Layer:
    return lambda inputs: [np.clip(inputs[0], p.minVal, p.maxVal)]


def _concat(p, where) -> Layer:
    """ConcatLayerParams: along the channel axis, in the order of the layer's inputs."""
    if p.sequenceConcat:
        raise UnsupportedOpError(f"{where}: sequence concat is not supported")
    return lambda inputs: [np.concatenate(inputs, axis=-3)]


def _concat_nd(p, where) -> Layer:
    return lambda inputs: [ops.concat(inputs, int(p.axis), interleave=p.interleave)]


def _squeeze(p, where) -> Layer:
    def run(inputs):
        x = inputs[0]
        return [
            np.squeeze(x) if p.squeezeAll else np.squeeze(x, axis=tuple(int(a) for a in p.axes))
        ]

    return run


def _static_slices(begin, begin_mask, end, end_mask, stride, rank: int) -> tuple:
    """Python slices for a static slice over the last ``len(begin)`` of ``rank`` axes."""
    begin_mask = [] if begin_mask is None else [bool(m) for m in np.ravel(begin_mask)]
    end_mask = [] if end_mask is None else [bool(m) for m in np.ravel(end_mask)]
    stride = [] if stride is None else [int(v) for v in np.ravel(stride)]
    slices = [slice(None)] * rank
    offset = rank - len(begin)
    for axis in range(len(begin)):
        start = None if begin_mask and begin_mask[axis] else int(begin[axis])
        stop = None if end_mask and end_mask[axis] else int(end[axis])
        step = stride[axis] if stride else 1
        slices[offset + axis] = slice(start, stop, step)
    return tuple(slices)


def _slice_static(p, where) -> Layer:
    def run(inputs):
        x = inputs[0]
        y = x[_static_slices(p.beginIds, p.beginMasks, p.endIds, p.endMasks, p.strides, x.ndim)]
        squeeze = [i for i, flag in enumerate(p.squeezeMasks) if flag]
        if squeeze:
            offset = x.ndim - len(p.beginIds)
            y = np.squeeze(y, axis=tuple(offset + i for i in squeeze))
        return [y]

    return run


def _expand_dims(p, where) -> Layer:
    def run(inputs):
        x = inputs[0]
        for axis in sorted(int(a) for a in p.axes):
            x = np.expand_dims(x, axis)
        return [x]

    return run


BUILDERS: dict[str, Callable] = {
    "convolution": _convolution,
    "innerProduct": _inner_product,
    "batchnorm": _batchnorm,
    "activation": _activation,
    "unary": _unary,
    "add": _elementwise(np.add),
    "multiply": _elementwise(np.multiply),
    "addBroadcastable": _broadcastable(np.add),
    "multiplyBroadcastable": _broadcastable(np.multiply),
    "subtractBroadcastable": _broadcastable(np.subtract),
    "pooling": _pooling,
    "padding": _padding,
    "reshapeStatic": _reshape_static,
    "reshape": _reshape,
    "flatten": _flatten,
    "transpose": _transpose,
    "softmax": _softmax,
    "softmaxND": _softmax_nd,
    "batchedMatmul": _batched_matmul,
    "loadConstant": _load_constant,
    "loadConstantND": _load_constant_nd,
    "reduce": _reduce,
    "reduceMean": _reduce_mean,
    "clip": _clip,
    "concat": _concat,
    "concatND": _concat_nd,
    "squeeze": _squeeze,
    "expandDims": _expand_dims,
    "sliceStatic": _slice_static,
}


def image_to_blob(pixels: np.ndarray, feature, preprocessing) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> the (1, C, H, W) float blob the model's image input makes."""
    color = feature.type.imageType.colorSpace
    rgb = pixels.astype(np.float32)
    if color == 10:  # GRAYSCALE
        raise UnsupportedOpError(
            f"input {feature.name!r}: grayscale image inputs are not supported"
        )
    channels = rgb[..., ::-1] if color == 30 else rgb  # BGR
    blob = channels.transpose(2, 0, 1)[None]
    if preprocessing is not None:
        bias = [preprocessing.redBias, preprocessing.greenBias, preprocessing.blueBias]
        if color == 30:
            bias = bias[::-1]
        scale = preprocessing.channelScale or 1.0
        blob = blob * np.float32(scale) + np.asarray(bias, np.float32).reshape(1, 3, 1, 1)
    return blob.astype(np.float32)


class NeuralNetworkExecutor:
    """Runs a Core ML neural network spec with numpy, one image at a time."""

    def __init__(self, spec, name: str = "model"):
        self.spec = spec
        self.body = model_body(spec)
        if self.body is None:
            raise ModelFileError(f"{name}: not a neural network model")
        self.layers = []
        for layer in self.body.layers:
            kind = layer.WhichOneof("layer")
            where = f"Core ML layer {layer.name!r} ({kind})"
            if kind not in BUILDERS:
                raise UnsupportedOpError(
                    f"{where}: layer type {kind!r} is not supported by the numpy executor"
                )
            self.layers.append(
                (
                    layer.name,
                    list(layer.input),
                    list(layer.output),
                    BUILDERS[kind](getattr(layer, kind), where),
                )
            )
        self.image_inputs = [
            f for f in spec.description.input if f.type.WhichOneof("Type") == "imageType"
        ]
        if len(self.image_inputs) != 1:
            raise UnsupportedOpError(
                f"{name}: expected one image input, found {len(self.image_inputs)}"
            )
        self.scalers = {
            item.featureName or self.image_inputs[0].name: item.scaler
            for item in self.body.preprocessing
            if item.WhichOneof("preprocessor") == "scaler"
        }
        if any(item.WhichOneof("preprocessor") != "scaler" for item in self.body.preprocessing):
            raise UnsupportedOpError(f"{name}: only scaler image preprocessing is supported")
        self.labels = class_labels(spec)
        self.probabilities_name = spec.description.predictedProbabilitiesName
        self.label_name = spec.description.predictedFeatureName

    def run(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        feature = self.image_inputs[0]
        blobs = {feature.name: image_to_blob(pixels, feature, self.scalers.get(feature.name))}
        for name, inputs, outputs, layer in self.layers:
            try:
                results = layer([blobs[i] for i in inputs])
            except KeyError as exc:
                raise ModelFileError(
                    f"Core ML layer {name!r} reads blob {exc} that no layer wrote"
                ) from None
            for output, value in zip(outputs, results):
                blobs[output] = np.asarray(value, np.float32)
        return blobs

    def predict(self, pixels: np.ndarray) -> dict:
        """Core ML's output dictionary for one uint8 RGB image (H, W, 3)."""
        blobs = self.run(pixels)
        source = self.body.labelProbabilityLayerName or self.layers[-1][2][0]
        probabilities = blobs[source].reshape(-1)
        if len(probabilities) != len(self.labels):
            raise ModelFileError(
                f"probability blob {source!r} has {len(probabilities)} values "
                f"for {len(self.labels)} labels"
            )
        return {
            self.label_name: self.labels[int(np.argmax(probabilities))],
            self.probabilities_name: {
                label: float(p) for label, p in zip(self.labels, probabilities)
            },
        }
