"""convert: every format's spec, metadata, option checks, atomic writes, MediaPipe."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from nsfw_mobile.atomic import PARTIAL_GLOB, final_name
from nsfw_mobile.cli import EXIT_USAGE, main
from nsfw_mobile.errors import UsageError
from nsfw_mobile.export.coreml import LABEL_OUTPUT, PROBABILITIES_OUTPUT
from nsfw_mobile.files import sha256_file
from nsfw_mobile.formats import FORMATS, select
from nsfw_mobile.labels import LABELS
from nsfw_mobile.models import pretrained_contract
from nsfw_mobile.runtime.coreml_spec import class_labels, image_preprocessing, load_spec
from nsfw_mobile.runtime.tflite_runner import TFLiteRunner
from nsfw_mobile.tfjs import read_contract_properties
from nsfw_mobile.tflite_metadata import read_metadata

COREML = [f.key for f in FORMATS if f.target in ("mlmodel", "mlpackage")]
TFLITE = [f.key for f in FORMATS if f.target == "tflite"]
PROVENANCE_KEYS = {
    "labels",
    "input_size",
    "preprocessing",
    "toolkit",
    "source_model",
    "source_sha256",
    "quantization",
    "target",
}


def check_coreml_spec(path, size, contract):
    spec = load_spec(path)
    assert class_labels(spec) == LABELS
    (image,) = spec.description.input
    assert image.name == "image"
    assert image.type.imageType.colorSpace == 20  # RGB
    assert (image.type.imageType.width, image.type.imageType.height) == (size, size)
    preprocessing = image_preprocessing(spec)["image"]
    assert preprocessing["scale"] == pytest.approx(1 / 255) and preprocessing["bias"] == [0, 0, 0]
    assert {o.name for o in spec.description.output} == {LABEL_OUTPUT, PROBABILITIES_OUTPUT}
    assert spec.description.predictedFeatureName == LABEL_OUTPUT
    assert spec.description.predictedProbabilitiesName == PROBABILITIES_OUTPUT
    user = dict(spec.description.metadata.userDefined)
    assert set(user) >= PROVENANCE_KEYS
    assert json.loads(user["labels"]) == list(LABELS) and user["input_size"] == f"{size}x{size}"
    described = spec.description.metadata
    assert (described.author, described.license) == (contract.author, contract.license)
    assert json.loads(user["nsfw_labels"]) == list(contract.nsfw_labels)
    assert "com.github.apple.coremltools.conversion_date" not in user
    return spec


@pytest.mark.parametrize("key", COREML)
def test_tiny_coreml_spec(tiny_artifacts, tiny_source, key):
    artifact = tiny_artifacts[key]
    spec = check_coreml_spec(artifact.path, 96, tiny_source.contract)
    fmt = (
        select(artifact.target, artifact.quantization, None)
        if artifact.target == "mlmodel"
        else None
    )
    if key.startswith("mlmodel"):
        assert spec.specificationVersion == 4  # iOS 13
        assert fmt.key == key
    else:
        assert spec.WhichOneof("Type") == "mlProgram"
    user = dict(spec.description.metadata.userDefined)
    assert user["source_sha256"] == tiny_source.sha256
    if key == "mlpackage-int8":
        assert spec.specificationVersion >= 7  # iOS 16
        assert any("iOS 16" in note for note in artifact.notes)
    if key == "mlpackage-float32":
        assert user["compute_precision"] == "float32"


@pytest.mark.parametrize("key", TFLITE)
def test_tiny_tflite_tensors_and_metadata(tiny_artifacts, key):
    artifact = tiny_artifacts[key]
    runner = TFLiteRunner(artifact.path)
    meta = read_metadata(artifact.path)
    assert meta.labels == list(LABELS) and runner.labels == LABELS
    assert meta.image_size == (96, 96) and meta.input_name == "image"
    assert set(meta.properties) >= PROVENANCE_KEYS
    assert meta.properties["quantization"] == artifact.quantization
    if key == "tflite-int8":
        for tensor in (runner.input, runner.output):
            assert tensor["dtype"] == np.uint8
        scale, zero_point = runner.input["quantization"]
        assert scale == pytest.approx(1 / 255, rel=1e-6) and zero_point == 0
        assert meta.normalization is None and meta.input_range == (0.0, 255.0)
    else:
        assert runner.input["dtype"] == np.float32 and runner.output["dtype"] == np.float32
        assert meta.normalization == ([0.0], [255.0]) and meta.input_range == (0.0, 1.0)


@pytest.mark.parametrize("io_type", ["int8", "float32"])
def test_int8_io_types(tiny_source, tmp_path, samples, io_type):
    from nsfw_mobile.export.tflite import keras2tflite
    from nsfw_mobile.images import load_images

    pixels = load_images(samples, 96).pixels
    artifact = keras2tflite(
        tiny_source, tmp_path / "m.tflite", quantization="int8", calibration=pixels, io_type=io_type
    )
    runner = TFLiteRunner(artifact.path)
    assert np.dtype(runner.input["dtype"]).name == io_type
    assert read_metadata(artifact.path).properties["io_type"] == io_type
    probabilities = runner.predict(pixels[:4])
    assert probabilities.shape == (4, 3) and np.allclose(probabilities.sum(axis=1), 1, atol=0.05)


def test_option_checks_fail_before_work(tiny_source, tmp_path):
    from nsfw_mobile.export.coreml import keras2coreml
    from nsfw_mobile.export.tflite import keras2tflite

    with pytest.raises(UsageError, match="at least 10 calibration images"):
        keras2tflite(
            tiny_source,
            tmp_path / "x.tflite",
            quantization="int8",
            calibration=np.zeros((3, 96, 96, 3), np.uint8),
        )
    with pytest.raises(UsageError, match="--io applies to full-integer"):
        keras2tflite(tiny_source, tmp_path / "x.tflite", io_type="int8")
    with pytest.raises(UsageError, match="--precision applies to --to mlpackage only"):
        keras2coreml(tiny_source, tmp_path / "x.mlmodel", precision="float32")
    with pytest.raises(UsageError, match="--quantize int8 is not available for mlmodel"):
        keras2coreml(tiny_source, tmp_path / "x.mlmodel", quantization="int8")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to", "mlmodel", "--quantize", "dynamic"], "not available for mlmodel"),
        (["--to", "tflite", "--precision", "float32"], "--precision applies to --to mlpackage"),
        (["--to", "all", "--quantize", "int8"], "--to all makes every quantization"),
        (["--to", "tflite", "--io", "int8"], "--io applies to full-integer TFLite only"),
        (["--to", "mlmodel", "--calibration", "."], "--calibration applies to full-integer"),
    ],
)
def test_cli_usage_errors(tmp_path, args, message):
    result = CliRunner().invoke(main, ["convert", *args, "--out", str(tmp_path)])
    assert result.exit_code == EXIT_USAGE, result.output
    assert message in result.stderr
    assert not list(tmp_path.iterdir())


def test_cli_too_few_calibration_images(tmp_path, tiny_model_path, samples):
    folder = tmp_path / "calibration"
    folder.mkdir()
    for sample in samples[:5]:
        (folder / sample.name).write_bytes(sample.read_bytes())
    result = CliRunner().invoke(
        main,
        [
            "convert",
            str(tiny_model_path),
            "--to",
            "tflite",
            "--quantize",
            "int8",
            "--calibration",
            str(folder),
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == EXIT_USAGE
    assert "5 readable images, at least 10 are needed" in result.stderr


def test_cli_convert_json_summary(tmp_path, tiny_model_path):
    out = tmp_path / "dist"
    result = CliRunner().invoke(
        main,
        [
            "convert",
            str(tiny_model_path),
            "--to",
            "tflite",
            "--to",
            "mlmodel",
            "--quantize",
            "float16",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    names = sorted(a["path"].split("/")[-1] for a in summary["artifacts"])
    assert names == ["NSFW_float16.mlmodel", "nsfw_float16.tflite"]
    for artifact in summary["artifacts"]:
        assert artifact["sha256"] == sha256_file(artifact["path"])
        assert artifact["size_bytes"] > 0 and artifact["seconds"] > 0
    assert (out / "labels.txt").read_text().split() == list(LABELS)
    assert result.stderr == ""  # --json: the document on stdout, no progress lines


@pytest.mark.slow
def test_kill_9_mid_conversion_leaves_no_file_under_a_final_name(tmp_path, tiny_model_path):
    """Kill the converter while it writes an artefact; nothing half-written may be visible."""
    out = tmp_path / "dist"
    command = [
        sys.executable,
        "-m",
        "nsfw_mobile.cli",
        "convert",
        str(tiny_model_path),
        "--to",
        "all",
        "--out",
        str(out),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        partial = list(out.glob(PARTIAL_GLOB)) if out.exists() else []
        if partial:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    process.wait()
    assert partial, "never caught the converter mid-write"
    final_names = {final_name(p) for p in partial}
    assert None not in final_names
    for name in final_names:
        assert not (out / name).exists(), f"{name} appeared under its final name"
    # Whatever did reach a final name is complete and loadable.
    from nsfw_mobile import open_runner

    for path in out.iterdir():
        if not path.name.startswith(".") and path.suffix in (".tflite", ".mlmodel", ".mlpackage"):
            assert open_runner(path).labels == LABELS


def _mediapipe_top1(path, pixels):
    mediapipe = pytest.importorskip("mediapipe")
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    options = vision.ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=str(path)), max_results=3
    )
    names = []
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for image in pixels:
            result = classifier.classify(
                mediapipe.Image(
                    image_format=mediapipe.ImageFormat.SRGB, data=np.ascontiguousarray(image)
                )
            )
            categories = result.classifications[0].categories
            assert {c.category_name for c in categories} == set(LABELS)
            names.append(categories[0].category_name)
    return names


def test_mediapipe_reads_our_labels_tiny(tiny_artifacts, sample_pixels_tiny):
    path = tiny_artifacts["tflite-int8"].path
    ours = TFLiteRunner(path).predict(sample_pixels_tiny)
    assert _mediapipe_top1(path, sample_pixels_tiny) == [LABELS[i] for i in ours.argmax(axis=1)]


@pytest.mark.slow
def test_mediapipe_reads_our_labels_full_size(full_artifacts, sample_pixels_224):
    path = full_artifacts["tflite-int8"].path
    assert path.name == "nsfw_int8.tflite"
    ours = TFLiteRunner(path).predict(sample_pixels_224)
    assert _mediapipe_top1(path, sample_pixels_224) == [LABELS[i] for i in ours.argmax(axis=1)]


@pytest.mark.slow
def test_full_size_every_format(full_artifacts):
    assert set(full_artifacts) == {f.key for f in FORMATS}
    for artifact in full_artifacts.values():
        if artifact.target == "tflite":
            meta = read_metadata(artifact.path)
            assert meta.labels == list(LABELS) and meta.image_size == (224, 224)
        elif artifact.target == "tfjs":
            contract = read_contract_properties(artifact.path / "model.json")
            assert contract["labels"] == '["Neutral", "Porn", "Sexy"]'
            assert contract["input_size"] == "224x224" and contract["author"].startswith("GantMan")
        elif artifact.target in ("onnx", "ort"):
            from nsfw_mobile.onnx_file import artifact_metadata

            meta = artifact_metadata(artifact.path)
            assert meta.labels == tuple(LABELS) and meta.input_size == (224, 224)
            assert meta.properties["author"].startswith("GantMan")
        else:
            check_coreml_spec(artifact.path, 224, pretrained_contract(3))
    seconds = {key: a.seconds for key, a in full_artifacts.items()}
    print("\nfull-size conversion seconds:", seconds, "total", round(sum(seconds.values()), 1))


def test_sigkill_is_available():
    assert hasattr(signal, "SIGKILL") and os.name == "posix"
