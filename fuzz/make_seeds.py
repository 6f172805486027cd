"""Make the micro models the fuzz targets mutate and the seed corpora they start from.

    python fuzz/make_seeds.py

Writes fuzz/models/ (a micro Keras classifier converted by the toolkit to .tflite,
.mlmodel and .mlpackage, a hand-written TF.js layers model, a release folder), the
micro model as .onnx and .ort (seeds of the onnx target) and
fuzz/corpus/<target>/ (valid inputs, some with the target's selector byte in front).
Run it again only when the file formats change; the outputs are committed.
"""

from __future__ import annotations

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
