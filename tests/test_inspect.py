"""inspect: every artefact the toolkit writes, the seed model, and bad files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from nsfw_mobile.cli import main
from nsfw_mobile.errors import ModelFileError
from nsfw_mobile.formats import FORMATS, inspect_file
from nsfw_mobile.inspect_model import render
from nsfw_mobile.labels import LABELS
from nsfw_mobile.models import PRETRAINED_JSON


@pytest.mark.parametrize("key", [f.key for f in FORMATS])
def test_inspect_every_artefact(tiny_artifacts, key):
    report = inspect_file(tiny_artifacts[key].path)
    assert report["labels"] == list(LABELS)
    assert report["size_bytes"] == tiny_artifacts[key].size_bytes
    assert report["parameters"] > 100_000 and sum(report["ops"].values()) > 50
    assert report["metadata"]["quantization"] == tiny_artifacts[key].quantization
    (image,) = report["inputs"]
    if key.startswith("tflite"):
        assert image["shape"] == [1, 96, 96, 3]
        if key == "tflite-int8":
            assert image["dtype"] == "uint8"
            assert image["quantization"]["zero_point"] == 0
            assert image["quantization"]["scale"] == pytest.approx(1 / 255)
        else:
            assert image["preprocessing"] == {
                "normalization_mean": [0.0],
                "normalization_std": [255.0],
            }
        assert "CONV_2D" in report["ops"] and "DEPTHWISE_CONV_2D" in report["ops"]
    elif key.startswith(("onnx", "ort")):
        assert image["shape"] == ["batch", 96, 96, 3] and image["dtype"] == "uint8"
        assert image["preprocessing"].startswith("raw RGB bytes")
        assert report["outputs"][0]["shape"] == ["batch", 3]
        assert {"Conv", "com.microsoft:QLinearConv"} & set(report["ops"])
    elif key.startswith("tfjs"):
        assert image["shape"] == [None, 96, 96, 3]
        assert "DepthwiseConv2D" in report["ops"] and report["shards"] == 1
    else:
        assert image["name"] == "image" and image["color_space"] == "RGB"
        assert image["preprocessing"]["scale"] == pytest.approx(1 / 255)
    assert "labels" in render(report)


def test_inspect_seed_model_and_tfjs(tiny_model_path):
    report = inspect_file(tiny_model_path)
    assert report["format"] == "keras" and report["inputs"][0]["shape"] == [None, 96, 96, 3]
    assert report["ops"]["Dense"] == 2 and report["ops"]["Dropout"] == 1
    pretrained = inspect_file(PRETRAINED_JSON)
    assert pretrained["format"] == "tfjs" and pretrained["parameters"] == 2_619_461
    assert pretrained["ops"]["DepthwiseConv2D"] == 17
    assert pretrained["labels"] == ["Drawing", "Hentai", "Neutral", "Porn", "Sexy"]


@pytest.mark.parametrize("name", ["model.tflite", "model.mlmodel", "model.keras", "model.onnx"])
def test_corrupt_or_foreign_files_get_one_line(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ModelFileError):
        inspect_file(path)
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: {path}")


def test_corrupt_mlpackage(tmp_path):
    folder = tmp_path / "broken.mlpackage"
    folder.mkdir()
    result = CliRunner().invoke(main, ["inspect", str(folder)])
    assert result.exit_code == 1 and "no Manifest.json" in result.stderr


def test_cli_json(tiny_artifacts):
    result = CliRunner().invoke(main, ["inspect", str(tiny_artifacts["mlpackage"].path), "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["format"] == "coreml-mlprogram"


FUZZ = Path(__file__).resolve().parent.parent / "fuzz"


@pytest.mark.parametrize(
    "found", sorted((FUZZ / "regressions" / "tfjs_graph").iterdir()), ids=lambda p: p.name[-8:]
)
def test_inspect_of_a_graph_model_of_the_wrong_shape_is_one_error_line(found, tmp_path):
    """The fuzzer's inputs that crashed the graph model's inspector (a node list that is not
    a list...), written as a TF.js graph folder the way its target does: exit 1, one line."""
    sys.path.insert(0, str(FUZZ))
    import targets

    folder = targets.write_tfjs_model("tfjs_graph", found.read_bytes(), tmp_path / "model")
    result = subprocess.run(
        [sys.executable, "-m", "nsfw_mobile.cli", "inspect", str(folder)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"Error: {folder / 'model.json'}: ") and result.stdout == ""
