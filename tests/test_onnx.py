"""ONNX and ORT: the files convert writes, what ONNX Runtime reads back, broken files that
validation must fail, the toolkit's own reader, and the fastest artefact on this machine."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import assert_outputs_vary
from releases import fake_release

from nsfw_mobile.cli import main
from nsfw_mobile.errors import ModelFileError, UnsupportedOpError
from nsfw_mobile.export import MIN_CALIBRATION_IMAGES
from nsfw_mobile.labels import LABELS
from nsfw_mobile.runtime.onnx_runner import OnnxRunner
from nsfw_mobile.validate import validate

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parent.parent
ONNX_KEYS = ["onnx-float32", "onnx-float16", "onnx-int8", "ort-int8"]
CONTRACT_KEYS = {"labels", "nsfw_labels", "input_size", "preprocessing", "source_sha256",
                 "toolkit", "target", "quantization", "name", "opset"}  # fmt: skip


@pytest.fixture(scope="module")
def reference(tiny_source):
    from nsfw_mobile.runtime.keras_runner import KerasRunner

    return KerasRunner(tiny_source)


@pytest.mark.parametrize("key", ONNX_KEYS)
def test_onnx_runtime_reads_the_contract_and_the_uint8_input(tiny_artifacts, tiny_source, key):
    artifact = tiny_artifacts[key]
    session = ort.InferenceSession(str(artifact.path), providers=["CPUExecutionProvider"])
    (image,), (output,) = session.get_inputs(), session.get_outputs()
    assert (image.name, image.type, image.shape[1:]) == ("image", "tensor(uint8)", [96, 96, 3])
    assert (output.name, output.type, output.shape[1]) == ("probabilities", "tensor(float)", 3)
    meta = session.get_modelmeta().custom_metadata_map
    assert set(meta) >= CONTRACT_KEYS
    assert json.loads(meta["labels"]) == list(LABELS)
    assert json.loads(meta["nsfw_labels"]) == list(tiny_source.contract.nsfw_labels)
    assert meta["source_sha256"] == tiny_source.sha256 and meta["input_size"] == "96x96"
    assert (meta["target"], meta["quantization"]) == (artifact.target, artifact.quantization)
    if key.startswith("onnx"):
        proto = onnx.load(str(artifact.path))
        assert proto.ir_version == 7
        assert [(o.domain, o.version) for o in proto.opset_import] == [("", 13)]
        assert proto.producer_name == "nsfw-mobile"


def test_float32_is_within_1e4_of_keras_and_answers_raw_bytes(
    tiny_artifacts, reference, sample_pixels_tiny
):
    session = ort.InferenceSession(str(tiny_artifacts["onnx-float32"].path))
    ours = session.run(None, {"image": sample_pixels_tiny})[0]  # raw RGB bytes, as an app has
    keras = reference.predict(sample_pixels_tiny)
    assert_outputs_vary(keras)
    assert np.abs(ours - keras).max() < 1e-4


# ------------------------------------------------------------------ broken files


def _edited(path: Path, edit, out: Path) -> Path:
    model = onnx.load(str(path))
    edit(model)
    onnx.save(model, str(out))
    return out


def _initializer(model, name):
    return next(t for t in model.graph.initializer if t.name == name)


def swap_labels(model):
    entry = next(p for p in model.metadata_props if p.key == "labels")
    labels = json.loads(entry.value)
    labels[0], labels[1] = labels[1], labels[0]
    entry.value = json.dumps(labels)


def change_a_weight(model):
    """Output-layer weights changed: one float weight far off, or in the int8 model the codes
    of one class's weights (behind their DequantizeLinear) negated. Smaller int8 damage hides
    in the quantization noise that FULL_INT8's mean bound (0.03) has to allow on the tiny
    model: one code flipped moved the outputs by mean 0.0125 (faithful: 0.0128), a whole
    filter of the first convolution negated by 0.027."""
    from onnx import numpy_helper

    last = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm")][-1]
    producer = {out: n for n in model.graph.node for out in n.output}.get(last.input[1])
    name = producer.input[0] if producer is not None else last.input[1]
    tensor = _initializer(model, name)
    values = numpy_helper.to_array(tensor).copy()
    if values.dtype == np.int8:
        values[:, 0] = -np.clip(values[:, 0], -127, 127)
    else:
        values.flat[0] += 25.0
    tensor.CopyFrom(numpy_helper.from_array(values, name))


def scale_by(divisor):
    def edit(model):
        from onnx import numpy_helper

        tensor = _initializer(model, "pixel_scale")
        dtype = numpy_helper.to_array(tensor).dtype  # float16 in the float16 model
        tensor.CopyFrom(numpy_helper.from_array(np.array(divisor, dtype), "pixel_scale"))

    return edit


BROKEN = {
    "labels_reordered": swap_labels,
    "weight_changed": change_a_weight,
    "scale_removed": scale_by(1.0),
    "scale_doubled": scale_by(127.5),
}


ENGINES = [
    "onnxruntime",
    pytest.param("openvino", marks=[pytest.mark.slow, pytest.mark.skipif(
        importlib.util.find_spec("openvino") is None, reason="the openvino extra is not installed"
    )]),
]  # fmt: skip
"""OpenVINO's cases are slow (15 more validations, about 45 s); tests/test_openvino.py keeps
one broken file on OpenVINO in the fast suite."""


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("key", ["onnx-float32", "onnx-float16", "onnx-int8"])
@pytest.mark.parametrize("broken", sorted(BROKEN))
def test_broken_onnx_fails_validation(
    tiny_artifacts, reference, tiny_images_dir, tmp_path, key, broken, engine
):
    """Each broken file fails on each engine that may run it (the same file on OpenVINO)."""
    path = _edited(tiny_artifacts[key].path, BROKEN[broken], tmp_path / "nsfw.onnx")
    (result,) = validate(
        [path], reference=reference, images=[tiny_images_dir], engines=[engine]
    ).candidates
    expected = "mismatch" if broken == "labels_reordered" else "fail"
    assert result.engine == engine
    assert result.status == expected, (result.max_abs_diff, result.mean_abs_diff)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("key", ["onnx-float32", "onnx-float16", "onnx-int8"])
def test_faithful_copy_passes_the_same_check(
    tiny_artifacts, reference, tiny_images_dir, tmp_path, key, engine
):
    """The edit helpers themselves change nothing: an untouched round trip still passes, on
    each engine."""
    path = _edited(tiny_artifacts[key].path, lambda model: None, tmp_path / "nsfw.onnx")
    (result,) = validate(
        [path], reference=reference, images=[tiny_images_dir], engines=[engine]
    ).candidates
    assert (result.status, result.engine) == ("pass", engine), result.failures


# ------------------------------------------------------------------ conversion checks


def test_an_unsupported_layer_is_named_and_nothing_is_written(tmp_path):
    import keras

    from nsfw_mobile.export.onnx import keras2onnx
    from nsfw_mobile.metadata import ModelContract
    from nsfw_mobile.models import SourceModel

    class InverseErf(keras.layers.Layer):
        def call(self, x):
            return keras.ops.erfinv(x * 0.5)

    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(2, 3, name="conv")(inputs)
    x = InverseErf(name="odd_one")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    contract = ModelContract(labels=LABELS, nsfw_labels=(), input_size=(8, 8))
    source = SourceModel(model, contract, "odd", str(tmp_path / "odd.keras"), "0" * 64)
    with pytest.raises(UnsupportedOpError, match=r"layer 'odd_one' \(InverseErf\).*Erfinv"):
        keras2onnx(source, tmp_path / "odd.onnx")
    assert list(tmp_path.iterdir()) == []


def test_int8_needs_calibration_images(tiny_source, tmp_path):
    from nsfw_mobile.errors import UsageError
    from nsfw_mobile.export.onnx import keras2onnx

    wanted = f"at least {MIN_CALIBRATION_IMAGES} calibration images, got 3"
    with pytest.raises(UsageError, match=wanted):
        keras2onnx(
            tiny_source, tmp_path / "x.onnx", quantization="int8",
            calibration=np.zeros((3, 96, 96, 3), np.uint8),
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ the toolkit's reader


def _model(inputs, outputs, *, opset=13, ir=7, initializers=(), nodes=None):
    from onnx import helper

    graph = helper.make_graph(
        nodes or [helper.make_node("Identity", [inputs[0].name], [outputs[0].name])],
        "g",
        inputs,
        outputs,
        list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir
    return model


def _tensor(name, elem, shape):
    from onnx import helper

    return helper.make_tensor_value_info(name, elem, shape)


def _bad_models():
    from onnx import TensorProto

    u8, f32 = TensorProto.UINT8, TensorProto.FLOAT
    image, out = _tensor("image", u8, ["n", 8, 8, 3]), _tensor("p", f32, ["n", 3])
    external = TensorProto(name="w", data_type=f32, dims=[4], data_location=TensorProto.EXTERNAL)
    entry = external.external_data.add()
    entry.key, entry.value = "location", "../../etc/passwd"
    huge = TensorProto(name="big", data_type=f32, dims=[1 << 20, 1 << 10])
    return {
        "two inputs": (_model([image, _tensor("x", u8, ["n", 8, 8, 3])], [out]), "2 inputs"),
        "grey": (_model([_tensor("image", u8, ["n", 8, 8, 1])], [out]), "RGB"),
        "free size": (_model([_tensor("image", u8, ["n", "h", "w", 3])], [out]), "fixed sizes"),
        "int image": (_model([_tensor("image", TensorProto.INT32, ["n", 8, 8, 3])], [out]),
                      "uint8 or float32"),
        "opset": (_model([image], [out], opset=99), "opset 99"),
        "ir": (_model([image], [out], ir=99), "IR version 99"),
        "outside": (_model([image], [out], initializers=[external]), "leaves the model's folder"),
        "huge": (_model([image], [out], initializers=[huge]), "refused before ONNX Runtime"),
        "two outputs": (_model([image], [out, _tensor("q", f32, ["n", 3])]), "2 outputs"),
    }  # fmt: skip


BAD_MODELS = ["two inputs", "grey", "free size", "int image", "opset", "ir", "outside", "huge",
              "two outputs", "truncated", "garbage"]  # fmt: skip


@pytest.mark.parametrize("name", BAD_MODELS)
def test_the_reader_refuses_what_the_toolkit_does_not_run(tmp_path, name):
    path = tmp_path / "model.onnx"
    if name in ("truncated", "garbage"):
        good = _model([_tensor("image", 2, ["n", 8, 8, 3])], [_tensor("p", 1, ["n", 3])])
        data = good.SerializeToString()
        path.write_bytes(data[: len(data) // 2] if name == "truncated" else b"\xff" * 64)
        message = "protobuf does not parse"
    else:
        model, message = _bad_models()[name]
        path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelFileError, match=message):
        OnnxRunner(path)
    result = CliRunner().invoke(main, ["inspect", str(path)])
    # inspect imports a foreign file: one that declares no preprocessing is a usage error
    assert result.exit_code in (1, 2) and len(result.stderr.strip().splitlines()) == 1


def _runnable(path: Path, labels: str) -> Path:
    """A real 3-class model (mean colour per channel) whose metadata says ``labels``."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["x"], ["p"], axes=[1, 2], keepdims=0),
    ]
    model = _model([_tensor("image", TensorProto.UINT8, ["n", 8, 8, 3])],
                   [_tensor("p", TensorProto.FLOAT, ["n", 3])], nodes=nodes)  # fmt: skip
    helper.set_model_props(model, {"labels": labels, "toolkit": "tests"})
    path.write_bytes(model.SerializeToString())
    return path


