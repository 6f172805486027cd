"""The numpy Core ML executors: agreement with Keras, weight decoding, unknown ops."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import assert_outputs_vary

from nsfw_mobile.cli import EXIT_VALIDATION_FAILED, main
from nsfw_mobile.errors import UnsupportedOpError
from nsfw_mobile.runtime import numpy_ops as ops
from nsfw_mobile.runtime.coreml_runner import CoreMLRunner
from nsfw_mobile.runtime.coreml_spec import load_spec

EXECUTOR_TOLERANCE = 1e-4


def keras_probabilities(model, pixels):
    return model.predict(pixels / np.float32(255), verbose=0)


@pytest.mark.parametrize("key", ["mlmodel", "mlpackage-float32"])
def test_float32_executor_matches_keras_tiny(tiny_artifacts, tiny_model, sample_pixels_tiny, key):
    assert len(sample_pixels_tiny) >= 20
    reference = keras_probabilities(tiny_model, sample_pixels_tiny)
    assert_outputs_vary(reference)
    ours = CoreMLRunner(tiny_artifacts[key].path, backend="numpy").predict(sample_pixels_tiny)
    assert np.abs(ours - reference).max() <= EXECUTOR_TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("key", ["mlmodel", "mlpackage-float32"])
def test_float32_executor_matches_keras_full_size(
    full_artifacts, pretrained3, sample_pixels_224, key
):
    reference = keras_probabilities(pretrained3, sample_pixels_224)
    ours = CoreMLRunner(full_artifacts[key].path, backend="numpy").predict(sample_pixels_224)
    difference = np.abs(ours - reference).max()
    print(f"\n{key}: numpy executor vs Keras on {len(ours)} images, max abs diff {difference:.2e}")
    assert difference <= EXECUTOR_TOLERANCE


def test_outputs_are_core_ml_dictionaries(tiny_artifacts, sample_pixels_tiny):
    for key in ("mlmodel", "mlpackage"):
        runner = CoreMLRunner(tiny_artifacts[key].path, backend="numpy")
        outputs = runner.outputs(sample_pixels_tiny[0])
        assert set(outputs) == {"classLabel", "classLabelProbs"}
        probabilities = outputs["classLabelProbs"]
        assert set(probabilities) == {"Neutral", "Porn", "Sexy"}
        assert outputs["classLabel"] == max(probabilities, key=probabilities.get)


def test_fp16_emulation_changes_results_like_a_device(tiny_artifacts, sample_pixels_tiny):
    path = tiny_artifacts["mlpackage"].path
    emulated = CoreMLRunner(path, backend="numpy", emulate_fp16=True).predict(sample_pixels_tiny)
    ideal = CoreMLRunner(path, backend="numpy", emulate_fp16=False).predict(sample_pixels_tiny)
    assert 0 < np.abs(emulated - ideal).max() < 0.05


def test_quantized_neural_network_weights_decode_like_coremltools(tiny_artifacts, tmp_path):
    import coremltools as ct
    from coremltools.models.neural_network import quantization_utils

    from nsfw_mobile.runtime.coreml_nn import decode_weights

    model = ct.models.MLModel(str(tiny_artifacts["mlmodel"].path), skip_model_load=True)
    for bits, mode in ((8, "linear"), (4, "linear_lut"), (2, "linear_lut"), (1, "linear_lut")):
        quantized = quantization_utils.quantize_weights(model, nbits=bits, quantization_mode=mode)
        spec = quantized.get_spec()
        checked = 0
        for layer in spec.neuralNetworkClassifier.layers:
            if layer.WhichOneof("layer") != "convolution":
                continue
            conv = layer.convolution
            shape = (conv.outputChannels, conv.kernelChannels, *conv.kernelSize)
            ours = decode_weights(conv.weights, shape)
            expected = conv.weights.__class__()
            expected.CopyFrom(conv.weights)
            quantization_utils._dequantize_wp(expected, shape)  # coremltools' own decoder
            np.testing.assert_allclose(
                ours, np.asarray(expected.floatValue).reshape(shape), rtol=1e-6, atol=1e-6
            )
            checked += 1
        assert checked > 10, (bits, mode)


@pytest.mark.parametrize("bits", [2, 4, 6, 8])
def test_palettized_ml_program_weights_decode_exactly(
    tiny_artifacts, tiny_model, sample_pixels_tiny, tmp_path, bits
):
    import coremltools as ct
    import coremltools.optimize as cto

    from nsfw_mobile.runtime.coreml_mil import _lut_to_dense, load_program

    model = ct.models.MLModel(str(tiny_artifacts["mlpackage-float32"].path), skip_model_load=True)
    config = cto.coreml.OptimizationConfig(
        global_config=cto.coreml.OpPalettizerConfig(
            mode="uniform", nbits=bits, weight_threshold=512
        )
    )
    palettized = cto.coreml.palettize_weights(model, config=config)
    path = tmp_path / "palettized.mlpackage"
    palettized.save(str(path))
    decoded = 0
    for op in load_program(path).function.operations:
        if op.op_type == "constexpr_lut_to_dense":
            ours = _lut_to_dense({name: var.val for name, var in op.inputs.items()})
            np.testing.assert_array_equal(ours, op.materialized_val_inference())  # coremltools' own
            decoded += 1
    assert decoded > 10
    if bits < 6:
        return
    ours = CoreMLRunner(path, backend="numpy").predict(sample_pixels_tiny)
    reference = keras_probabilities(tiny_model, sample_pixels_tiny)
    assert np.abs(ours - reference).mean() < 0.05


def _operations(spec):
    function = spec.mlProgram.functions["main"]
    return function.block_specializations[function.opset].operations


def test_unknown_neural_network_layer_is_named(tiny_artifacts, tmp_path):
    import coremltools as ct

    spec = load_spec(tiny_artifacts["mlmodel"].path)
    layer = spec.neuralNetworkClassifier.layers[3]
    name = layer.name
    layer.lrn.alpha = 1.0  # a layer type the executor does not implement
    path = tmp_path / "unknown.mlmodel"
    ct.utils.save_spec(spec, str(path))
    with pytest.raises(
        UnsupportedOpError, match=f"layer '{name}' \\(lrn\\).*'lrn' is not supported"
    ):
        CoreMLRunner(path, backend="numpy")
    result = CliRunner().invoke(main, ["validate", str(path), "--format", "mlmodel"])
    assert result.exit_code == EXIT_VALIDATION_FAILED  # reported as the candidate's error
    (line,) = [line for line in result.stdout.splitlines() if "lrn" in line]
    assert "'lrn' is not supported" in line and name in line and "Traceback" not in result.output
    assert any(line.startswith("ERROR") for line in result.stdout.splitlines())


def test_unknown_ml_program_op_is_named(tiny_artifacts, tmp_path):
    import coremltools as ct

    source = tiny_artifacts["mlpackage-float32"].path
    path = tmp_path / "unknown.mlpackage"
    shutil.copytree(source, path)
    spec = load_spec(path)
    op = next(op for op in _operations(spec) if op.type == "relu6")
    op.type = "gelu_exact"
    ct.utils.save_spec(spec, str(path / "Data/com.apple.CoreML/model.mlmodel"))
    with pytest.raises(UnsupportedOpError, match="op 'gelu_exact' .* not supported"):
        CoreMLRunner(path, backend="numpy")


# ------------------------------------------------------------------ kernels against TensorFlow


def _nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


@pytest.mark.parametrize(
    ("kernel", "stride", "dilation", "groups", "out_channels"),
    [
        (3, 1, 1, 1, 4),
        (3, 2, 1, 1, 6),
        (1, 1, 1, 1, 7),
        (1, 2, 1, 1, 3),
        (3, 2, 1, 6, 6),
        (3, 1, 2, 6, 12),
        (5, 1, 1, 6, 6),
        (3, 1, 1, 2, 4),
    ],
)
def test_conv2d_matches_tensorflow(kernel, stride, dilation, groups, out_channels):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6, 11, 13)).astype(np.float32)
    w = rng.normal(size=(out_channels, 6 // groups, kernel, kernel)).astype(np.float32)
    top, bottom = ops.split_padding(ops.same_padding(11, kernel, stride, dilation))
    left, right = ops.split_padding(ops.same_padding(13, kernel, stride, dilation))
    ours = ops.conv2d(
        x,
        w,
        None,
        strides=(stride, stride),
        dilations=(dilation, dilation),
        groups=groups,
        pads=(top, bottom, left, right),
    )
    expected = (
        tf.nn.conv2d(
            _nhwc(x),
            np.transpose(w, (2, 3, 1, 0)),
            strides=stride,
            padding="SAME",
            dilations=dilation,
        ).numpy()
        if groups == 1
        else None
    )
    if groups > 1:
        expected = tf.keras.layers.Conv2D(
            out_channels,
            kernel,
            stride,
            "same",
            groups=groups,
            dilation_rate=dilation,
            use_bias=False,
        )
        expected.build((None, 11, 13, 6))
        expected.set_weights([np.transpose(w, (2, 3, 1, 0))])
        expected = expected(_nhwc(x)).numpy()
    np.testing.assert_allclose(_nhwc(ours), expected, atol=2e-5)


@pytest.mark.parametrize("kind", ["avg", "max"])
def test_pooling_matches_tensorflow(kind):
    import tensorflow as tf

    x = np.random.default_rng(1).normal(size=(1, 3, 9, 10)).astype(np.float32)
    pads = (
        *ops.split_padding(ops.same_padding(9, 3, 2)),
        *ops.split_padding(ops.same_padding(10, 3, 2)),
    )
    ours = ops.pool2d(x, kind, (3, 3), (2, 2), pads, exclude_padding=True)
    pool = tf.nn.avg_pool2d if kind == "avg" else tf.nn.max_pool2d
    np.testing.assert_allclose(_nhwc(ours), pool(_nhwc(x), 3, 2, "SAME").numpy(), atol=1e-6)
