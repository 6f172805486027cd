"""ONNX classifiers built with onnx.helper, as PyTorch and tf2onnx export them (no torch here).

Weights are random (He initialisation, so activations neither vanish nor
explode through the depth) and every BatchNormalization gets statistics that
differ per channel; the last layer is scaled so that the logits spread over a
few units, which makes the probabilities vary from image to image (the tests
assert it).
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Graph:
    """A graph under construction: nodes, weights, and the layout its feature maps use."""

    def __init__(self, seed: int = 0, opset: int = 13):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.weights = [], []
        self.count = 0
        self.opset = opset

    def fresh(self, base: str) -> str:
        self.count += 1
        return f"{base}_{self.count}"

    def const(self, values, base: str = "w") -> str:
        name = self.fresh(base)
        self.weights.append(numpy_helper.from_array(np.asarray(values), name))
        return name

    def node(self, op: str, inputs, base: str | None = None, outputs: int = 1, **attrs):
        names = [self.fresh(base or op.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op, list(inputs), names, name=names[0], **attrs))
        return names[0] if outputs == 1 else names

    # -- layers (NCHW, as ONNX convolutions are)

    def conv(self, x, cin, cout, k, stride=1, pads=None, group=1, bias=True, dilation=1):
        fan_in = cin // group * k * k
        weight = self.rng.normal(0, np.sqrt(2.0 / fan_in), (cout, cin // group, k, k))
        inputs = [x, self.const(weight.astype(np.float32))]
        if bias:
            inputs.append(self.const(self.rng.normal(0, 0.1, cout).astype(np.float32), "b"))
        pad = (k - 1) * dilation // 2 if pads is None else None
        return self.node(
            "Conv",
            inputs,
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=pads if pads is not None else [pad] * 4,
            group=group,
            dilations=[dilation, dilation],
        )

    def bn(self, x, channels):
        rng = self.rng
        params = [
            rng.uniform(0.6, 1.4, channels),  # scale
            rng.normal(0, 0.2, channels),  # bias
            rng.normal(0, 0.3, channels),  # mean
            rng.uniform(0.5, 2.0, channels),  # var
        ]
        names = [self.const(p.astype(np.float32), "bn") for p in params]
        return self.node("BatchNormalization", [x, *names], epsilon=1e-3)

    def relu6(self, x):
        if self.opset < 11:
            return self.node("Clip", [x], min=0.0, max=6.0)
        low, high = self.const(np.float32(0), "min"), self.const(np.float32(6), "max")
        return self.node("Clip", [x, low, high])

    def head(self, x, channels, classes, *, gemm=True, softmax=True, gain=3.0):
        pooled = self.node("GlobalAveragePool", [x])
        flat = self.bn(self.node("Flatten", [pooled], axis=1), channels)  # features per image
        weight = self.rng.normal(0, 1.0 / np.sqrt(channels), (classes, channels)) * gain
        if gemm:
            logits = self.node(
                "Gemm",
                [
                    flat,
                    self.const(weight.astype(np.float32)),
                    self.const(self.rng.normal(0, 0.1, classes).astype(np.float32)),
                ],
                transB=1,
            )
        else:
            product = self.node("MatMul", [flat, self.const(weight.T.astype(np.float32))])
            logits = self.node("Add", [product, self.const(np.zeros(classes, np.float32))])
        return (
            self.node("Softmax", [logits], axis=1 if self.opset < 13 else -1) if softmax else logits
        )

    def model(
        self, x_name, output, *, input_shape, output_shape, elem=TensorProto.FLOAT, props=None
    ):
        graph = helper.make_graph(
            self.nodes,
            "classifier",
            [helper.make_tensor_value_info(x_name, elem, input_shape)],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, output_shape)],
            self.weights,
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", self.opset)], producer_name="tests"
        )
        model.ir_version = 7
        if props:
            helper.set_model_props(model, props)
        return calibrate_batchnorm(model)


def calibrate_batchnorm(model, images: int = 4, seed: int = 0):
    """Set each BatchNormalization's mean and variance to those of its input on a few random
    images, in graph order (each one with the ones before it already set), as training would
    leave them: activations stay in range through the depth, and outputs differ per image."""
    import onnxruntime as ort

    (image,) = model.graph.input
    dims = [d.dim_value or images for d in image.type.tensor_type.shape.dim]
    rng = np.random.default_rng(seed)
    if image.type.tensor_type.elem_type == TensorProto.UINT8:
        feed = rng.integers(0, 256, dims).astype(np.uint8)
    else:
        feed = rng.normal(0, 1, dims).astype(np.float32)
    weights = {t.name: t for t in model.graph.initializer}
    for node in [n for n in model.graph.node if n.op_type == "BatchNormalization"]:
        probe = type(model)()
        probe.CopyFrom(model)
        del probe.graph.output[:]
        probe.graph.output.append(helper.make_empty_tensor_value_info(node.input[0]))
        session = ort.InferenceSession(
            probe.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        rows = [session.run(None, {image.name: feed[i : i + 1]})[0] for i in range(len(feed))]
        values = np.concatenate(rows)
        axes = (0, 2, 3) if values.ndim == 4 else (0,)
        for name, statistic in (
            (node.input[3], values.mean(axes)),
            (node.input[4], values.var(axes)),
        ):
            weights[name].CopyFrom(numpy_helper.from_array(statistic.astype(np.float32), name))
    return model


def nhwc_entry(graph: Graph, name: str = "input:0") -> str:
    """tf2onnx's start: an NHWC input transposed to NCHW."""
    return graph.node("Transpose", [name], perm=[0, 3, 1, 2])


