"""Fuzz targets for the toolkit's parsers.

Each target takes the fuzzer's bytes, writes them where the parser reads them,
and runs the parser the way the toolkit does. The contract: it returns, or it
raises one of the toolkit's typed errors (``NsfwMobileError``). Any other
exception is a finding. Hangs and memory are bounded by the runner
(``benchmarks/fuzz.py``: ``-timeout`` and ``-rss_limit_mb``).

Inputs for several files at once start with a selector byte: ``data[0] % modes``
says which file of a valid seed model the rest of the bytes replace.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from nsfw_mobile.errors import NsfwMobileError

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
MODELS = HERE / "models"
"""Valid micro models the targets mutate one file of (made by make_seeds.py)."""
MAX_PIXELS = 4_000_000
"""Decode limit in the image target: larger claims end as ImageError('too_large')."""

TARGETS: dict[str, Callable[[bytes], None]] = {}


def target(function: Callable[[bytes], None]) -> Callable[[bytes], None]:
    TARGETS[function.__name__.removeprefix("fuzz_")] = function
    return function


_workspace: Path | None = None


def workspace() -> Path:
    """One scratch folder per process, holding a copy of the micro models."""
    global _workspace
    if _workspace is None:
        _workspace = Path(tempfile.mkdtemp(prefix="nsfw-fuzz-"))
        atexit.register(shutil.rmtree, _workspace, ignore_errors=True)
        shutil.copytree(MODELS, _workspace / "models")
    return _workspace


def _fresh(name: str) -> Path:
    """A fresh copy of the micro model ``name`` in the workspace."""
    source = MODELS / name
    copy = workspace() / "current" / name
    shutil.rmtree(copy.parent, ignore_errors=True)
    copy.parent.mkdir(parents=True)
    if source.is_dir():
        shutil.copytree(source, copy)
    else:
        shutil.copy(source, copy)
    return copy


def _split(data: bytes, modes: int) -> tuple[int, bytes]:
    return (data[0] % modes, data[1:]) if data else (0, b"")


def _json_paths(node, path=()):
    yield path
    children = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, child in children:
        yield from _json_paths(child, (*path, key))


def mutate_json(document, payload: bytes):
    """Structure-aware mutation: the bytes choose nodes of a valid document and replace,
    delete or duplicate them, so the parser sees well-formed JSON of the wrong shape."""
    import atheris

    provider = atheris.FuzzedDataProvider(payload)
    for _ in range(provider.ConsumeIntInRange(1, 4)):
        paths = list(_json_paths(document))
        path = paths[provider.ConsumeIntInRange(0, len(paths) - 1)]
        if not path:
            continue
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        key, choice = path[-1], provider.ConsumeIntInRange(0, 9)
        if choice == 0:
            del parent[key]
        elif choice == 1 and isinstance(parent, list):
            parent.insert(key, parent[key])
        else:
            parent[key] = [
                None, True, provider.ConsumeInt(4), -1, 0, 2**63,
                provider.ConsumeRegularFloat(), provider.ConsumeUnicodeNoSurrogates(12),
                [], {},
            ][provider.ConsumeIntInRange(0, 9)]  # fmt: skip
    return document


def _zeros(runner) -> np.ndarray:
    return np.zeros((1, *runner.input_size, 3), np.uint8)


@target
def fuzz_image(data: bytes) -> None:
    """Any bytes as an image file: pixels or ImageError."""
    from nsfw_mobile.images import decode_image

    decode_image(data, 32, max_pixels=MAX_PIXELS)


@target
def fuzz_tflite(data: bytes) -> None:
    """Any bytes as a .tflite file: metadata reader, runner opening, one prediction."""
    from nsfw_mobile.runtime.tflite_runner import TFLiteRunner
    from nsfw_mobile.tflite_metadata import read_metadata

    path = workspace() / "model.tflite"
    path.write_bytes(data)
    read_metadata(path)
    runner = TFLiteRunner(path, num_threads=1)
    runner.predict(_zeros(runner))


@target
def fuzz_onnx(data: bytes) -> None:
    """Any bytes as an .onnx file (mode 0) or an .ort file (mode 1): the toolkit's reader and
    its checks, then ONNX Runtime opening what they let through, and one prediction."""
    from nsfw_mobile.runtime.onnx_runner import OnnxRunner

    mode, payload = _split(data, 2)
    path = workspace() / ("model.onnx", "model.ort")[mode]
    path.write_bytes(payload)
    with OnnxRunner(path, num_threads=1) as runner:
        runner.predict(_zeros(runner))


def write_tfjs_model(kind: str, data: bytes, folder: Path) -> Path:
    """Turn a copy of the micro TF.js model ``kind`` ("tfjs" or "tfjs_graph") in ``folder``
    into the model the fuzz input ``data`` describes: model.json (mode 0) or the weight
    shard (mode 1) replaced, or model.json mutated as JSON (mode 2). Returns ``folder``."""
    if not (folder / "model.json").exists():
        shutil.copytree(MODELS / kind, folder)
    mode, payload = _split(data, 3)
    if mode == 2:
        document = json.loads((folder / "model.json").read_text())
        payload = json.dumps(mutate_json(document, payload)).encode()
    (folder / ("group1-shard1of1.bin" if mode == 1 else "model.json")).write_bytes(payload)
    return folder


@target
def fuzz_tfjs(data: bytes) -> None:
    """A TF.js layers model with model.json (mode 0) or its weight shard (mode 1) replaced,
    or its model.json mutated as JSON (mode 2: the topology and manifest of the wrong shape)."""
    from nsfw_mobile.tfjs import read_contract_properties, tfjs2keras

    folder = write_tfjs_model("tfjs", data, _fresh("tfjs"))
    read_contract_properties(folder / "model.json")
    tfjs2keras(folder / "model.json")


@target
def fuzz_tfjs_graph(data: bytes) -> None:
    """A TF.js graph model with model.json (mode 0) or its weight shard (mode 1) replaced, or
    its model.json mutated as JSON (mode 2: nodes, attributes and manifest of the wrong shape);
    then imported as Keras (tfjs_graph) and the inspector's reading of it."""
    from nsfw_mobile.inspect_model import inspect_tfjs
    from nsfw_mobile.tfjs import tfjs2keras

    folder = write_tfjs_model("tfjs_graph", data, _fresh("tfjs_graph"))
    inspect_tfjs(folder)
    tfjs2keras(folder / "model.json")


