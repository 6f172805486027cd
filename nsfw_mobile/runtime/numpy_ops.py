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


def pool2d(
    x, kind: str, kernel, strides, pads=(0, 0, 0, 0), *, exclude_padding=True, ceil_mode=False
):
    """Average or max pooling over (N, C, H, W); pads (top, bottom, left, right)."""
    top, bottom, left, right = pads
    n, c, height, width = x.shape
    kh, kw = kernel
    sh, sw = strides
    if ceil_mode:  # extra bottom/right padding so a partial last window still counts
        extra_h = (-(height + top + bottom - kh) % sh) if height + top + bottom > kh else 0
        extra_w = (-(width + left + right - kw) % sw) if width + left + right > kw else 0
        bottom, right = bottom + extra_h, right + extra_w
    fill = -np.inf if kind == "max" else 0.0
    padded = np.pad(
        x.astype(np.float32), ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=fill
    )
    windows = sliding_window_view(padded, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    if kind == "max":
        return windows.max(axis=(-2, -1))
    sums = windows.sum(axis=(-2, -1))
    if exclude_padding and any((top, bottom, left, right)):
        mask = np.pad(
            np.ones((1, 1, height, width), np.float32),
            ((0, 0), (0, 0), (top, bottom), (left, right)),
        )
        counts = sliding_window_view(mask, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw].sum(
            axis=(-2, -1)
        )
        return sums / counts
    return sums / np.float32(kh * kw)


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
