"""Make the micro models the fuzz targets mutate and the seed corpora they start from.

    python fuzz/make_seeds.py

Writes fuzz/models/ (a micro Keras classifier converted by the toolkit to .tflite,
.mlmodel and .mlpackage, hand-written TF.js layers and graph models, a release folder), the
micro model as .onnx and .ort (seeds of the onnx target) and
fuzz/corpus/<target>/ (valid inputs, some with the target's selector byte in front).
Run it again only when the file formats change; the outputs are committed.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODELS = HERE / "models"
CORPUS = HERE / "corpus"


def micro_keras(path: Path) -> None:
    """A 3-class classifier on 8x8 images with a few dozen weights."""
    import keras

    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(2, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.AveragePooling2D(6, name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="dense")(x)
    model = keras.Model(inputs, outputs, name="micro")
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 1, w.shape).astype("float32") for w in model.weights])
    model.save(path)


def micro_tfjs(folder: Path) -> None:
    """A Keras 2 style TF.js layers model, as tfjs-converter writes them."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    kernel, bias = rng.normal(0, 1, (12, 3)), rng.normal(0, 1, 3)
    (folder / "group1-shard1of1.bin").write_bytes(
        kernel.astype("<f4").tobytes() + bias.astype("<f4").tobytes()
    )
    topology = {
        "class_name": "Sequential",
        "config": {
            "name": "micro",
            "layers": [
                {"class_name": "Flatten",
                 "config": {"name": "flatten", "batch_input_shape": [None, 2, 2, 3]}},
                {"class_name": "Dense",
                 "config": {"name": "dense", "units": 3, "activation": "softmax"}},
            ],
        },
        "keras_version": "2.2.4",
        "backend": "tensorflow",
    }  # fmt: skip
    document = {
        "format": "layers-model",
        "generatedBy": "keras v2.2.4",
        "modelTopology": topology,
        "userDefinedMetadata": {"labels": ["Neutral", "Porn", "Sexy"]},
        "weightsManifest": [
            {
                "paths": ["group1-shard1of1.bin"],
                "weights": [
                    {"name": "dense/kernel", "shape": [12, 3], "dtype": "float32"},
                    {"name": "dense/bias", "shape": [3], "dtype": "float32"},
                ],
            }
        ],
    }
    (folder / "model.json").write_text(json.dumps(document))


def _attr_list(key: str, values) -> dict:
    return {key: {"list": {"i": [str(v) for v in values]}}}


def _text(value: str) -> dict:
    return {"s": base64.b64encode(value.encode()).decode()}


def _fused(op: str, inputs: list[str], strides: int, activation: str | None, **extra) -> dict:
    attr = {
        **_attr_list("strides", [1, strides, strides, 1]),
        **_attr_list("dilations", [1, 1, 1, 1]),
        "padding": _text("SAME"),
        "data_format": _text("NHWC"),
        "num_args": {"i": "1"},
        "fused_ops": {"list": {"s": [_text(o)["s"] for o in ("BiasAdd", activation) if o]}},
        "T": {"type": "DT_FLOAT"},
        **extra,
    }
    return {"op": op, "input": inputs, "attr": attr}


