"""TF.js export: Keras 2 style topology, weight encodings, the round trip through the
importer, and the model run in real TensorFlow.js under Node (tfjs_runner)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import assert_outputs_vary

from nsfw_mobile.cli import main
from nsfw_mobile.errors import ModelFileError, UnsupportedOpError
from nsfw_mobile.export.tfjs import keras2tfjs, quantize_uint8
from nsfw_mobile.formats import by_key
from nsfw_mobile.models import PRETRAINED_DIR, load_source
from nsfw_mobile.node_packages import NodeMissingError
from nsfw_mobile.tfjs import SHARD_BYTES, tfjs2keras
from nsfw_mobile.validate import validate

QUANTIZATIONS = ("none", "float16", "uint8")
# Round trip of the tiny model (96 px, alpha 0.35, a few epochs on synthetic images; it
# amplifies weight error more than the pretrained model does). Measured over the shipped
# and synthetic images: float16 max 0.058, uint8 max 0.235.
TINY_ROUND_TRIP = {"none": 1e-6, "float16": 0.08, "uint8": 0.4}
WASM_VS_CPU = 5e-5
"""tfjs's wasm backend against its cpu backend on the same export: measured 1.6e-5 on the
tiny model, 8.9e-7 on the pretrained one (shipped samples)."""


@pytest.fixture(scope="module")
def tiny_exports(tiny_source, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tfjs")
    return {q: keras2tfjs(tiny_source, folder / f"tiny_{q}", quantization=q) for q in QUANTIZATIONS}


@pytest.fixture(scope="module")
def node_ready():
    from nsfw_mobile.node_packages import node_modules

    try:
        return node_modules()
    except NodeMissingError as exc:
        import os

        if os.environ.get("CI"):
            pytest.fail(f"{exc} (CI must have Node and npm)")
        pytest.skip(str(exc))


def topology_layers(folder: Path) -> list[dict]:
    return json.loads((folder / "model.json").read_text())["modelTopology"]["config"]["layers"]


def test_topology_is_the_keras2_dialect_tfjs_reads(tiny_exports):
    folder = tiny_exports["none"].path
    document = json.loads((folder / "model.json").read_text())
    config = document["modelTopology"]["config"]
    layers = config["layers"]
    assert config["input_layers"] == [["image", 0, 0]]
    assert config["output_layers"] == [["probabilities", 0, 0]]
    assert "batch_shape" not in json.dumps(document)
    assert layers[0]["config"]["batch_input_shape"] == [None, 96, 96, 3]
    # the nested MobileNetV2 is flattened: every inbound reference names a layer of this list
    names = {layer["name"] for layer in layers}
    assert not any(layer["class_name"] in ("Functional", "Model") for layer in layers)
    for layer in layers[1:]:
        (call,) = layer["inbound_nodes"]
        assert all(ref[0] in names and ref[1:] == [0, 0, {}] for ref in call)
    add = next(layer for layer in layers if layer["class_name"] == "Add")
    assert len(add["inbound_nodes"][0]) == 2
    for layer in layers:
        for key, value in layer["config"].items():
            if key.endswith("_initializer"):
                assert value == {"class_name": "Zeros", "config": {}}
            assert key not in ("module", "registered_name", "build_config")
        assert layer["config"].get("dtype", "float32") == "float32"
    weights = document["weightsManifest"][0]["weights"]
    assert any(w["name"].endswith("/depthwise_kernel") for w in weights)
    contract = document["userDefinedMetadata"]["nsfw_mobile"]
    assert json.loads(contract["labels"]) == ["Neutral", "Porn", "Sexy"]
    assert contract["target"] == "tfjs" and contract["quantization"] == "none"


def _stored_as(weights) -> set[str]:
    return {(w.get("quantization") or {}).get("dtype", "float32") for w in weights}


def test_weights_are_encoded_as_tfjs_decodes_them(tiny_exports):
    """uint8 keeps vectors (biases, BatchNorm) in float32, as the exporter's docstring says."""
    for quantization, artifact in tiny_exports.items():
        document = json.loads((artifact.path / "model.json").read_text())
        (group,) = document["weightsManifest"]
        assert group["paths"] == ["group1-shard1of1.bin"]
        kernels = _stored_as(w for w in group["weights"] if len(w["shape"]) > 1)
        vectors = _stored_as(w for w in group["weights"] if len(w["shape"]) <= 1)
        expected = {"none": "float32", "float16": "float16", "uint8": "uint8"}[quantization]
        assert kernels == {expected}
        assert vectors == ({"float32"} if quantization == "uint8" else {expected})
        if quantization == "none":
            assert all("quantization" not in w for w in group["weights"])  # null crashes tfjs


