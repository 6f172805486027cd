"""models.py: the seed architecture, the pretrained model and safe loading."""

from __future__ import annotations

import numpy as np
import pytest

from nsfw_mobile.errors import ModelFileError, UsageError
from nsfw_mobile.labels import LABELS, merge_5_to_3
from nsfw_mobile.models import (
    build_classifier,
    labels_for,
    load_keras_model,
    load_source,
    pretrained,
    pretrained_contract,
)


def test_seed_architecture():
    model = build_classifier(alpha=0.35, input_size=96, weights=None)
    assert model.input.name == "image" and tuple(model.input.shape) == (None, 96, 96, 3)
    head = [layer.__class__.__name__ for layer in model.layers[-6:]]
    assert head == [
        "AveragePooling2D",
        "Flatten",
        "Dense",
        "BatchNormalization",
        "Dropout",
        "Dense",
    ]
    assert model.get_layer("head_pool").pool_size == (3, 3)
    assert model.get_layer("head_dense").units == 32
    assert model.get_layer("head_dropout").rate == 0.5
    assert model.get_layer("probabilities").units == 3


def test_full_size_head_pools_the_7x7_map():
    model = build_classifier(input_size=224, weights=None)
    assert model.get_layer("head_pool").pool_size == (7, 7)


def test_bad_input_size_and_weights_are_usage_errors():
    with pytest.raises(UsageError, match="multiple of 32"):
        build_classifier(input_size=100, weights=None)
    with pytest.raises(UsageError, match="backbone weights"):
        build_classifier(weights="no/such/file.h5")


def test_pretrained_three_classes_is_the_merge_of_five(pretrained3, sample_pixels_224):
    five = pretrained(classes=5)
    x = sample_pixels_224 / np.float32(255)
    p5 = five.predict(x, verbose=0)
    p3 = pretrained3.predict(x, verbose=0)
    np.testing.assert_allclose(p3, merge_5_to_3(p5), atol=1e-6)
    assert five.input.name == pretrained3.input.name == "image"
    # Real photos of everyday things are Neutral.
    assert (p3.argmax(axis=1) == 0).mean() > 0.8


def test_labels_and_score():
    assert LABELS == ("Neutral", "Porn", "Sexy")
    merged = merge_5_to_3(np.array([[0.1, 0.2, 0.3, 0.15, 0.25]]))
    np.testing.assert_allclose(merged, [[0.4, 0.35, 0.25]])
    np.testing.assert_allclose(pretrained_contract(3).nsfw_score(merged), [0.6])
    five = pretrained_contract(5)
    assert five.nsfw_labels == ("Hentai", "Porn", "Sexy")
    np.testing.assert_allclose(five.nsfw_score([[0.1, 0.2, 0.3, 0.15, 0.25]]), [0.6])


def test_safe_mode_refuses_lambda_layers(tmp_path):
    import keras

    inputs = keras.Input((4,), name="image")
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ModelFileError, match="Lambda layer.*--unsafe"):
        load_keras_model(path)
    assert load_keras_model(path, allow_unsafe=True) is not None


KERAS_WITHOUT_KNOWN_SAFE_MODE_BYPASS = {"3.11+": "3.15.1", "3.10": "3.12.4"}
"""First releases with every published safe-mode fix (see pyproject.toml, docs/security.md)."""


def test_keras_floor_has_every_known_safe_mode_fix():
    import re
    from importlib.metadata import version
    from pathlib import Path

    from packaging.requirements import Requirement
    from packaging.version import Version

    pyproject = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    requirements = [Requirement(r) for r in re.findall(r'"(keras[<>=!~;].*?)"', pyproject)]
    floors = {}
    for requirement in requirements:
        on_310 = requirement.marker and requirement.marker.evaluate({"python_version": "3.10"})
        key = "3.10" if on_310 else "3.11+"
        floors[key] = min(
            Version(s.version) for s in requirement.specifier if s.operator in (">=", "==")
        )
        if requirement.marker is None or requirement.marker.evaluate():
            assert requirement.specifier.contains(version("keras")), requirement
    assert floors == {k: Version(v) for k, v in KERAS_WITHOUT_KNOWN_SAFE_MODE_BYPASS.items()}


def test_corrupt_keras_file_is_a_model_file_error(tmp_path):
    path = tmp_path / "broken.keras"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelFileError, match="not a loadable Keras model"):
        load_keras_model(path)


def test_labels_txt_beside_the_model(tiny_model, tmp_path):
    (tmp_path / "labels.txt").write_text("safe\nexplicit\nsuggestive\n")
    assert labels_for(tiny_model, tmp_path / "m.keras") == ("safe", "explicit", "suggestive")
    (tmp_path / "labels.txt").write_text("only\ntwo\n")
    with pytest.raises(ModelFileError, match="2 labels for a model with 3 outputs"):
        labels_for(tiny_model, tmp_path / "m.keras")


def test_load_source_records_provenance(tiny_model_path):
    source = load_source(tiny_model_path)
    assert source.labels == LABELS and len(source.sha256) == 64 and source.input_size == (96, 96)
    with pytest.raises(ModelFileError, match="expected a .keras file"):
        load_source(__file__)
