"""InceptionV3's layers through the whole pipeline, on a tiny InceptionV3-like model.

NSFWJS's InceptionV3 (a Keras 2.2.4 layers model) brings layers MobileNetV2 did not:
Conv2D without bias followed by BatchNormalization(scale=False), parallel branches of
convolutions and max / average pooling (padding same and valid, strides 1 and 2)
joined by Concatenate, then Flatten and Dense. The tiny model here has each of them;
it is converted to every format of the registry and validated, and deliberately
broken copies (a padding rule, a concat order) must fail. The pooling and concat
kernels of the Core ML executors are checked against coremltools' own shape
inference and the semantics its docs state. The real 22 MB model is measured by
benchmarks/inception_v3.py.
"""

from __future__ import annotations

import json
import shutil
from itertools import product

import numpy as np
import pytest
from conftest import assert_outputs_vary, convert_every_format, synthetic_batch
from test_tfjs_export import node_ready  # noqa: F401 (a fixture)
from test_validate import edited

from nsfw_mobile.formats import FORMATS
from nsfw_mobile.runtime import numpy_ops as ops
from nsfw_mobile.validate import validate

SIZE = 48
"""Odd feature maps (23, 11, 5) and even ones (10) meet stride-2 'same' pooling."""


def build_tiny_inception(size: int = SIZE):
    import keras

    layers = keras.layers

    def unit(x, filters, kernel, name, strides=1, padding="same"):
        x = layers.Conv2D(filters, kernel, strides, padding, use_bias=False, name=f"{name}_conv")(x)
        x = layers.BatchNormalization(scale=False, name=f"{name}_bn")(x)
        return layers.Activation("relu", name=f"{name}_relu")(x)

    def avg(x, strides, padding, name):
        return layers.AveragePooling2D(3, strides, padding, name=name)(x)

    image = keras.Input((size, size, 3), name="image")
    x = unit(image, 8, 3, "stem", strides=2, padding="valid")  # 23
    x = layers.MaxPooling2D(3, 2, name="stem_pool")(x)  # 11
    x = layers.Concatenate(axis=3, name="mixed_a")(  # Keras 2's axis=3, as InceptionV3's
        [
            unit(x, 6, 1, "a_1x1"),
            unit(unit(x, 4, 1, "a_5x5_reduce"), 6, 5, "a_5x5"),
            unit(avg(x, 1, "same", "a_pool"), 4, 1, "a_pool_proj"),
        ]
    )
    x = unit(x, 8, 2, "to_even", padding="valid")  # 10: 'same' stride 2 pads only the end
    x = layers.Concatenate(name="mixed_b")(
        [
            unit(x, 8, 3, "b_3x3", strides=2),
            avg(x, 2, "same", "b_avg"),
            layers.MaxPooling2D(3, 2, "same", name="b_max")(x),
        ]
    )  # 5
    x = layers.BatchNormalization(scale=False, name="b_bn")(x)  # not after a convolution
    x = layers.Concatenate(name="mixed_c")(
        [
            unit(unit(x, 6, (1, 3), "c_1x3"), 6, (3, 1), "c_3x1"),
            unit(x, 5, 1, "c_1x1"),
            unit(avg(x, 1, "same", "c_pool"), 4, 1, "c_pool_proj"),
        ]
    )
    x = layers.Concatenate(name="mixed_d")(
        [unit(x, 8, 3, "d_3x3", strides=2, padding="valid"), layers.MaxPooling2D(3, 2)(x)]
    )  # 2
    x = layers.AveragePooling2D(2, name="head_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(16, activation="relu", name="fc")(x)
    x = layers.Dropout(0.5, name="dropout")(x)
    outputs = layers.Dense(3, activation="softmax", name="probabilities")(x)
    return keras.Model(image, outputs, name="tiny_inception")


@pytest.fixture(scope="module")
def inception_images(tmp_path_factory):
    """Images like the training data: the validation set."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("inception_images")
    images, _ = synthetic_batch(40, SIZE, seed=5)
    for index, image in enumerate(images):
        Image.fromarray(image).save(folder / f"synthetic_{index:02d}.png")
    return folder


@pytest.fixture(scope="module")
def inception_model_path(tmp_path_factory):
    import keras
    from conftest import set_batchnorm_statistics

    keras.utils.set_random_seed(0)
    model = build_tiny_inception()
    images, labels = synthetic_batch(96, SIZE, seed=0)
    set_batchnorm_statistics(model, images)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(images / 255.0, labels, batch_size=32, epochs=8, verbose=0)
    set_batchnorm_statistics(model, images)
    path = tmp_path_factory.mktemp("inception") / "tiny_inception.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def inception_artifacts(inception_model_path, tmp_path_factory):
    """Calibrated on other images like the training data than those it is validated on."""
    from conftest import write_synthetic_images

    from nsfw_mobile.models import load_source

    calibration = write_synthetic_images(tmp_path_factory.mktemp("calibration"), 20, 6, SIZE)
    source = load_source(inception_model_path)
    out = tmp_path_factory.mktemp("inception_dist")
    return convert_every_format(source, out, calibration)


@pytest.fixture(scope="module")
def inception_report(inception_artifacts, inception_model_path, inception_images):
    candidates = [inception_artifacts[f.key].path for f in FORMATS]
    return validate(candidates, reference=inception_model_path, images=[inception_images])


@pytest.mark.slow
def test_every_format_of_the_tiny_inception_passes(
    inception_report, inception_model_path, inception_images
):
    from nsfw_mobile.images import load_images
    from nsfw_mobile.models import load_keras_model

    pixels = load_images([inception_images], SIZE).pixels
    assert_outputs_vary(load_keras_model(inception_model_path).predict(pixels / 255.0, verbose=0))
    assert [r.format for r in inception_report.candidates] == [f.key for f in FORMATS]
    print()
    for result in inception_report.candidates:
        print(
            f"{result.format:<18} max {result.max_abs_diff:.2e} mean {result.mean_abs_diff:.2e} "
            f"top-1 {result.top1_agreement:.1%}"
        )
    for result in inception_report.candidates:
        assert result.status == "pass", (result.format, result.failures)


@pytest.mark.slow
def test_the_core_ml_programs_keep_pooling_and_concat(inception_artifacts):
    """What the executors run: the converter's layers for InceptionV3's ops."""
    from nsfw_mobile.runtime.coreml_spec import load_spec, op_counts

    network = op_counts(load_spec(inception_artifacts["mlmodel"].path))
    assert network["pooling"] == 7 and network["concat"] == 4
    program = op_counts(load_spec(inception_artifacts["mlpackage-float32"].path))
    assert program["avg_pool"] == 4 and program["max_pool"] == 3 and program["concat"] == 4


@pytest.mark.slow
def test_tfjs_writes_inception_layers_as_tfjs_reads_them(inception_artifacts):
    folder = inception_artifacts["tfjs-float32"].path
    document = json.loads((folder / "model.json").read_text())
    layers = {layer["name"]: layer for layer in document["modelTopology"]["config"]["layers"]}
    bn = layers["stem_bn"]["config"]
    assert bn["scale"] is False and bn["center"] is True
    names = {w["name"] for w in document["weightsManifest"][0]["weights"]}
    assert "stem_bn/beta" in names and "stem_bn/gamma" not in names
    assert "stem_conv/kernel" in names and "stem_conv/bias" not in names
    assert layers["b_avg"]["config"]["padding"] == "same"
    assert layers["b_avg"]["config"]["strides"] == [2, 2]
    assert layers["stem_pool"]["config"]["padding"] == "valid"
    assert layers["mixed_a"]["config"]["axis"] == 3
    (call,) = layers["mixed_b"]["inbound_nodes"]
    assert [ref[0] for ref in call] == ["b_3x3_relu", "b_avg", "b_max"]


def as_keras_2_2_4(document: dict) -> dict:
    """An export rewritten in the dialect NSFWJS's InceptionV3 model.json is in (Keras 2.2.4):
    the model_config wrapper with a training_config, channel axis 3, no dtypes, Keras 2
    initializers and an L1L2 regularizer."""
    config = document["modelTopology"]["config"]
    for layer in config["layers"]:
        options = layer["config"]
        options.pop("dtype", None)
        if layer["class_name"] in ("BatchNormalization", "Concatenate"):
            options["axis"] = 3
        if "kernel_initializer" in options:
            options["kernel_initializer"] = {
                "class_name": "VarianceScaling",
                "config": {"scale": 1, "mode": "fan_avg", "distribution": "uniform", "seed": None},
            }
        if layer["class_name"] == "Dense":
            options["kernel_regularizer"] = {"class_name": "L1L2", "config": {"l1": 0, "l2": 5e-4}}
    document["modelTopology"] = {
        "keras_version": "2.2.4",
        "backend": "tensorflow",
        "model_config": {"class_name": "Model", "config": config},
        "training_config": {
            "optimizer_config": {"class_name": "SGD", "config": {"lr": 1e-6, "momentum": 0.9}},
            "loss": "categorical_crossentropy",
            "metrics": ["accuracy"],
        },
    }
    return document


@pytest.mark.usefixtures("node_ready")
@pytest.mark.slow
def test_the_keras_2_2_4_dialect_imports_as_tfjs_runs_it(
    inception_artifacts, inception_model_path, inception_images, tmp_path
):
    from nsfw_mobile.images import load_images
    from nsfw_mobile.models import load_keras_model
    from nsfw_mobile.runtime.tfjs_runner import TFJSRunner
    from nsfw_mobile.tfjs import tfjs2keras

    folder = tmp_path / "keras_2_2_4"
    shutil.copytree(inception_artifacts["tfjs-float32"].path, folder)
    document = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps(as_keras_2_2_4(document)))
    pixels = load_images([inception_images], SIZE).pixels
    reference = load_keras_model(inception_model_path).predict(pixels / 255.0, verbose=0)
    imported = tfjs2keras(folder / "model.json").predict(pixels / 255.0, verbose=0)
    runner = TFJSRunner(folder)
    try:
        in_tfjs = runner.predict(pixels)
    finally:
        runner.close()
    print(
        f"\nKeras 2.2.4 dialect: importer vs Keras {np.abs(imported - reference).max():.1e}, "
        f"tfjs (wasm) vs Keras {np.abs(in_tfjs - reference).max():.1e}"
    )
    assert np.abs(imported - reference).max() <= 1e-6
    assert np.abs(in_tfjs - reference).max() <= 1e-5


# ------------------------------------------------------------------ broken copies fail


def _swap_first_concat_inputs_nn(spec):
    layer = next(
        x for x in spec.neuralNetworkClassifier.layers if x.WhichOneof("layer") == "concat"
    )
    layer.input[0], layer.input[1] = layer.input[1], layer.input[0]


def _include_padding_in_averages_nn(spec):
    for layer in spec.neuralNetworkClassifier.layers:
        if layer.WhichOneof("layer") == "pooling" and layer.pooling.type == 1:
            layer.pooling.avgPoolExcludePadding = False


def _odd_padding_first_nn(spec):
    """TOP_LEFT_HEAVY: the stride-2 'same' pools of a 10x10 map pad the top, not the bottom."""
    for layer in spec.neuralNetworkClassifier.layers:
        pooling = layer.pooling if layer.WhichOneof("layer") == "pooling" else None
        if pooling and tuple(pooling.stride) == (2, 2) and pooling.HasField("same"):
            pooling.same.asymmetryMode = 1


def _program_ops(spec):
    function = spec.mlProgram.functions["main"]
    return function.block_specializations[function.opset].operations


def _set_const_bool(spec, name, value):
    op = next(op for op in _program_ops(spec) if op.type == "const" and op.outputs[0].name == name)
    op.attributes["val"].immediateValue.tensor.bools.values[0] = value


def _swap_first_concat_inputs_program(spec):
    op = next(op for op in _program_ops(spec) if op.type == "concat")
    values = op.inputs["values"].arguments
    first, second = values[0].name, values[1].name
    values[0].name, values[1].name = second, first


def _include_padding_in_averages_program(spec):
    for op in list(_program_ops(spec)):
        if op.type == "avg_pool":
            _set_const_bool(
                spec, op.inputs["exclude_padding_from_average"].arguments[0].name, False
            )


BROKEN_CORE_ML = {
    "mlmodel": {
        "concat order": _swap_first_concat_inputs_nn,
        "padding counted in averages": _include_padding_in_averages_nn,
        "odd padding cell first": _odd_padding_first_nn,
    },
    "mlpackage-float32": {
        "concat order": _swap_first_concat_inputs_program,
        "padding counted in averages": _include_padding_in_averages_program,
    },
}


@pytest.mark.slow
def test_broken_core_ml_copies_fail(
    inception_artifacts, inception_model_path, inception_images, tmp_path
):
    cases = [
        (key, name, edit) for key, edits in BROKEN_CORE_ML.items() for name, edit in edits.items()
    ]
    paths = []
    for index, (key, _, edit) in enumerate(cases):
        source = inception_artifacts[key].path
        paths.append(edited(source, edit, tmp_path / f"broken{index}{source.suffix}"))
    report = validate(
        paths,
        reference=inception_model_path,
        images=[inception_images],
        format_keys=[key for key, _, _ in cases],
    )
    print()
    for (key, name, _), result in zip(cases, report.candidates):
        print(f"broken {key} ({name}): {result.status}, max diff {result.max_abs_diff:.2e}")
        assert result.status == "fail", (key, name, result.failures)


@pytest.mark.slow
def test_broken_tfjs_concat_order_fails(
    inception_artifacts, inception_model_path, inception_images, tmp_path
):
    folder = tmp_path / "swapped"
    shutil.copytree(inception_artifacts["tfjs-float32"].path, folder)
    document = json.loads((folder / "model.json").read_text())
    concat = next(
        x for x in document["modelTopology"]["config"]["layers"] if x["name"] == "mixed_a"
    )
    call = concat["inbound_nodes"][0]
    call[0], call[1] = call[1], call[0]
    (folder / "model.json").write_text(json.dumps(document))
    report = validate([folder], reference=inception_model_path, images=[inception_images])
    (result,) = report.candidates
    print(f"\nbroken TF.js (concat order): {result.status}, max diff {result.max_abs_diff:.2e}")
    assert result.status == "fail", result.failures


# ------------------------------------------------------------------ kernels against the specs


def reference_pool(x, kind, kernel, strides, pads, out_size, exclude_padding):
    """Pooling written out cell by cell from the documented rules: window ``o`` starts
    at ``o * stride - pad_before``; max and an excluding average see input cells only;
    an including average divides by the window's cells inside the padded input
    (PyTorch's rule, which coremltools' ceil_mode names)."""
    channels, height, width = x.shape
    top, bottom, left, right = pads
    out = np.zeros((channels, *out_size), np.float64)
    for oh, ow in product(range(out_size[0]), range(out_size[1])):
        rows = range(oh * strides[0] - top, oh * strides[0] - top + kernel[0])
        cols = range(ow * strides[1] - left, ow * strides[1] - left + kernel[1])
        inside = [(i, j) for i in rows for j in cols if 0 <= i < height and 0 <= j < width]
        in_padded = [
            (i, j)
            for i in rows
            for j in cols
            if -top <= i < height + bottom and -left <= j < width + right
        ]
        values = np.array([x[:, i, j] for i, j in inside])
        if kind == "max":
            out[:, oh, ow] = values.max(axis=0)
        else:
            count = len(inside) if exclude_padding else len(in_padded)
            out[:, oh, ow] = values.sum(axis=0) / count
    return out


def same_pads(size, kernel, stride, lower=False):
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    small, large = total // 2, total - total // 2
    return (large, small) if lower else (small, large)


# (kind, kernel, stride, pad_type, pad, ceil_mode, exclude_padding_from_average)
PROGRAM_POOLS = [
    ("avg", 3, 1, "same", None, False, True),
    ("avg", 3, 2, "same", None, False, True),
    ("avg", 3, 2, "same", None, False, False),
    ("avg", 3, 2, "same_lower", None, False, True),
    ("max", 3, 2, "same", None, False, None),
    ("max", 3, 2, "valid", None, False, None),
    ("avg", 2, 2, "valid", None, False, False),
    ("avg", 3, 2, "custom", [1, 1, 1, 1], True, False),
    ("avg", 3, 2, "custom", [1, 1, 1, 1], True, True),
    ("max", 3, 2, "custom", [1, 1, 0, 0], True, None),
    ("avg", 2, 3, "valid", None, True, False),
]


def test_ml_program_pooling_matches_coremltools_semantics(tmp_path):
    """One ML Program of many pooling ops: each output has the shape coremltools infers and
    the values the op's documented rules give; an op built without
    exclude_padding_from_average counts the padding, the documented default."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    from nsfw_mobile.runtime.coreml_mil import ProgramExecutor
    from nsfw_mobile.runtime.coreml_spec import load_spec

    height, width = 7, 8
    cases = PROGRAM_POOLS + [("avg", 3, 1, "same", None, False, None)]  # default exclusion

    @mb.program(input_specs=[mb.TensorSpec((1, 3, height, width))], opset_version=ct.target.iOS16)
    def program(x):
        outputs = []
        for index, (kind, kernel, stride, pad_type, pad, ceil_mode, exclude) in enumerate(cases):
            options = {"kernel_sizes": [kernel] * 2, "strides": [stride] * 2, "pad_type": pad_type}
            options.update({"pad": pad} if pad else {})
            options.update({"ceil_mode": True} if ceil_mode else {})
            if kind == "avg" and exclude is not None:
                options["exclude_padding_from_average"] = exclude
            pool = mb.avg_pool if kind == "avg" else mb.max_pool
            outputs.append(pool(x=x, name=f"out{index}", **options))
        return tuple(outputs)

    shapes = [tuple(v.shape) for v in program.functions["main"].outputs]
    model = ct.convert(
        program,
        convert_to="mlprogram",
        inputs=[ct.ImageType(name="x", shape=(1, 3, height, width))],
        compute_precision=ct.precision.FLOAT32,
        minimum_deployment_target=ct.target.iOS16,
        skip_model_load=True,
    )
    path = tmp_path / "pools.mlpackage"
    model.save(str(path))
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    results = ProgramExecutor(load_spec(path), path, emulate_fp16=False).run(pixels)
    x = pixels.transpose(2, 0, 1).astype(np.float64)
    for index, (kind, kernel, stride, pad_type, pad, _, exclude) in enumerate(cases):
        ours = results[f"out{index}"]
        assert ours.shape == shapes[index], cases[index]
        if pad_type in ("same", "same_lower"):
            lower = pad_type == "same_lower"
            pads = (
                *same_pads(height, kernel, stride, lower),
                *same_pads(width, kernel, stride, lower),
            )
        else:
            pads = tuple(pad) if pad else (0, 0, 0, 0)
        expected = reference_pool(
            x, kind, (kernel,) * 2, (stride,) * 2, pads, shapes[index][2:], bool(exclude)
        )
        np.testing.assert_allclose(ours[0], expected, rtol=1e-6, err_msg=str(cases[index]))


# (kind, kernel, stride, padding type, (top, bottom, left, right), asymmetry, exclude)
NETWORK_POOLS = [
    ("AVERAGE", 3, 2, "SAME", None, "BOTTOM_RIGHT_HEAVY", True),
    ("AVERAGE", 3, 2, "SAME", None, "TOP_LEFT_HEAVY", True),
    ("MAX", 3, 2, "SAME", None, "TOP_LEFT_HEAVY", True),
    ("AVERAGE", 3, 1, "SAME", None, "BOTTOM_RIGHT_HEAVY", False),
    ("AVERAGE", 3, 2, "VALID", (1, 0, 2, 1), "BOTTOM_RIGHT_HEAVY", False),
    ("AVERAGE", 3, 2, "VALID", (1, 0, 2, 1), "BOTTOM_RIGHT_HEAVY", True),
    ("AVERAGE", 3, 2, "INCLUDE_LAST_PIXEL", (1, 1, 1, 1), "BOTTOM_RIGHT_HEAVY", False),
    ("MAX", 3, 2, "INCLUDE_LAST_PIXEL", (1, 1, 0, 0), "BOTTOM_RIGHT_HEAVY", True),
    ("MAX", 2, 2, "INCLUDE_LAST_PIXEL", (0, 0, 0, 0), "BOTTOM_RIGHT_HEAVY", True),
]


def network_pooled_size(size, kernel, stride, pad, any_padding):
    """NeuralNetwork.proto's ValidCompletePadding (includeLastPixel) output size."""
    out = -(-(size + 2 * pad - kernel) // stride) + 1
    if any_padding and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def test_neural_network_pooling_matches_the_proto_semantics():
    """Pooling layers written by coremltools' own NeuralNetworkBuilder, run by the
    executor's pooling kernel: output sizes from NeuralNetwork.proto's formulas."""
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    from nsfw_mobile.runtime.coreml_nn import BUILDERS

    height, width = 7, 8
    builder = NeuralNetworkBuilder(
        [("image", datatypes.Array(3, height, width))],
        [(f"out{i}", None) for i in range(len(NETWORK_POOLS))],
        disable_rank5_shape_mapping=True,
    )
    for index, (kind, kernel, stride, padding, amounts, asymmetry, exclude) in enumerate(
        NETWORK_POOLS
    ):
        top, bottom, left, right = amounts or (0, 0, 0, 0)
        builder.add_pooling(
            f"pool{index}", kernel, kernel, stride, stride, kind, padding,
            "image", f"out{index}", exclude_pad_area=exclude, padding_top=top,
            padding_bottom=bottom, padding_left=left, padding_right=right,
            same_padding_asymmetry_mode=asymmetry,
        )  # fmt: skip
    pixels = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
    blob = pixels.transpose(2, 0, 1)[None].astype(np.float32)
    x = blob[0].astype(np.float64)
    layers = builder.spec.neuralNetwork.layers
    for case, layer in zip(NETWORK_POOLS, layers, strict=True):
        kind, kernel, stride, padding, amounts, asymmetry, exclude = case
        (ours,) = BUILDERS["pooling"](layer.pooling, layer.name)([blob])
        if padding == "SAME":
            lower = asymmetry == "TOP_LEFT_HEAVY"
            pads = (
                *same_pads(height, kernel, stride, lower),
                *same_pads(width, kernel, stride, lower),
            )
            out_size = (-(-height // stride), -(-width // stride))
        elif padding == "VALID":
            pads = amounts
            out_size = (
                (height + amounts[0] + amounts[1] - kernel) // stride + 1,
                (width + amounts[2] + amounts[3] - kernel) // stride + 1,
            )
        else:
            pads, padded = amounts, any(amounts)
            out_size = (
                network_pooled_size(height, kernel, stride, amounts[0], padded),
                network_pooled_size(width, kernel, stride, amounts[2], padded),
            )
        kind = "max" if kind == "MAX" else "avg"
        expected = reference_pool(x, kind, (kernel,) * 2, (stride,) * 2, pads, out_size, exclude)
        assert ours.shape[2:] == out_size, case
        np.testing.assert_allclose(ours[0], expected, rtol=1e-6, err_msg=str(case))


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding"),
    [(11, 3, 1, "SAME"), (10, 3, 2, "SAME"), (11, 3, 2, "SAME"), (23, 3, 2, "VALID"),
     (8, 8, 8, "VALID"), (5, 3, 1, "SAME")],
)  # fmt: skip
@pytest.mark.parametrize("kind", ["avg", "max"])
def test_pooling_matches_tensorflow(size, kernel, stride, padding, kind):
    """Keras's pooling, as InceptionV3 uses it: 'same' averages exclude the padding."""
    import tensorflow as tf

    x = np.random.default_rng(2).normal(size=(1, 4, size, size + 1)).astype(np.float32)
    pads = (0, 0, 0, 0)
    if padding == "SAME":
        pads = (*same_pads(size, kernel, stride), *same_pads(size + 1, kernel, stride))
    ours = ops.pool2d(x, kind, (kernel,) * 2, (stride,) * 2, pads, exclude_padding=True)
    pool = tf.nn.avg_pool2d if kind == "avg" else tf.nn.max_pool2d
    expected = pool(np.transpose(x, (0, 2, 3, 1)), kernel, stride, padding).numpy()
    np.testing.assert_allclose(np.transpose(ours, (0, 2, 3, 1)), expected, atol=1e-6)


def test_interleaved_concat_follows_the_coremltools_example():
    first = np.array([[1, 2], [3, 4], [5, 6]])
    second = np.array([[7, 8], [9, 10], [11, 12]])
    assert ops.concat([first, second], 0).tolist() == [
        [1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12]
    ]  # fmt: skip
    assert ops.concat([first, second], 0, interleave=True).tolist() == [
        [1, 2], [7, 8], [3, 4], [9, 10], [5, 6], [11, 12]
    ]  # fmt: skip
    assert ops.concat([first, second], -1, interleave=True).tolist() == [
        [1, 7, 2, 8], [3, 9, 4, 10], [5, 11, 6, 12]
    ]  # fmt: skip