def micro_tfjs_graph(folder: Path, size: int = 16, seed: int = 3) -> None:
    """A TF.js graph model with every op the graph importer supports, as tfjs-converter writes
    them (names, attributes, a control input, uint8 and float32 weights): x * 2 - 1, a strided
    3x3 convolution with Relu6, a depthwise convolution, a 1x1 projection added back (a
    MobileNetV2 block), average pooling, squeeze, a dense layer and softmax over 3 classes."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    constants = {
        "scale/y": np.float32(2.0),
        "shift/y": np.float32(1.0),
        "conv/weights": rng.normal(0, 0.6, (3, 3, 3, 4)),
        "conv/bias": rng.normal(0, 0.3, 4),
        "block/depthwise_weights": rng.normal(0, 0.6, (3, 3, 4, 1)),
        "block/depthwise_bias": rng.normal(0, 0.3, 4),
        "block/project_weights": rng.normal(0, 0.6, (1, 1, 4, 4)),
        "block/project_bias": rng.normal(0, 0.3, 4),
        "dense/kernel": rng.normal(0, 2.0, (4, 3)),
        "dense/bias": rng.normal(0, 0.3, 3),
    }
    quantized = {"conv/weights", "block/depthwise_weights", "scale/y", "shift/y"}
    graph = {
        "input": {"op": "Placeholder", "attr": {
            "shape": {"shape": {"dim": [{"size": str(d)} for d in (-1, size, size, 3)]}},
            "dtype": {"type": "DT_FLOAT"}}},
        "scale": {"op": "Mul", "input": ["scale/y", "input"]},
        "shift": {"op": "Sub", "input": ["scale", "shift/y"]},
        "conv/Relu6": _fused("_FusedConv2D", ["shift", "conv/weights", "conv/bias"], 2, "Relu6"),
        "block/depthwise": _fused(
            "FusedDepthwiseConv2dNative",
            ["conv/Relu6", "block/depthwise_weights", "block/depthwise_bias"], 1, "Relu6"),
        "block/project": _fused(
            "_FusedConv2D", ["block/depthwise", "block/project_weights", "block/project_bias"],
            1, None),
        "block/add": {"op": "AddV2", "input": ["conv/Relu6", "block/project"]},
        "pool": {"op": "AvgPool", "input": ["block/add"], "attr": {
            **_attr_list("ksize", [1, size // 2, size // 2, 1]),
            **_attr_list("strides", [1, 1, 1, 1]),
            "padding": _text("VALID"), "data_format": _text("NHWC")}},
        "squeeze": {"op": "Squeeze", "input": ["pool"],
                    "attr": _attr_list("squeeze_dims", [1, 2])},
        "dense/BiasAdd": {"op": "_FusedMatMul", "input": ["squeeze", "dense/kernel", "dense/bias"],
                          "attr": {"transpose_a": {"b": False}, "transpose_b": {"b": False},
                                   "num_args": {"i": "1"},
                                   "fused_ops": {"list": {"s": [_text("BiasAdd")["s"]]}}}},
        "softmax": {"op": "Softmax", "input": ["dense/BiasAdd"]},
        "Identity": {"op": "Identity", "input": ["softmax"]},
    }  # fmt: skip
    nodes = [
        {"name": name, "op": "Const", "input": ["^input"] if name.endswith("/y") else [],
         "attr": {"dtype": {"type": "DT_FLOAT"}}}
        for name in constants
    ] + [{"name": name, **node} for name, node in graph.items()]  # fmt: skip
    for entry in nodes[len(constants) :]:  # tfjs-converter writes every op's dtype
        if entry["op"] != "Placeholder":
            entry.setdefault("attr", {}).setdefault("T", {"type": "DT_FLOAT"})
    specs, blob = [], b""
    for name, value in constants.items():
        value = np.asarray(value, np.float32)
        spec = {"name": name, "shape": list(value.shape), "dtype": "float32"}
        if name in quantized:
            low, high = min(float(value.min()), 0.0), max(float(value.max()), 0.0)
            scale = (high - low) / 255 or 1.0
            spec["quantization"] = {"dtype": "uint8", "min": low, "scale": scale}
            blob += np.round((value - low) / scale).astype(np.uint8).tobytes()
        else:
            blob += value.astype("<f4").tobytes()
        specs.append(spec)
    (folder / "group1-shard1of1.bin").write_bytes(blob)
    document = {
        "format": "graph-model",
        "generatedBy": "2.2.0",
        "convertedBy": "nsfw-mobile fuzz/make_seeds.py (tfjs-converter 1.7 layout)",
        "modelTopology": {"node": nodes, "versions": {"producer": 175}},
        "userDefinedMetadata": {"signature": {"outputs": {"Identity:0": {"name": "Identity:0"}}}},
        "weightsManifest": [{"paths": ["group1-shard1of1.bin"], "weights": specs}],
    }
    (folder / "model.json").write_text(json.dumps(document))


def images() -> dict[str, bytes]:
    rng = np.random.default_rng(2)
    picture = Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8))
    found = {}
    for fmt, options in (("PNG", {}), ("JPEG", {"quality": 80}), ("GIF", {}), ("BMP", {}),
                         ("WEBP", {}), ("TIFF", {}), ("AVIF", {})):  # fmt: skip
        buffer = io.BytesIO()
        picture.save(buffer, fmt, **options)
        found[fmt.lower()] = buffer.getvalue()
    import pillow_heif

    buffer = io.BytesIO()
    pillow_heif.from_pillow(picture).save(buffer, format="HEIF")
    found["heic"] = buffer.getvalue()
    return found


def clips() -> dict[str, bytes]:
    """A one-second 64x48 clip as MP4 and MKV, and a three-frame GIF."""
    sys.path.insert(0, str(ROOT / "tests"))
    from clips import write_clip

    ramp = np.linspace(0, 255, 64, dtype=np.uint8)
    frames = [np.stack([np.tile(np.roll(ramp, 9 * i), (48, 1))] * 3, axis=-1) for i in range(5)]
    found = {}
    for index, suffix in enumerate((".mp4", ".mkv")):
        path = HERE / "build" / f"clip{suffix}"
        write_clip(path, frames, fps=5, bit_rate=200_000)
        found[suffix[1:]] = bytes([index]) + path.read_bytes()
    buffer = io.BytesIO()
    pictures = [Image.fromarray(f[:8, :8]) for f in frames[:3]]
    pictures[0].save(buffer, "GIF", save_all=True, append_images=pictures[1:], duration=300)
    found["gif"] = b"\x02" + buffer.getvalue()
    return found


def main() -> None:
    shutil.rmtree(MODELS, ignore_errors=True)
    shutil.rmtree(CORPUS, ignore_errors=True)
    MODELS.mkdir()
    work = HERE / "build"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    micro_keras(work / "micro.keras")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "nsfw_mobile.cli",
            "convert",
            work / "micro.keras",
            "--name",
            "micro",
            "--to",
            "mlmodel",
            "--to",
            "mlpackage-float32",
            "--to",
            "tflite-float32",
            "--to",
            "onnx-float32",
            "--to",
            "ort-int8",
            "--out",
            work,
        ],  # fmt: skip
        check=True,
    )
    shutil.copy(work / "micro.mlmodel", MODELS / "micro.mlmodel")
    shutil.copytree(work / "micro_float32.mlpackage", MODELS / "micro.mlpackage")
    shutil.copy(work / "micro_float32.tflite", MODELS / "micro.tflite")
    onnx_seeds = {
        "micro_onnx": b"\x00" + (work / "micro_float32.onnx").read_bytes(),
        "micro_ort": b"\x01" + (work / "micro_int8.ort").read_bytes(),
    }
    video_seeds = clips()
    shutil.rmtree(work)
    micro_tfjs(MODELS / "tfjs")
    micro_tfjs_graph(MODELS / "tfjs_graph")
    (MODELS / "release").mkdir()
    shutil.copy(ROOT / "models" / "labels.txt", MODELS / "release" / "labels.txt")
    shutil.copy(ROOT / "models" / "manifest.json", MODELS / "release_manifest.json")

    package = MODELS / "micro.mlpackage" / "Data" / "com.apple.CoreML"
    seeds = {
        "image": images(),
        "tflite": {"micro": (MODELS / "micro.tflite").read_bytes()},
        "onnx": onnx_seeds,
        "tfjs": {
            "model_json": b"\x00" + (MODELS / "tfjs" / "model.json").read_bytes(),
            "shard": b"\x01" + (MODELS / "tfjs" / "group1-shard1of1.bin").read_bytes(),
            "structured": b"\x02" + bytes(range(64)),
        },
        "tfjs_graph": {
            "model_json": b"\x00" + (MODELS / "tfjs_graph" / "model.json").read_bytes(),
            "shard": b"\x01" + (MODELS / "tfjs_graph" / "group1-shard1of1.bin").read_bytes(),
            "structured": b"\x02" + bytes(range(64)),
        },
        "coreml": {
            "mlmodel": b"\x00" + (MODELS / "micro.mlmodel").read_bytes(),
            "package_spec": b"\x01" + (package / "model.mlmodel").read_bytes(),
            "package_weights": b"\x02" + (package / "weights" / "weight.bin").read_bytes(),
        },
        "video": video_seeds,
        "release": {
            "manifest": b"\x00" + (ROOT / "models" / "manifest.json").read_bytes(),
            "structured": b"\x01" + bytes(range(64)),
        },
    }
    for name, files in seeds.items():
        (CORPUS / name).mkdir(parents=True)
        for stem, data in files.items():
            (CORPUS / name / stem).write_bytes(data)
            print(f"{name}/{stem}: {len(data)} bytes")


if __name__ == "__main__":
    main()
