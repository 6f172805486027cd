"""NCHW kernels in numpy, shared by the Core ML neural-network and ML Program executors.

Written for clarity first and speed second: a full-size MobileNetV2 runs in
well under a second per image, enough to validate models in CI.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> int:
    """Total padding that makes output = ceil(size / stride), as TensorFlow's 'SAME'."""
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    return max((out - 1) * stride + effective - size, 0)


def split_padding(total: int, heavy_end: bool = True) -> tuple[int, int]:
    """(before, after); the odd pixel goes after when heavy_end (TF / Core ML default)."""
    small = total // 2
    return (small, total - small) if heavy_end else (total - small, small)


def conv2d(x, weight, bias=None, *, strides=(1, 1), dilations=(1, 1), groups=1, pads=(0, 0, 0, 0)):
    """x (N, C, H, W), weight (O, C // groups, kH, kW), pads (top, bottom, left, right)."""
    top, bottom, left, right = pads
    if any(pads):
        x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    n, channels, height, width = x.shape
    out_channels, group_channels, kh, kw = weight.shape
    sh, sw = strides
    dh, dw = dilations
    out_h = (height - dh * (kh - 1) - 1) // sh + 1
    out_w = (width - dw * (kw - 1) - 1) // sw + 1
    if channels != group_channels * groups:
        raise ValueError(
            f"conv: {channels} input channels, weight expects {group_channels} x {groups}"
        )

    if groups == 1:
        out = _dense_conv(x, weight, strides, dilations, out_h, out_w)
    elif group_channels == 1:  # depthwise, channel multiplier = out_channels // channels
        multiplier = out_channels // channels
        source = np.repeat(x, multiplier, axis=1) if multiplier > 1 else x
        out = np.zeros((n, out_channels, out_h, out_w), np.result_type(x, weight))
        for i in range(kh):
            for j in range(kw):
                window = source[
                    :,
                    :,
                    i * dh : i * dh + sh * (out_h - 1) + 1 : sh,
                    j * dw : j * dw + sw * (out_w - 1) + 1 : sw,
                ]
                out += window * weight[:, 0, i, j][None, :, None, None]
    else:
        per_group = out_channels // groups
        out = np.concatenate(
            [
                _dense_conv(
                    x[:, g * group_channels : (g + 1) * group_channels],
                    weight[g * per_group : (g + 1) * per_group],
                    strides,
                    dilations,
                    out_h,
                    out_w,
                )
                for g in range(groups)
            ],
            axis=1,
        )
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1)
    return out


def _dense_conv(x, weight, strides, dilations, out_h, out_w):
    out_channels, channels, kh, kw = weight.shape
    sh, sw = strides
    dh, dw = dilations
    if kh == kw == 1:
        strided = x[:, :, : sh * (out_h - 1) + 1 : sh, : sw * (out_w - 1) + 1 : sw]
        return np.einsum("oc,nchw->nohw", weight[:, :, 0, 0], strided, optimize=True)
    span = ((kh - 1) * dh + 1, (kw - 1) * dw + 1)
    windows = sliding_window_view(x, span, axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]
    windows = windows[:, :, :out_h, :out_w]
    out = np.tensordot(windows, weight, axes=([1, 4, 5], [1, 2, 3]))  # (N, oH, oW, O)
    return out.transpose(0, 3, 1, 2)


def pooled_size(
    size: int,
    kernel: int,
    stride: int,
    before: int,
    after: int,
    *,
    ceil_mode: bool = False,
    trim: bool | None = None,
) -> int:
    """Output length of a pooling axis with explicit padding.

    ``ceil_mode`` rounds up, so a last partial window still counts; ``trim``
    then drops a last window that would start in the end padding. None: only
    when this axis has padding, as coremltools' shape inference does for ML
    Programs (``spatial_dimensions_out_shape``).
    """
    span = size + before + after - kernel
    if span < 0:
        raise ValueError(f"pooling window {kernel} is larger than the padded input {span + kernel}")
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    if trim is None:
        trim = before + after > 0
    if trim and (out - 1) * stride >= size + before:
        out -= 1
    return out


def pool2d(
    x,
    kind: str,
    kernel,
    strides,
    pads=(0, 0, 0, 0),
    *,
    exclude_padding=True,
    ceil_mode=False,
    ceil_trim=None,
):
    """Average or max pooling over (N, C, H, W); pads (top, bottom, left, right).

    Max pooling never picks a padded cell. Average pooling divides by the
    cells of the window inside the input (``exclude_padding``) or inside the
    padded input; cells a ceil-mode window reaches beyond the padding never
    count (PyTorch's rule, which coremltools' ``ceil_mode`` follows).
    ``ceil_trim``: per axis (H, W), whether ceil mode drops a window that would
    start in the end padding; None: on the axes that have padding.
    """
    top, bottom, left, right = pads
    n, c, height, width = x.shape
    kh, kw = kernel
    sh, sw = strides
    trim_h, trim_w = ceil_trim if ceil_trim is not None else (None, None)
    out_h = pooled_size(height, kh, sh, top, bottom, ceil_mode=ceil_mode, trim=trim_h)
    out_w = pooled_size(width, kw, sw, left, right, ceil_mode=ceil_mode, trim=trim_w)
    beyond_h = max(0, (out_h - 1) * sh + kh - (height + top + bottom))
    beyond_w = max(0, (out_w - 1) * sw + kw - (width + left + right))
    borders = ((0, 0), (0, 0), (top, bottom + beyond_h), (left, right + beyond_w))
    fill = -np.inf if kind == "max" else 0.0
    padded = np.pad(x.astype(np.float32), borders, constant_values=fill)

    def window_sum(array, combine):
        """Combine the kh * kw shifted, strided views: faster than reducing a window view."""
        total = None
        for i in range(kh):
            for j in range(kw):
                part = array[
                    :, :, i : i + sh * (out_h - 1) + 1 : sh, j : j + sw * (out_w - 1) + 1 : sw
                ]
                total = part.copy() if total is None else combine(total, part, out=total)
        return total

    if kind == "max":
        return window_sum(padded, np.maximum)
    sums = window_sum(padded, np.add)
    if not any((top, bottom, left, right, beyond_h, beyond_w)):
        return sums / np.float32(kh * kw)
    counted = np.ones((1, 1, height, width), np.float32)
    if exclude_padding:
        counted = np.pad(counted, borders)
    else:
        counted = np.pad(counted, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=1)
        counted = np.pad(counted, ((0, 0), (0, 0), (0, beyond_h), (0, beyond_w)))
    return sums / window_sum(counted, np.add)


def concat(values, axis: int, *, interleave: bool = False):
    """Concatenate along ``axis``; ``interleave`` alternates the inputs' slices instead
    (a0, b0, a1, b1, ...), as Core ML's concat with interleave does."""
    if not interleave:
        return np.concatenate(values, axis=axis)
    shapes = {np.shape(v) for v in values}
    if len(shapes) != 1:
        raise ValueError(f"interleaved concat needs inputs of one shape, got {sorted(shapes)}")
    stacked = np.stack(values, axis=(axis % np.ndim(values[0])) + 1)
    shape = list(np.shape(values[0]))
    shape[axis] *= len(values)
    return stacked.reshape(shape)


def pad(x, pairs, mode: str = "constant", value: float = 0.0):
    """pairs: (before, after) for every axis of x."""
    if mode == "constant":
        return np.pad(x, pairs, constant_values=value)
    numpy_mode = {"reflect": "reflect", "replicate": "edge"}[mode]
    return np.pad(x, pairs, mode=numpy_mode)


def softmax(x, axis: int = -1):
    shifted = x - x.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)