def mobilenet_v2(*, classes=3, size=224, width=8, seed=0, layout="NCHW", opset=13):
    """MobileNetV2-shaped: a 3x3/2 stem, inverted residual blocks (expand, depthwise, project,
    residual adds), a 1x1 conv, global pooling and a classifier. PyTorch pads (1 on every side),
    so the stride-2 convolutions are not TF 'same'."""
    g = Graph(seed, opset)
    name = "input" if layout == "NCHW" else "input:0"
    x = name if layout == "NCHW" else nhwc_entry(g, name)
    c = width
    x = g.relu6(g.bn(g.conv(x, 3, c, 3, stride=2, bias=False), c))
    blocks = [
        (1, width, 1),
        (4, width * 2, 2),
        (4, width * 2, 1),
        (4, width * 3, 2),
        (4, width * 3, 1),
        (4, width * 4, 2),
        (4, width * 4, 1),
        (4, width * 6, 2),
    ]
    for expand, out, stride in blocks:
        inner = c * expand
        y = x
        if expand != 1:
            y = g.relu6(g.bn(g.conv(y, c, inner, 1, bias=False), inner))
        y = g.relu6(g.bn(g.conv(y, inner, inner, 3, stride=stride, group=inner, bias=False), inner))
        y = g.bn(g.conv(y, inner, out, 1, bias=False), out)
        x = g.node("Add", [x, y]) if stride == 1 and out == c else y
        c = out
    x = g.relu6(g.bn(g.conv(x, c, c * 4, 1, bias=False), c * 4))
    output = g.head(x, c * 4, classes)
    shape = ["batch", 3, size, size] if layout == "NCHW" else ["batch", size, size, 3]
    return g.model(name, output, input_shape=shape, output_shape=["batch", classes])


def resnet(
    *, classes=2, size=224, width=8, seed=1, layout="NHWC", maxpool_pads=(0, 0, 1, 1), opset=9
):
    """ResNet-shaped like open_nsfw as tf2onnx wrote it (BN folded into biased convs, a 7x7/2
    stem, a 3x3/2 max pool with pads [0,0,1,1], bottlenecks with projection shortcuts, a 7x7
    average pool, Reshape, MatMul + Add, Softmax). ``maxpool_pads=(1, 1, 1, 1)`` and
    ``layout="NCHW"`` give torchvision's variant (its max pool is not TF 'same')."""
    g = Graph(seed, opset)
    name = "input" if layout == "NCHW" else "input:0"
    x = name if layout == "NCHW" else nhwc_entry(g, name)
    c = width
    x = g.node("Relu", [g.conv(x, 3, c, 7, stride=2, pads=[3, 3, 3, 3])])
    x = g.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=list(maxpool_pads))
    for out, stride in ((width * 2, 1), (width * 4, 2), (width * 6, 2), (width * 8, 2)):
        mid = out // 2
        y = g.node("Relu", [g.conv(x, c, mid, 1, stride=stride)])
        y = g.node("Relu", [g.conv(y, mid, mid, 3)])
        y = g.conv(y, mid, out, 1)
        shortcut = g.conv(x, c, out, 1, stride=stride) if (stride != 1 or out != c) else x
        x = g.node("Relu", [g.node("Add", [shortcut, y])])
        c = out
    side = size // 32
    x = g.node("AveragePool", [x], kernel_shape=[side, side], strides=[1, 1])
    flat = g.node("Reshape", [x, g.const(np.array([-1, c], np.int64), "shape")])
    weight = g.rng.normal(0, 4.0 / np.sqrt(c), (c, classes)).astype(np.float32)
    logits = g.node(
        "Add", [g.node("MatMul", [flat, g.const(weight)]), g.const(np.zeros(classes, np.float32))]
    )
    output = g.node("Softmax", [logits], axis=1)
    shape = ["batch", 3, size, size] if layout == "NCHW" else ["batch", size, size, 3]
    return g.model(name, output, input_shape=shape, output_shape=["batch", classes])