@target
def fuzz_coreml(data: bytes) -> None:
    """Core ML: a .mlmodel (mode 0), an .mlpackage's spec (1) or its weight blob (2) replaced;
    then the runner opens it (spec, labels, executor with decoded weights) and predicts."""
    from nsfw_mobile.runtime.coreml_runner import CoreMLRunner

    mode, payload = _split(data, 3)
    if mode == 0:
        path = _fresh("micro.mlmodel")
        path.write_bytes(payload)
    else:
        path = _fresh("micro.mlpackage")
        data_folder = path / "Data" / "com.apple.CoreML"
        target_file = data_folder / ("model.mlmodel" if mode == 1 else "weights/weight.bin")
        target_file.write_bytes(payload)
    runner = CoreMLRunner(path, backend="numpy")
    runner.predict(_zeros(runner))


@target
def fuzz_release(data: bytes) -> None:
    """A release folder whose manifest.json is replaced (mode 0) or mutated as JSON (mode 1):
    reading, the fastest-artefact choice and the checksum check (validation itself is the
    validate command's)."""
    from nsfw_mobile.manifest import fastest_artifact, read_manifest
    from nsfw_mobile.release import checksum_problems

    mode, payload = _split(data, 2)
    folder = _fresh("release")
    if mode == 1:
        document = json.loads((MODELS / "release_manifest.json").read_text())
        payload = json.dumps(mutate_json(document, payload)).encode()
    (folder / "manifest.json").write_bytes(payload)
    manifest = read_manifest(folder)
    checksum_problems(folder, manifest)
    with contextlib.suppress(NsfwMobileError):
        fastest_artifact(folder)


@target
def fuzz_video(data: bytes):
    """Any bytes as an .mp4 (mode 0), .mkv (1) or animated .gif (2): sampled and classified
    with the micro TFLite model."""
    from nsfw_mobile.runtime.tflite_runner import TFLiteRunner
    from nsfw_mobile.video import classify_video

    global _video_runner
    if _video_runner is None:
        _video_runner = TFLiteRunner(MODELS / "micro.tflite", num_threads=1)
    mode, payload = _split(data, 3)
    path = workspace() / ("clip.mp4", "clip.mkv", "clip.gif")[mode]
    path.write_bytes(payload)
    return classify_video(_video_runner, path, every=0.5)


_video_runner = None


def run_one(name: str, data: bytes) -> None:
    """Run target ``name`` on ``data``; typed errors are the contract, so they pass."""
    with contextlib.suppress(NsfwMobileError):
        TARGETS[name](data)
