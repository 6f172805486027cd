"""A numpy executor for Core ML *ML Programs* (.mlpackage), for Linux.

The program is read back into coremltools' Python MIL form
(``converters.mil.frontend.milproto.load``), which decodes constants and
weight blobs; each operation is then run with numpy. Compressed weights
(``constexpr_*`` ops: linear-quantized, palettized, blockwise) are decoded.

``emulate_fp16``: the device computes float16 programs in float16. With it on,
every tensor the program declares as fp16 is rounded to float16 after the op
that makes it, as on the device; with it off, the program runs in float32
throughout (its float16 weights stay as stored), the ideal it approximates.

Every op is checked when the program is opened: an op type the executor does
not know raises UnsupportedOpError naming it and its output; nothing is guessed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import ModelFileError, UnsupportedOpError
from . import numpy_ops as ops
from .coreml_spec import classify_labels, load_spec, main_block

WEIGHTS_SUBDIR = Path("Data") / "com.apple.CoreML" / "weights"


# ------------------------------------------------------------------ kernels


def _pads(kind, pad, x_shape, kernel, strides, dilations):
    height, width = x_shape[-2:]
    if kind == "valid":
        return (0, 0, 0, 0)
    if kind == "custom":
        return tuple(int(p) for p in pad)
    heavy_end = kind == "same"
    if kind not in ("same", "same_lower"):
        raise UnsupportedOpError(f"pad_type {kind!r} is not supported")
    top, bottom = ops.split_padding(
        ops.same_padding(height, kernel[0], strides[0], dilations[0]), heavy_end
    )
    left, right = ops.split_padding(
        ops.same_padding(width, kernel[1], strides[1], dilations[1]), heavy_end
    )
    return (top, bottom, left, right)


def _conv(a):
    weight = a["weight"]
    strides = tuple(a.get("strides", (1, 1)))
    dilations = tuple(a.get("dilations", (1, 1)))
    pads = _pads(
        str(a.get("pad_type", "valid")),
        a.get("pad"),
        a["x"].shape,
        weight.shape[2:],
        strides,
        dilations,
    )
    return ops.conv2d(
        a["x"],
        weight,
        a.get("bias"),
        strides=strides,
        dilations=dilations,
        groups=int(a.get("groups", 1)),
        pads=pads,
    )


def _pool(kind):
    """max_pool / avg_pool as coremltools documents them (ops/defs/iOS15/pool.py): pad_type
    valid, same (the odd cell at the end), same_lower (at the start) or custom (``pad``);
    ``ceil_mode`` rounds the output up; ``exclude_padding_from_average`` defaults to False."""

    def run(a):
        kernel, strides = tuple(a["kernel_sizes"]), tuple(a.get("strides", (1, 1)))
        pads = _pads(str(a["pad_type"]), a.get("pad"), a["x"].shape, kernel, strides, (1, 1))
        return ops.pool2d(
            a["x"],
            kind,
            kernel,
            strides,
            pads,
            exclude_padding=bool(a.get("exclude_padding_from_average", False)),
            ceil_mode=bool(a.get("ceil_mode", False)),
        )

    return run


def _pad(a):
    x, pad = a["x"], [int(p) for p in a["pad"]]
    pairs = [(0, 0)] * (x.ndim - len(pad) // 2) + [
        (pad[i], pad[i + 1]) for i in range(0, len(pad), 2)
    ]
    return ops.pad(x, pairs, str(a.get("mode", "constant")), float(a.get("constant_val", 0.0)))


def _matmul(a):
    x, y = a["x"], a["y"]
    if a.get("transpose_x"):
        x = np.swapaxes(x, -1, -2)
    if a.get("transpose_y"):
        y = np.swapaxes(y, -1, -2)
    return x @ y


def _reduce(function):
    def run(a):
        axes = a.get("axes")
        axes = None if axes is None else tuple(int(i) for i in np.atleast_1d(axes))
        return function(a["x"], axis=axes, keepdims=bool(a.get("keep_dims", False)))

    return run


def _batch_norm(a):
    x = a["x"]
    shape = (1, -1) + (1,) * (x.ndim - 2)
    scale = a.get("gamma", 1.0) / np.sqrt(a["variance"] + a.get("epsilon", 1e-5))
    shift = a.get("beta", 0.0) - a["mean"] * scale
    return x * np.reshape(scale, shape) + np.reshape(shift, shape)


def _affine_dequantize(a):
    data = a["quantized_data"].astype(np.float32)
    axis = int(a["axis"])
    shape = [1] * data.ndim
    shape[axis] = -1
    zero = np.reshape(
        np.asarray(a["zero_point"], np.float32), shape if np.size(a["zero_point"]) > 1 else ()
    )
    scale = np.reshape(np.asarray(a["scale"], np.float32), shape if np.size(a["scale"]) > 1 else ())
    return (data - zero) * scale


def _lut_to_dense(a):
    if "shape" in a:  # iOS 16: flat lut, packed indices
        lut, shape = np.asarray(a["lut"], np.float32), tuple(int(d) for d in a["shape"])
        bits = int(np.log2(len(lut)))
        packed = np.asarray(a["indices"], np.uint8)
        if bits < 8:  # indices are packed least significant bit first
            codes = np.unpackbits(packed, bitorder="little").reshape(-1, bits) @ (
                1 << np.arange(bits)
            )
        else:
            codes = packed
        return lut[codes[: int(np.prod(shape))].astype(np.int64)].reshape(shape)
    raise UnsupportedOpError(
        "constexpr_lut_to_dense without a shape (iOS 18 form) is not supported"
    )


def _blockwise_shift_scale(a):
    data = a["data"].astype(np.float32)
    scale = np.asarray(a["scale"], np.float32)
    offset = np.asarray(a["offset"], np.float32) if a.get("offset") is not None else 0.0
    repeat = [d // s for d, s in zip(data.shape, scale.shape)]
    return (data - _repeat_blocks(offset, repeat)) * _repeat_blocks(scale, repeat)


def _repeat_blocks(values, repeat):
    values = np.asarray(values, np.float32)
    if values.ndim == 0:
        return values
    for axis, count in enumerate(repeat):
        values = np.repeat(values, count, axis=axis)
    return values


def _slice_by_index(a):
    """MIL's static slice (a centre crop, for one): begin/end/stride with their masks."""
    from .coreml_nn import _static_slices

    x = a["x"]
    rank = x.ndim
    stride = a.get("stride")
    y = x[
        _static_slices(
            list(a["begin"]), a.get("begin_mask"), list(a["end"]), a.get("end_mask"),
            None if stride is None else list(stride), rank,
        )
    ]  # fmt: skip
    squeeze = a.get("squeeze_mask")
    if squeeze is not None and any(squeeze):
        y = np.squeeze(y, axis=tuple(i for i, flag in enumerate(squeeze) if flag))
    return y