def test_uint8_quantizer_reproduces_the_tfjs_converter():
    """NSFWJS's shipped weights were quantized by the TF.js converter: quantizing their
    decoded values again gives back the same codes, min and scale."""
    document = json.loads((PRETRAINED_DIR / "model.json").read_text())
    data = (PRETRAINED_DIR / "group1-shard1of1.bin").read_bytes()
    offset = 0
    for spec in document["weightsManifest"][0]["weights"]:
        size = int(np.prod(spec["shape"]))
        codes = np.frombuffer(data, np.uint8, size, offset)
        offset += size
        q = spec["quantization"]
        decoded = (codes * np.float64(q["scale"]) + q["min"]).astype(np.float32)
        again, low, scale = quantize_uint8(decoded)
        assert low == pytest.approx(q["min"], rel=1e-6, abs=1e-9), spec["name"]
        assert scale == pytest.approx(q["scale"], rel=1e-6), spec["name"]
        assert np.abs(again.astype(int) - codes).max() <= 1, spec["name"]


def test_big_models_are_cut_into_4_mib_shards(tmp_path):
    source = load_source(PRETRAINED_DIR / "model.json")
    artifact = keras2tfjs(source, tmp_path / "five", quantization="none")
    shards = sorted(p.name for p in artifact.path.glob("*.bin"))
    assert shards == ["group1-shard1of3.bin", "group1-shard2of3.bin", "group1-shard3of3.bin"]
    sizes = [(artifact.path / name).stat().st_size for name in shards]
    assert sizes[:2] == [SHARD_BYTES, SHARD_BYTES] and 0 < sizes[2] <= SHARD_BYTES


def test_round_trip_through_the_importer(tiny_exports, tiny_model, sample_pixels_tiny):
    reference = tiny_model.predict(sample_pixels_tiny / np.float32(255), verbose=0)
    assert_outputs_vary(reference)
    for quantization, artifact in tiny_exports.items():
        back = tfjs2keras(artifact.path / "model.json")
        ours = back.predict(sample_pixels_tiny / np.float32(255), verbose=0)
        difference = np.abs(ours - reference).max()
        print(f"\nround trip tiny {quantization}: max abs diff {difference:.2e}")
        assert difference <= TINY_ROUND_TRIP[quantization], quantization


@pytest.mark.slow
def test_round_trip_of_the_pretrained_model(tmp_path, sample_pixels_224, pretrained3):
    """Full size: each weight encoding within its registry tolerance after the round trip."""
    from nsfw_mobile.precision import emulate
    from nsfw_mobile.validate import compare, sensitivity_of

    source = load_source(None)
    reference = pretrained3.predict(sample_pixels_224 / np.float32(255), verbose=0)
    for quantization in QUANTIZATIONS:
        artifact = keras2tfjs(source, tmp_path / quantization, quantization=quantization)
        back = tfjs2keras(artifact.path / "model.json")
        ours = back.predict(sample_pixels_224 / np.float32(255), verbose=0)
        difference = np.abs(ours - reference)
        tolerance = by_key({"none": "tfjs-float32"}.get(quantization, f"tfjs-{quantization}"))
        tolerance = tolerance.tolerance
        emulated = (
            emulate(pretrained3, sample_pixels_224, tolerance.precision)
            if tolerance.precision
            else None
        )
        own = sensitivity_of(reference, emulated, tolerance.precision)
        figures, failures = compare(reference, ours, tolerance, own)
        print(f"\nround trip pretrained {quantization}: max {difference.max():.2e}, {figures}")
        assert failures == [], (quantization, failures)


def test_unsupported_layers_fail_before_any_file(tmp_path):
    import keras

    from nsfw_mobile.models import SourceModel, pretrained_contract

    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.UpSampling2D(name="upsample")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    contract = pretrained_contract(3).replace(input_size=(32, 32))
    source = SourceModel(model, contract, "odd", "odd.keras", "0" * 64)
    with pytest.raises(UnsupportedOpError, match="'upsample' is a UpSampling2D"):
        keras2tfjs(source, tmp_path / "odd")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def backend_runs(tiny_exports, sample_pixels_tiny, node_ready):
    """The tiny float32 export on both tfjs backends: {backend: (runner facts, probabilities)}."""
    from nsfw_mobile.runtime.tfjs_runner import TFJSRunner

    runs = {}
    for backend in ("wasm", "cpu"):
        runner = TFJSRunner(tiny_exports["none"].path, backend=backend)
        try:
            facts = {
                "tfjs": runner.tfjs_version,
                "backend": runner.backend,
                "labels": runner.labels,
                "input_size": runner.input_size,
                "source_sha256": runner.contract.source_sha256,
                "empty": runner.predict(sample_pixels_tiny[:0]).shape,
            }
            runs[backend] = facts, runner.predict(sample_pixels_tiny)
        finally:
            runner.close()
    return runs