def hard_activations(*, size=64, seed=2):
    """MobileNetV3's block: HardSwish, a depthwise conv, an SE gate with HardSigmoid."""
    g = Graph(seed, 14)
    x = g.node("HardSwish", [g.bn(g.conv("input", 3, 16, 3, stride=2, bias=False), 16)])
    x = g.node("HardSwish", [g.conv(x, 16, 16, 5, stride=2, group=16, pads=[1, 1, 2, 2])])
    squeeze = g.node("Relu", [g.conv(g.node("GlobalAveragePool", [x]), 16, 8, 1)])
    gate = g.node("HardSigmoid", [g.conv(squeeze, 8, 16, 1)], alpha=1 / 6, beta=0.5)
    x = g.node("Mul", [x, gate])
    x = g.node("HardSigmoid", [g.conv(x, 16, 24, 1)], alpha=0.2, beta=0.5)
    output = g.head(x, 24, 3)
    return g.model("input", output, input_shape=["n", 3, size, size], output_shape=["n", 3])


def silu_se(*, size=64, seed=3):
    """EfficientNet's block: SiLU (Sigmoid then Mul), squeeze-excitation via ReduceMean,
    a depthwise conv with multiplier 2, logits (no softmax) for a declared softmax."""
    g = Graph(seed, 13)
    x = g.bn(g.conv("input", 3, 12, 3, stride=2, bias=False), 12)
    x = g.node("Mul", [x, g.node("Sigmoid", [x])])
    x = g.conv(x, 12, 24, 3, group=12)
    x = g.node("Mul", [x, g.node("Sigmoid", [x])])
    pooled = g.node("ReduceMean", [x], axes=[2, 3], keepdims=1)
    squeeze = g.conv(pooled, 24, 6, 1)
    squeeze = g.node("Mul", [squeeze, g.node("Sigmoid", [squeeze])])
    gate = g.node("Sigmoid", [g.conv(squeeze, 6, 24, 1)])
    x = g.node("Mul", [gate, x])
    output = g.head(x, 24, 4, softmax=False)
    return g.model("input", output, input_shape=["n", 3, size, size], output_shape=["n", 4])


def assorted(*, size=48, seed=4):
    """The other ops: Sub/Div by constants, LeakyRelu, Clip to [-1, 1], grouped conv, Pad,
    Concat, average pooling counting its pads, Squeeze/Unsqueeze, Transpose, Dropout,
    Identity, Cast, a MatMul head and ConvTranspose, on an NHWC input (tf2onnx style)."""
    g = Graph(seed, 13)
    x = g.node("Cast", ["input:0"], to=TensorProto.FLOAT)
    mean = g.const(np.array([120.0, 110.0, 100.0], np.float32))
    x = g.node("Div", [g.node("Sub", [x, mean]), g.const(np.float32(64.0))])
    x = nhwc_entry_from(g, x)
    a = g.node("LeakyRelu", [g.conv(x, 3, 8, 3, stride=2)], alpha=0.1)
    b = g.node(
        "Clip", [g.conv(x, 3, 8, 3, stride=2), g.const(np.float32(-1)), g.const(np.float32(1))]
    )
    x = g.node("Concat", [a, b], axis=1)
    x = g.conv(x, 16, 16, 3, group=4)
    x = g.node("Pad", [x, g.const(np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64), "pads")])
    x = g.node(
        "AveragePool",
        [x],
        kernel_shape=[3, 3],
        strides=[2, 2],
        pads=[1, 1, 1, 1],
        count_include_pad=1,
    )
    x = g.node("Relu", [x])
    up = g.node(
        "ConvTranspose",
        [
            x,
            g.const(g.rng.normal(0, 0.2, (16, 8, 2, 2)).astype(np.float32)),
            g.const(np.zeros(8, np.float32)),
        ],
        strides=[2, 2],
        kernel_shape=[2, 2],
    )
    x = g.node("MaxPool", [g.node("Relu", [up])], kernel_shape=[2, 2], strides=[2, 2])
    x = g.node("Dropout", [g.node("Identity", [x])])
    x = g.node("Transpose", [x], perm=[0, 2, 3, 1])  # NHWC again
    pooled = g.node("ReduceMean", [x], axes=[1, 2], keepdims=0)
    pooled = g.node("Unsqueeze", [pooled, g.const(np.array([2, 3], np.int64), "axes")])
    pooled = g.node("Squeeze", [pooled, g.const(np.array([2, 3], np.int64), "axes")])
    weight = g.rng.normal(0, 2.0, (8, 3)).astype(np.float32)
    logits = g.node(
        "Add",
        [
            g.node("MatMul", [pooled, g.const(weight)]),
            g.const(np.array([0.1, -0.1, 0.0], np.float32)),
        ],
    )
    output = g.node("Softmax", [logits], axis=-1)
    return g.model(
        "input:0",
        output,
        input_shape=["n", size, size, 3],
        output_shape=["n", 3],
        elem=TensorProto.UINT8,
    )


def nhwc_entry_from(graph: Graph, x: str) -> str:
    return graph.node("Transpose", [x], perm=[0, 3, 1, 2])