def _classify(a):
    probabilities = np.asarray(a["probabilities"], np.float32).reshape(-1)
    classes = [str(c) for c in a["classes"]]
    return classes[int(np.argmax(probabilities))], dict(zip(classes, probabilities.tolist()))


KERNELS: dict[str, Callable] = {
    "conv": _conv,
    "linear": lambda a: a["x"] @ a["weight"].T + (a["bias"] if a.get("bias") is not None else 0),
    "matmul": _matmul,
    "add": lambda a: a["x"] + a["y"],
    "sub": lambda a: a["x"] - a["y"],
    "mul": lambda a: a["x"] * a["y"],
    "real_div": lambda a: a["x"] / a["y"],
    "maximum": lambda a: np.maximum(a["x"], a["y"]),
    "minimum": lambda a: np.minimum(a["x"], a["y"]),
    "relu": lambda a: np.maximum(a["x"], 0),
    "relu6": lambda a: np.clip(a["x"], 0, 6),
    "clip": lambda a: np.clip(a["x"], a["alpha"], a["beta"]),
    "leaky_relu": lambda a: np.where(a["x"] >= 0, a["x"], a["alpha"] * a["x"]),
    "sigmoid": lambda a: 1 / (1 + np.exp(-a["x"])),
    "tanh": lambda a: np.tanh(a["x"]),
    "silu": lambda a: a["x"] / (1 + np.exp(-a["x"])),
    "sqrt": lambda a: np.sqrt(a["x"]),
    "rsqrt": lambda a: 1 / np.sqrt(a["x"] + a.get("epsilon", 1e-12)),
    "exp": lambda a: np.exp(a["x"]),
    "pad": _pad,
    "avg_pool": _pool("avg"),
    "max_pool": _pool("max"),
    "reduce_mean": _reduce(np.mean),
    "reduce_sum": _reduce(np.sum),
    "reduce_max": _reduce(np.max),
    "transpose": lambda a: np.transpose(a["x"], tuple(int(p) for p in a["perm"])),
    "reshape": lambda a: a["x"].reshape(tuple(int(d) for d in a["shape"])),
    "squeeze": lambda a: np.squeeze(
        a["x"], axis=None if a.get("axes") is None else tuple(int(i) for i in a["axes"])
    ),
    "expand_dims": lambda a: np.expand_dims(a["x"], tuple(int(i) for i in a["axes"])),
    "flatten2d": lambda a: a["x"].reshape(int(np.prod(a["x"].shape[: int(a.get("axis", 1))])), -1),
    "concat": lambda a: ops.concat(
        a["values"], int(a["axis"]), interleave=bool(a.get("interleave", False))
    ),
    "softmax": lambda a: ops.softmax(a["x"], axis=int(a.get("axis", -1))),
    "batch_norm": _batch_norm,
    "cast": lambda a: a["x"],  # dtypes are applied from the program's declarations
    "identity": lambda a: a["x"],
    "slice_by_index": _slice_by_index,
    "constexpr_affine_dequantize": _affine_dequantize,
    "constexpr_lut_to_dense": _lut_to_dense,
    "constexpr_blockwise_shift_scale": _blockwise_shift_scale,
    "constexpr_cast": lambda a: a["source_val"],
    "classify": _classify,
}
SUPPORTED_OPS = frozenset(KERNELS) | {"const"}


# ------------------------------------------------------------------ program