@pytest.mark.parametrize("backend", ["wasm", "cpu"])
def test_tfjs_runner_runs_the_export_on_each_backend(backend_runs, backend):
    facts, probabilities = backend_runs[backend]
    assert facts["tfjs"] == "4.22.0" and facts["backend"] == backend
    assert facts["labels"] == ("Neutral", "Porn", "Sexy") and facts["input_size"] == (96, 96)
    assert facts["source_sha256"]  # the contract came through model.json
    assert facts["empty"] == (0, 3)
    assert_outputs_vary(probabilities)


def test_wasm_agrees_with_cpu_and_cpu_with_keras(backend_runs, tiny_model, sample_pixels_tiny):
    """cpu (tfjs's plain JavaScript kernels) is the reference: within 1e-5 of Keras. wasm
    (XNNPACK) sums in another order: on this tiny MobileNetV2 it is 1.6e-5 from both; on
    the pretrained model 8.9e-7 from cpu (test_wasm_agrees_with_cpu_on_the_pretrained_model)."""
    reference = tiny_model.predict(sample_pixels_tiny / np.float32(255), verbose=0)
    wasm, cpu = backend_runs["wasm"][1], backend_runs["cpu"][1]
    to_keras = np.abs(cpu - reference).max()
    wasm_to_cpu = np.abs(wasm - cpu).max()
    print(f"\nTF.js tiny float32: cpu vs Keras {to_keras:.2e}, wasm vs cpu {wasm_to_cpu:.2e}")
    assert to_keras <= 1e-5
    assert wasm_to_cpu <= WASM_VS_CPU
    assert (wasm.argmax(1) == cpu.argmax(1)).all()


@pytest.mark.slow
def test_wasm_agrees_with_cpu_on_the_pretrained_model(samples, node_ready):
    """Every third shipped sample: the cpu backend takes about 1 s an image here
    (benchmarks/tfjs_backends.py compares all of them)."""
    from nsfw_mobile.images import load_images
    from nsfw_mobile.runtime.tfjs_runner import TFJSRunner

    pixels = load_images(samples[::3], 224).pixels
    results = {}
    for backend in ("wasm", "cpu"):
        runner = TFJSRunner(PRETRAINED_DIR, backend=backend)
        try:
            results[backend] = runner.predict(pixels)
        finally:
            runner.close()
    difference = np.abs(results["wasm"] - results["cpu"])
    print(
        f"\nTF.js pretrained MobileNetV2 on {len(pixels)} samples: wasm vs cpu max "
        f"{difference.max():.2e}, mean {difference.mean():.2e}"
    )
    assert difference.max() <= WASM_VS_CPU
    assert (results["wasm"].argmax(1) == results["cpu"].argmax(1)).all()


def test_wasm_is_the_default_backend_and_a_bad_one_is_refused(tiny_exports, node_ready):
    from nsfw_mobile import open_runner
    from nsfw_mobile.errors import UsageError
    from nsfw_mobile.runtime.tfjs_runner import TFJSRunner

    runner = open_runner(tiny_exports["uint8"].path)
    try:
        assert runner.backend == "wasm"
        assert runner.simd  # Node 20 runs the SIMD build of the .wasm binary
    finally:
        runner.close()
    with pytest.raises(UsageError, match="TF.js backend 'webgl': choose one of wasm, cpu"):
        TFJSRunner(tiny_exports["uint8"].path, backend="webgl")