def test_the_contract_in_the_metadata_is_read_or_the_problem_named(tmp_path):
    pixels = np.full((2, 8, 8, 3), 255, np.uint8)
    with OnnxRunner(_runnable(tmp_path / "a.onnx", '["x", "y", "z"]')) as runner:
        assert runner.labels == ("x", "y", "z") and runner.predict(pixels)[0, 0] == 255
    with OnnxRunner(_runnable(tmp_path / "b.onnx", "5")) as runner:  # not a list: by width
        assert runner.labels == LABELS
    with pytest.raises(ModelFileError, match="2 labels for a model with 3 outputs"):
        OnnxRunner(_runnable(tmp_path / "c.onnx", '["x", "y"]'))


def test_the_runner_needs_neither_tensorflow_nor_the_onnx_package(tiny_artifacts, samples):
    code = (
        "import sys, numpy as np\n"
        "from nsfw_mobile import open_runner\n"
        f"runner = open_runner({str(tiny_artifacts['onnx-int8'].path)!r})\n"
        "print(runner.predict(np.zeros((2, 96, 96, 3), np.uint8)).shape, "
        "[m for m in ('tensorflow', 'keras', 'onnx') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True)  # fmt: skip
    assert out.stdout.strip() == "(2, 3) []"


# ------------------------------------------------------------------ the fastest engine here


def _release(folder: Path, files: dict[str, float]) -> Path:
    """A release folder of the shipped models whose manifest claims the given latencies."""
    return fake_release(
        folder, {name: {"latency": {"threads_1": {"median_ms": ms}}} for name, ms in files.items()}
    )


def test_the_probe_picks_what_is_faster_here_and_remembers_it(tmp_path, monkeypatch):
    from nsfw_mobile.engine_choice import fastest_here
    from nsfw_mobile.manifest import fastest_artifact

    monkeypatch.setenv("NSFW_MOBILE_CACHE", str(tmp_path / "cache"))
    # the manifest claims the float32 ONNX file is fastest; the int8 TFLite file is not
    folder = _release(tmp_path / "release", {"nsfw_float32.onnx": 1.0, "nsfw_int8.tflite": 1.5})
    assert fastest_artifact(folder).name == "nsfw_float32.onnx"
    first = fastest_here(folder)
    assert first.path.name == "nsfw_int8.tflite" and not first.cached
    assert first.probed_ms["nsfw_int8.tflite"] < first.probed_ms["nsfw_float32.onnx"]
    second = fastest_here(folder)
    assert second.cached and second.probed_ms == first.probed_ms
    assert second.path == first.path and second.cache_file.is_file()
    # a changed file is a different release: probed again
    shutil.copy(ROOT / "models" / "nsfw_int8.onnx", folder / "nsfw_float32.onnx")
    third = fastest_here(folder)
    assert not third.cached and third.cache_file != second.cache_file


def test_predict_on_a_release_says_what_it_chose_and_why(tmp_path, monkeypatch, samples):
    monkeypatch.setenv("NSFW_MOBILE_CACHE", str(tmp_path / "cache"))
    folder = _release(tmp_path / "release", {"nsfw_float32.tflite": 1.0, "nsfw_int8.onnx": 1.5,
                                             "nsfw_int8.tflite": 9.0})  # fmt: skip
    quiet = CliRunner().invoke(main, ["predict", str(samples[0]), "--model", str(folder)])
    assert quiet.exit_code == 0, quiet.output
    (using, summary) = quiet.stderr.strip().splitlines()
    assert using.startswith("using nsfw_int8.onnx (onnxruntime), the fastest")
    verbose = CliRunner().invoke(
        main, ["predict", str(samples[0]), "--model", str(folder), "--verbose"]
    )
    assert "measured on this machine, 1 thread" in verbose.stderr
    assert "cached in" in verbose.stderr  # the first run's probe is remembered
    assert "nsfw_int8.tflite (recorded 9.00 ms, over 2x the fastest recorded 1.00 ms)" in (
        verbose.stderr
    )