def check_ops(spec, name: str = "model") -> None:
    for op in main_block(spec).operations:
        if op.type not in SUPPORTED_OPS:
            output = op.outputs[0].name if op.outputs else "?"
            raise UnsupportedOpError(
                f"{name}: ML Program op {op.type!r} (output {output!r}) is not supported "
                "by the numpy executor"
            )


class LoadedProgram:
    def __init__(self, function):
        self.function = function
        self.constants = {}
        for op in function.operations:
            if op.op_type == "const":
                self.constants[op.outputs[0].name] = op.outputs[0].val


def load_program(path: str | Path, spec=None) -> LoadedProgram:
    from .._tf import import_coremltools

    import_coremltools()
    from coremltools.converters.mil.frontend.milproto import load as milproto

    path = Path(path)
    spec = spec if spec is not None else load_spec(path)
    check_ops(spec, str(path))
    try:
        program = milproto.load(
            spec,
            specification_version=spec.specificationVersion,
            file_weights_dir=str(path / WEIGHTS_SUBDIR),
        )
    except Exception as exc:  # blob files missing or corrupt, proto inconsistencies
        raise ModelFileError(
            f"{path}: cannot read the ML Program ({type(exc).__name__}: {exc})"
        ) from None
    return LoadedProgram(program.functions["main"])


def _is_fp16(var) -> bool:
    from coremltools.converters.mil.mil import types

    try:
        dtype = var.dtype
    except ValueError:  # list variables have no single dtype
        return False
    if types.is_tensor(dtype):
        dtype = dtype.get_primitive()
    return dtype == types.fp16


class ProgramExecutor:
    """Runs an ML Program with numpy, one image at a time."""

    def __init__(self, spec, path: str | Path, *, emulate_fp16: bool = True):
        self.spec = spec
        self.emulate_fp16 = emulate_fp16
        self.program = load_program(path, spec)
        self.function = self.program.function
        self.image_inputs = [
            f for f in spec.description.input if f.type.WhichOneof("Type") == "imageType"
        ]
        if len(self.image_inputs) != 1:
            raise UnsupportedOpError(
                f"{path}: expected one image input, found {len(self.image_inputs)}"
            )
        self.labels = classify_labels(spec)
        self.label_name = spec.description.predictedFeatureName
        self.probabilities_name = spec.description.predictedProbabilitiesName
        self.fp16_outputs = {
            o.name for op in self.function.operations for o in op.outputs if _is_fp16(o)
        }
        self._weights: dict | None = None

    def _value(self, var, env):
        if var.name in env:
            return env[var.name]
        if var.val is not None:
            value = var.val
            return (
                value.astype(np.float32)
                if isinstance(value, np.ndarray) and value.dtype == np.float16
                else value
            )
        raise ModelFileError(f"ML Program variable {var.name!r} is read before it is written")

    def _execute(self, op, env: dict):
        """Run one op on the values in ``env``; store its output there (classify: return it)."""
        arguments = {}
        for key, var in op.inputs.items():
            if isinstance(var, (list, tuple)):
                arguments[key] = [self._value(v, env) for v in var]
            else:
                arguments[key] = self._value(var, env)
        try:
            result = KERNELS[op.op_type](arguments)
        except UnsupportedOpError as exc:
            raise UnsupportedOpError(f"ML Program op {op.op_type!r} ({op.name!r}): {exc}") from None
        if op.op_type == "classify":
            return result
        out_var = op.outputs[0]
        value = np.asarray(result, np.float32)
        if self.emulate_fp16 and out_var.name in self.fp16_outputs:
            value = value.astype(np.float16).astype(np.float32)
        env[out_var.name] = value
        return None

    def _decompressed(self) -> dict:
        """The outputs of the constexpr_* ops (compressed weights), decoded once: they
        depend on constants only."""
        if self._weights is None:
            self._weights = {}
            for op in self.function.operations:
                if op.op_type.startswith("constexpr_"):
                    self._execute(op, self._weights)
        return self._weights

    def run(self, pixels: np.ndarray) -> dict:
        feature = self.image_inputs[0]
        rgb = pixels.astype(np.float32)
        channels = rgb[..., ::-1] if feature.type.imageType.colorSpace == 30 else rgb  # BGR
        env = {**self._decompressed(), feature.name: channels.transpose(2, 0, 1)[None]}
        outputs = {}
        for op in self.function.operations:
            if op.op_type == "const" or op.op_type.startswith("constexpr_"):
                continue
            result = self._execute(op, env)
            if op.op_type == "classify":
                label_var, probs_var = op.outputs
                outputs[label_var.name], outputs[probs_var.name] = result
        outputs.update({v.name: env[v.name] for v in self.function.outputs if v.name in env})
        return outputs

    def predict(self, pixels: np.ndarray) -> dict:
        """Core ML's output dictionary for one uint8 RGB image (H, W, 3)."""
        outputs = self.run(pixels)
        probabilities = outputs.get(self.probabilities_name)
        if not isinstance(probabilities, dict):
            raise ModelFileError("ML Program has no classify op producing the probabilities")
        return {self.label_name: outputs[self.label_name], self.probabilities_name: probabilities}