def test_validate_passes_the_exports_and_catches_broken_ones(
    tiny_exports, tiny_model_path, tiny_images_dir, tmp_path, node_ready
):
    good = [a.path for a in tiny_exports.values()]
    report = validate(good, reference=tiny_model_path, images=[tiny_images_dir])
    assert report.passed, [r.failures for r in report.candidates]
    assert [r.format for r in report.candidates] == ["tfjs-float32", "tfjs-float16", "tfjs-uint8"]
    for result in report.candidates:
        print(f"\n{result.format}: max {result.max_abs_diff:.2e}, mean {result.mean_abs_diff:.2e}")

    def broken(name, edit):
        folder = tmp_path / name
        shutil.copytree(tiny_exports["none"].path, folder)
        document = json.loads((folder / "model.json").read_text())
        edit(document, folder)
        (folder / "model.json").write_text(json.dumps(document))
        return folder

    def reorder_labels(document, _):
        contract = document["userDefinedMetadata"]["nsfw_mobile"]
        contract["labels"] = json.dumps(["Porn", "Neutral", "Sexy"])

    def perturb_weight(document, folder):
        weights = document["weightsManifest"][0]["weights"]
        offset = 0
        for spec in weights:
            if spec["name"] == "probabilities/kernel":
                break
            offset += 4 * int(np.prod(spec["shape"]))
        shard = folder / "group1-shard1of1.bin"
        data = bytearray(shard.read_bytes())
        value = np.frombuffer(data, "<f4", 1, offset)[0]
        data[offset : offset + 4] = np.float32(value + 3.0).tobytes()
        shard.write_bytes(bytes(data))

    def wrong_input_scale(document, folder):
        """The first convolution expects raw 0..255 pixels: inputs / 255 are 255x too small."""
        shard = folder / "group1-shard1of1.bin"
        data = np.frombuffer(shard.read_bytes(), "<f4").copy()
        first = document["weightsManifest"][0]["weights"][0]
        assert first["name"] == "Conv1/kernel"
        data[: int(np.prod(first["shape"]))] /= 255
        shard.write_bytes(data.tobytes())

    cases = {"labels": reorder_labels, "weight": perturb_weight, "scale": wrong_input_scale}
    folders = [broken(name, edit) for name, edit in cases.items()]
    report = validate(folders, reference=tiny_model_path, images=[tiny_images_dir])
    for name, result in zip(cases, report.candidates):
        assert not result.passed, name
        print(f"\nbroken TF.js export ({name}): {result.status}, {result.failures}")
    assert "label order" in report.candidates[0].failures[0]


def test_a_wasm_package_without_its_binaries_is_named(tiny_exports, node_ready, tmp_path):
    """The .wasm files are read from the npm package: a copy without them fails in one line
    that names the missing file; the cpu backend of the same packages still runs."""
    from nsfw_mobile.runtime.tfjs_runner import TFJSRunner

    modules = tmp_path / "node_modules"
    for package in [*node_ready.iterdir(), *(node_ready / "@tensorflow").iterdir()]:
        link = modules / package.relative_to(node_ready)
        if package.name not in ("@tensorflow", "tfjs-backend-wasm"):
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(package)
    wasm = "@tensorflow/tfjs-backend-wasm"
    shutil.copytree(node_ready / wasm, modules / wasm, ignore=shutil.ignore_patterns("*.wasm"))
    with pytest.raises(ModelFileError, match=r"tf.setBackend\(\"wasm\"\).*-simd\.wasm'\)$"):
        TFJSRunner(tiny_exports["uint8"].path, modules=modules)
    runner = TFJSRunner(tiny_exports["uint8"].path, backend="cpu", modules=modules)
    runner.close()


def test_node_missing_is_one_line(tiny_exports, monkeypatch, tmp_path):
    from nsfw_mobile.images import sample_images
    from nsfw_mobile.runtime.tfjs_runner import TFJSRunner

    photo = shutil.copy(sample_images()[0], tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NodeMissingError, match="`node` is not on PATH"):
        TFJSRunner(tiny_exports["none"].path)
    result = CliRunner().invoke(
        main, ["predict", "--model", str(tiny_exports["none"].path), str(photo)]
    )
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "Node.js" in result.output


def test_broken_folder_gets_the_importer_message(tiny_exports, tmp_path, node_ready):
    from nsfw_mobile.runtime.tfjs_runner import TFJSRunner

    folder = tmp_path / "cut"
    shutil.copytree(tiny_exports["none"].path, folder)
    shard = folder / "group1-shard1of1.bin"
    shard.write_bytes(shard.read_bytes()[:1000])
    with pytest.raises(ModelFileError, match="shard is short or truncated"):
        TFJSRunner(folder)


def test_convert_cli_writes_tfjs_and_says_how_to_load_it(tiny_model_path, tmp_path):
    result = CliRunner().invoke(
        main,
        ["convert", str(tiny_model_path), "--to", "tfjs", "--quantize", "uint8",
         "--out", str(tmp_path), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (artifact,) = json.loads(result.stdout)["artifacts"]
    assert artifact["format"] == "tfjs-uint8"
    assert Path(artifact["path"]).name == "nsfw_tfjs_uint8"
    assert any("web_sample/nsfw-classifier.js" in note for note in artifact["notes"])
    inspected = CliRunner().invoke(main, ["inspect", artifact["path"], "--json"])
    assert inspected.exit_code == 0, inspected.output
    report = json.loads(inspected.stdout)
    assert report["format"] == "tfjs"
    document = json.loads((Path(artifact["path"]) / "model.json").read_text())
    kernels = sum(len(w["shape"]) > 1 for w in document["weightsManifest"][0]["weights"])
    assert report["weight_storage"] == {"uint8": kernels, "float32": 268 - kernels}
    assert report["labels"] == ["Neutral", "Porn", "Sexy"]
