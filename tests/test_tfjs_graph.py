"""TF.js graph models: imported as standard Keras layers, checked against tfjs's own
``tf.loadGraphModel`` under Node, taken by every converter; any op or setting the importer
does not build is refused by name before anything is written, and the weights pass the
same manifest and shard checks as layers models.

The micro graph model (fuzz/models/tfjs_graph, made by fuzz/make_seeds.py) has every op
the importer supports, laid out as tfjs-converter writes them, with uint8 and float32
weights; each test edits a copy.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import assert_outputs_vary

from nsfw_mobile.cli import main
from nsfw_mobile.errors import ModelFileError, UnsupportedOpError
from nsfw_mobile.images import load_images
from nsfw_mobile.node_packages import NodeMissingError
from nsfw_mobile.tfjs import tfjs2keras

ROOT = Path(__file__).resolve().parent.parent
MICRO_GRAPH = ROOT / "fuzz" / "models" / "tfjs_graph"
SIZE = 16
TFJS_PARITY = 1e-5
"""Keras import vs tf.loadGraphModel (CPU backend): measured 1.2e-7 on the micro graph."""


@pytest.fixture
def graph(tmp_path) -> Path:
    folder = tmp_path / "graph_model"
    shutil.copytree(MICRO_GRAPH, folder)
    return folder / "model.json"


def edit(model_json: Path, change) -> Path:
    document = json.loads(model_json.read_text())
    change(document)
    model_json.write_text(json.dumps(document))
    return model_json


def node(document: dict, name: str) -> dict:
    return next(n for n in document["modelTopology"]["node"] if n["name"] == name)


def text(value: str) -> dict:
    return {"s": base64.b64encode(value.encode()).decode()}


@pytest.fixture(scope="module")
def micro_pixels(samples):
    return load_images(samples, SIZE).pixels


def test_graph_becomes_standard_keras_layers(graph, micro_pixels):
    model = tfjs2keras(graph)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == [
        "InputLayer", "Rescaling", "Conv2D", "ReLU", "DepthwiseConv2D", "ReLU", "Conv2D", "Add",
        "AveragePooling2D", "Flatten", "Dense", "Softmax",
    ]  # fmt: skip
    rescaling = model.get_layer("shift")
    assert (rescaling.scale, rescaling.offset) == (2.0, -1.0)  # Mul and Sub folded into one
    assert [layer.max_value for layer in model.layers if type(layer).__name__ == "ReLU"] == [6, 6]
    assert model.input.name == "image" and tuple(model.input.shape) == (None, SIZE, SIZE, 3)
    assert model.count_params() == 187
    assert_outputs_vary(model.predict(micro_pixels / np.float32(255), verbose=0))


@pytest.fixture(scope="module")
def tfjs_ready():
    from nsfw_mobile.node_packages import node_modules

    try:
        return node_modules()
    except NodeMissingError as exc:
        import os

        if os.environ.get("CI"):
            pytest.fail(f"{exc} (CI must have Node and npm)")
        pytest.skip(str(exc))


def test_import_matches_tfjs_load_graph_model(graph, micro_pixels, tfjs_ready):
    """The graph itself, run by tfjs (tf.loadGraphModel, CPU backend, from memory), against
    the Keras import on the same uint8 pixels."""
    from nsfw_mobile.runtime.keras_runner import KerasRunner
    from nsfw_mobile.runtime.tfjs_runner import TFJSRunner

    tfjs = TFJSRunner(graph)
    try:
        graph_outputs = tfjs.predict(micro_pixels)
        assert tfjs.input_size == (SIZE, SIZE) and tfjs.labels == ("Neutral", "Porn", "Sexy")
    finally:
        tfjs.close()
    keras_outputs = KerasRunner.open(graph).predict(micro_pixels)
    difference = np.abs(graph_outputs - keras_outputs).max()
    print(f"\nmicro graph: Keras import vs tf.loadGraphModel, max abs diff {difference:.1e}")
    assert difference <= TFJS_PARITY
    assert_outputs_vary(graph_outputs)


def test_every_converter_takes_the_import(graph, tmp_path, micro_pixels):
    from nsfw_mobile.convert import convert_all
    from nsfw_mobile.formats import by_key
    from nsfw_mobile.models import load_source
    from nsfw_mobile.runtime.keras_runner import KerasRunner
    from nsfw_mobile.validate import validate

    source = load_source(graph)
    keys = ("tflite-float32", "mlmodel", "mlpackage-float32", "tfjs-float32")
    artifacts = convert_all(source, [by_key(k) for k in keys], tmp_path / "dist")
    images = sorted((ROOT / "nsfw_mobile" / "samples").iterdir())
    report = validate([a.path for a in artifacts], reference=KerasRunner(source), images=images)
    figures = {Path(c.path).name: (c.status, c.max_abs_diff) for c in report.candidates}
    print(f"\nmicro graph through the converters: {figures}")
    assert report.passed, figures


def import_cli(model_json: Path, out: Path):
    return CliRunner().invoke(main, ["import-tfjs", str(model_json), str(out)])


def test_unknown_op_is_refused_by_name_before_anything_is_written(graph, tmp_path):
    edit(graph, lambda d: node(d, "block/depthwise").update(op="DepthwiseConv2dNative"))
    out = tmp_path / "out.keras"
    result = import_cli(graph, out)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert "graph node 'block/depthwise' is a DepthwiseConv2dNative" in result.stderr
    assert "supported: Placeholder" in result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [graph.parent]


def test_truncated_shard_is_a_one_line_error(graph, tmp_path):
    shard = graph.parent / "group1-shard1of1.bin"
    shard.write_bytes(shard.read_bytes()[:-40])
    result = import_cli(graph, tmp_path / "out.keras")
    assert result.exit_code == 1 and len(result.stderr.splitlines()) == 1
    assert "shard is short or truncated" in result.stderr
    assert not (tmp_path / "out.keras").exists()


def _set_attr(name, key, value):
    return lambda d: node(d, name)["attr"].update({key: value})


@pytest.mark.parametrize(
    "change, message",
    [
        (_set_attr("conv/Relu6", "padding", text("EXPLICIT")), "padding 'EXPLICIT'"),
        (_set_attr("conv/Relu6", "data_format", text("NCHW")), "data format 'NCHW'"),
        (
            _set_attr("conv/Relu6", "fused_ops", {"list": {"s": [text("FusedBatchNorm")["s"]]}}),
            r"fuses \['FusedBatchNorm'\]",
        ),
        (
            _set_attr("block/project", "fused_ops",
                      {"list": {"s": [text("BiasAdd")["s"], text("Elu")["s"]]}}),
            r"fuses \['BiasAdd', 'Elu'\]",
        ),
        (
            _set_attr("conv/Relu6", "dilations", {"list": {"i": ["1", "2", "2", "1"]}}),
            "both strides and dilations",
        ),
        (_set_attr("dense/BiasAdd", "transpose_a", {"b": True}), "transposes its input"),
        (lambda d: node(d, "shift")["input"].__setitem__(1, "scale"), "subtracts two computed"),
        (lambda d: node(d, "block/add")["input"].__setitem__(1, "block/project:1"), "output 1"),
        (_set_attr("block/add", "T", {"type": "DT_INT32"}), "computes in DT_INT32"),
        (lambda d: node(d, "scale")["input"].__setitem__(0, "conv/bias"), "of shape \\(4,\\)"),
        (
            lambda d: d["userDefinedMetadata"]["signature"]["outputs"].update({"pool:0": {}}),
            "2 outputs",
        ),
    ],
    ids=["padding", "nchw", "batchnorm", "elu", "dilated-stride", "transpose", "sub", "output-1",
         "int32", "vector-mul", "two-outputs"],
)  # fmt: skip
def test_unsupported_settings_are_named(graph, change, message):
    with pytest.raises(UnsupportedOpError, match=message):
        tfjs2keras(edit(graph, change))


def _drop_weight(name):
    def change(document):
        group = document["weightsManifest"][0]
        group["weights"] = [w for w in group["weights"] if w["name"] != name]

    return change


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: node(d, "conv/Relu6")["input"].append("nowhere"), "reads unknown node"),
        (lambda d: node(d, "shift")["input"].__setitem__(0, "softmax"), "cycle"),
        (lambda d: d["modelTopology"]["node"].append(dict(node(d, "pool"))), "appears twice"),
        (
            lambda d: node(d, "input")["attr"]["shape"]["shape"]["dim"][1].update(size="-1"),
            "of a fixed size",
        ),
        (lambda d: node(d, "squeeze")["attr"].update({"squeeze_dims": {"list": {"i": ["3"]}}}),
         "squeezes axes"),
        (lambda d: node(d, "dense/BiasAdd")["input"].__setitem__(1, "conv/weights"),
         "expected 2 dimensions"),
        (lambda d: node(d, "block/project")["input"].__setitem__(1, "conv/weights"),
         "needs"),
    ],
    ids=["unknown-input", "cycle", "duplicate", "open-size", "squeeze", "matrix", "shapes"],
)  # fmt: skip
def test_malformed_graphs_are_model_file_errors(graph, change, message):
    with pytest.raises(ModelFileError, match=message):
        tfjs2keras(edit(graph, change))


def test_an_affine_output_read_twice_is_built_once_per_reader(graph, micro_pixels):
    """x * 2 feeds both x * 2 - 1 and a sum with it: two Rescaling layers, the right values."""
    import keras

    def fan_out(document):
        document["modelTopology"]["node"].append(
            {"name": "both", "op": "AddV2", "input": ["scale", "shift"], "attr": {}}
        )
        node(document, "conv/Relu6")["input"][0] = "both"

    model = tfjs2keras(edit(graph, fan_out))
    scalings = sorted((x.scale, x.offset) for x in model.layers if type(x).__name__ == "Rescaling")
    assert scalings == [(2.0, -1.0), (2.0, 0.0)]
    pixels = micro_pixels[:4] / np.float32(255)
    both = keras.Model(model.input, model.get_layer("both").output).predict(pixels, verbose=0)
    np.testing.assert_allclose(both, 4 * pixels - 1, atol=1e-6)


def test_manifest_and_constants_must_agree(graph, tmp_path):
    """A constant without a weight, and a weight no node reads, are named; the shard is read
    with the layers models' checks (here: bytes left over once the manifest shrank)."""
    copy = tmp_path / "copy"
    shutil.copytree(graph.parent, copy)
    with pytest.raises(ModelFileError, match="shard and manifest do not match"):
        tfjs2keras(edit(graph, _drop_weight("dense/bias")))

    def orphan(document):
        node(document, "scale")["input"][0] = "shift/y"

    with pytest.raises(ModelFileError, match=r"weights \['scale/y'\] .* belong to no node"):
        tfjs2keras(edit(copy / "model.json", orphan))

    def constant_without_weight(document):
        document["modelTopology"]["node"].append({"name": "extra", "op": "Const", "attr": {}})
        node(document, "dense/BiasAdd")["input"][2] = "extra"

    with pytest.raises(ModelFileError, match="constant 'extra' has no entry"):
        tfjs2keras(edit(copy / "model.json", constant_without_weight))


def test_inspect_reads_a_graph_model(graph):
    result = CliRunner().invoke(main, ["inspect", str(graph.parent), "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["format"] == "tfjs" and report["kind"] == "graph model"
    assert report["ops"]["_FusedConv2D"] == 2 and report["ops"]["Const"] == 10
    assert report["inputs"][0]["shape"] == [None, SIZE, SIZE, 3]
    assert report["labels"] == ["Neutral", "Porn", "Sexy"]
    assert report["weight_storage"] == {"float32": 6, "uint8": 4}
