"""TF.js import: dequantization as tfjs does it, and every manifest failure named."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from nsfw_mobile.errors import ModelFileError, UnsupportedOpError
from nsfw_mobile.models import PRETRAINED_DIR
from nsfw_mobile.tfjs import tfjs2keras


def dense_topology(units=2, features=3, extra_layer=None):
    layers = [
        {
            "name": "input_1",
            "class_name": "InputLayer",
            "config": {
                "batch_input_shape": [None, features],
                "dtype": "float32",
                "name": "input_1",
            },
            "inbound_nodes": [],
        },
        {
            "name": "dense_1",
            "class_name": "Dense",
            "config": {
                "name": "dense_1",
                "units": units,
                "activation": "linear",
                "use_bias": True,
                "kernel_initializer": {"class_name": "Zeros", "config": {}},
                "kernel_regularizer": None,
            },
            "inbound_nodes": [[["input_1", 0, 0, {}]]],
        },
    ]
    if extra_layer:
        layers.append(extra_layer)
    return {
        "keras_version": "2.2.4",
        "backend": "tensorflow",
        "model_config": {
            "class_name": "Model",
            "config": {
                "name": "m",
                "layers": layers,
                "input_layers": [["input_1", 0, 0]],
                "output_layers": [[layers[-1]["name"], 0, 0]],
            },
        },
    }


def write_model(folder, weights, topology=None, paths=("group1-shard1of1.bin",), data=None):
    """weights: list of (name, shape, manifest_entry_extras, raw_bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = [
        {
            "paths": list(paths),
            "weights": [
                {"name": name, "shape": list(shape), "dtype": "float32", **extra}
                for name, shape, extra, _ in weights
            ],
        }
    ]
    blob = b"".join(raw for *_, raw in weights) if data is None else data
    (folder / paths[0]).write_bytes(blob)
    document = {
        "format": "layers-model",
        "modelTopology": topology or dense_topology(),
        "weightsManifest": manifest,
    }
    (folder / "model.json").write_text(json.dumps(document))
    return folder / "model.json"


KERNEL = np.arange(6, dtype=np.float32).reshape(3, 2) / 7
BIAS = np.array([0.5, -0.25], np.float32)


def float_weights():
    return [
        ("dense_1/kernel", (3, 2), {}, KERNEL.tobytes()),
        ("dense_1/bias", (2,), {}, BIAS.tobytes()),
    ]


def test_float32_weights_round_trip(tmp_path):
    model = tfjs2keras(write_model(tmp_path, float_weights()))
    kernel, bias = model.get_layer("dense_1").get_weights()
    np.testing.assert_array_equal(kernel, KERNEL)
    np.testing.assert_array_equal(bias, BIAS)
    assert model.input.name == "image"


@pytest.mark.parametrize("storage", ["uint8", "uint16"])
def test_integer_quantized_weights_dequantize_like_tfjs(tmp_path, storage):
    quantized = np.array([0, 1, 2, 3, 254, 255], dtype=storage)
    scale, minimum = 0.0123456789, -1.5
    weights = [
        (
            "dense_1/kernel",
            (3, 2),
            {"quantization": {"dtype": storage, "scale": scale, "min": minimum}},
            quantized.tobytes(),
        ),
        ("dense_1/bias", (2,), {}, BIAS.tobytes()),
    ]
    model = tfjs2keras(write_model(tmp_path, weights))
    expected = (quantized.astype(np.float64) * scale + minimum).astype(np.float32).reshape(3, 2)
    np.testing.assert_array_equal(model.get_layer("dense_1").get_weights()[0], expected)


def test_float16_weights_widen_exactly(tmp_path):
    half = KERNEL.astype(np.float16)
    weights = [
        ("dense_1/kernel", (3, 2), {"quantization": {"dtype": "float16"}}, half.tobytes()),
        ("dense_1/bias", (2,), {}, BIAS.tobytes()),
    ]
    model = tfjs2keras(write_model(tmp_path, weights))
    np.testing.assert_array_equal(
        model.get_layer("dense_1").get_weights()[0], half.astype(np.float32)
    )


def test_shard_path_escaping_the_folder_is_refused(tmp_path):
    (tmp_path / "outside.bin").write_bytes(KERNEL.tobytes() + BIAS.tobytes())
    model_json = write_model(tmp_path / "model", float_weights())
    document = json.loads(model_json.read_text())
    document["weightsManifest"][0]["paths"] = ["../outside.bin"]
    model_json.write_text(json.dumps(document))
    with pytest.raises(ModelFileError, match=r"'\.\./outside\.bin' points outside"):
        tfjs2keras(model_json)


def test_short_shard_is_refused(tmp_path):
    data = KERNEL.tobytes() + BIAS.tobytes()[:4]
    with pytest.raises(ModelFileError, match="'dense_1/bias' needs bytes 24..32.*short"):
        tfjs2keras(write_model(tmp_path, float_weights(), data=data))


def test_extra_shard_bytes_are_refused(tmp_path):
    data = KERNEL.tobytes() + BIAS.tobytes() + b"\0" * 4
    with pytest.raises(ModelFileError, match="hold 36 bytes, the manifest describes 32"):
        tfjs2keras(write_model(tmp_path, float_weights(), data=data))


def test_missing_shard_file_is_named(tmp_path):
    model_json = write_model(tmp_path, float_weights())
    (tmp_path / "group1-shard1of1.bin").unlink()
    with pytest.raises(ModelFileError, match="group1-shard1of1.bin: cannot read shard"):
        tfjs2keras(model_json)


def test_missing_weight_is_named(tmp_path):
    weights = float_weights()[:1]
    with pytest.raises(ModelFileError, match="weight 'dense_1/bias' of layer 'dense_1' is missing"):
        tfjs2keras(write_model(tmp_path, weights))


def test_unused_weight_is_named(tmp_path):
    weights = float_weights() + [("dense_9/kernel", (2,), {}, BIAS.tobytes())]
    with pytest.raises(ModelFileError, match=r"\['dense_9/kernel'\].*belong to no layer"):
        tfjs2keras(write_model(tmp_path, weights))


def test_wrong_shape_is_named(tmp_path):
    weights = [("dense_1/kernel", (2, 3), {}, KERNEL.tobytes()), float_weights()[1]]
    with pytest.raises(
        ModelFileError, match=r"'dense_1/kernel' has shape \(2, 3\).*expects \(3, 2\)"
    ):
        tfjs2keras(write_model(tmp_path, weights))


def test_unsupported_layer_is_named(tmp_path):
    lstm = {
        "name": "lstm_1",
        "class_name": "LSTM",
        "config": {"name": "lstm_1", "units": 2},
        "inbound_nodes": [[["dense_1", 0, 0, {}]]],
    }
    with pytest.raises(UnsupportedOpError, match="'lstm_1' is a LSTM"):
        tfjs2keras(
            write_model(tmp_path, float_weights(), topology=dense_topology(extra_layer=lstm))
        )


def test_unknown_formats_empty_graphs_and_garbage_are_refused(tmp_path):
    (tmp_path / "model.json").write_text('{"format": "saved-model", "modelTopology": {}}')
    with pytest.raises(ModelFileError, match="format 'saved-model'; expected 'layers-model'"):
        tfjs2keras(tmp_path / "model.json")
    (tmp_path / "model.json").write_text('{"format": "graph-model", "modelTopology": {}}')
    with pytest.raises(ModelFileError, match="the graph model has no nodes"):
        tfjs2keras(tmp_path / "model.json")
    (tmp_path / "model.json").write_text("not json")
    with pytest.raises(ModelFileError, match="not a JSON file"):
        tfjs2keras(tmp_path / "model.json")


def test_the_shipped_model_is_checked_too(tmp_path):
    folder = tmp_path / "pretrained"
    shutil.copytree(PRETRAINED_DIR, folder)
    shard = folder / "group1-shard1of1.bin"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(ModelFileError, match="short or truncated"):
        tfjs2keras(folder / "model.json")
