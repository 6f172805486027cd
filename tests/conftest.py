"""Shared fixtures: tiny trained models, sample images, and the pretrained model."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from nsfw_mobile.images import load_images, sample_images

TINY_SIZE = 96


# Under pytest-xdist (`-n 2 --dist loadgroup`, set in pyproject.toml) every file runs on one
# worker, so its module fixtures are made once. The session fixtures every format of a model
# (FormatsOnce) are shared between workers through the pytest cache and a file lock.
@pytest.hookimpl(tryfirst=True)  # before xdist turns the marks into group names
def pytest_collection_modifyitems(config, items):
    for item in items:
        item.add_marker(pytest.mark.xdist_group(item.path.stem))


def synthetic_batch(count: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three learnable classes: reddish noise, greenish stripes, bluish blobs."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, count)
    images = np.zeros((count, size, size, 3), np.float32)
    ys, xs = np.mgrid[0:size, 0:size]
    for i, label in enumerate(labels):
        base = rng.uniform(40, 120, 3)
        base[label] += 100
        texture = {
            0: rng.normal(0, 30, (size, size, 1)),
            1: 40 * np.sin(xs / rng.uniform(2, 5))[..., None],
            2: 50 * np.exp(-((xs - size / 2) ** 2 + (ys - size / 2) ** 2) / (size * 4))[..., None],
        }[int(label)]
        images[i] = np.clip(base + texture, 0, 255)
    return images.astype(np.uint8), labels


def set_batchnorm_statistics(model, images: np.ndarray) -> None:
    """Set every BatchNorm's moving statistics to those of one real batch.

    A fresh MobileNetV2 keeps mean 0 / variance 1, so its inference output is
    the same for every image; a few hundred training steps would not move the
    statistics far at momentum 0.999.
    """
    import keras

    layers = [
        layer
        for layer in model._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(images.astype(np.float32) / 255.0, training=True)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum


def train_tiny_model(size: int = TINY_SIZE, epochs: int = 15, seed: int = 0):
    """MobileNetV2 alpha 0.35 trained briefly on synthetic data, so outputs vary by image."""
    import keras

    from nsfw_mobile.models import build_classifier

    keras.utils.set_random_seed(seed)
    model = build_classifier(alpha=0.35, input_size=size, weights=None, classes=3)
    images, labels = synthetic_batch(96, size, seed)
    set_batchnorm_statistics(model, images)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(images / 255.0, labels, batch_size=32, epochs=epochs, verbose=0)
    set_batchnorm_statistics(model, images)
    return model


# ------------------------------------------------------------------ built once per run


ROOT = Path(__file__).resolve().parent.parent
LIBRARIES = ("tensorflow-cpu", "keras", "coremltools", "ai-edge-litert", "numpy", "pillow")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _code_in_use() -> dict[str, str]:
    """What a shared fixture's files depend on: this file, every module of the package that
    is loaded (a superset of those the build used), and the libraries' versions."""
    from importlib import metadata

    files = {Path(__file__)}
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "nsfw_mobile" and getattr(module, "__file__", None):
            files.add(Path(module.__file__))
    record = {str(path.relative_to(ROOT)): _digest(path) for path in sorted(files)}
    for name in LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            record[name] = metadata.version(name)
    return record


def _still_valid(record: dict[str, str]) -> bool:
    from importlib import metadata

    for key, expected in record.items():
        path = ROOT / key
        if path.suffix == ".py":
            if not path.is_file() or _digest(path) != expected:
                return False
        else:
            try:
                if metadata.version(key) != expected:
                    return False
            except metadata.PackageNotFoundError:
                return False
    return True


def _lock(handle) -> None:
    try:
        import fcntl
    except ImportError:  # Windows: workers are not made to wait; each may build its own
        return
    fcntl.flock(handle, fcntl.LOCK_EX)


def built_once(config, name: str, build) -> Path:
    """The folder ``build(folder)`` fills, made once for all xdist workers of a run and kept
    in the pytest cache for later runs while the code that made it is unchanged: the build
    records the digest of every package module loaded when it ends (and of this file), and
    a change to any of them makes it again. A worker that finds another building waits on a
    file lock. Tests must not change these files: copy them first."""
    cache = getattr(config, "cache", None)
    root = (
        Path(cache.mkdir("nsfw-mobile-fixtures"))
        if cache
        else Path(config.rootpath) / ".pytest_cache" / "nsfw-mobile-fixtures"
    )
    root.mkdir(parents=True, exist_ok=True)
    folder = root / name
    with open(root / f"{name}.lock", "w") as handle:
        _lock(handle)
        record = folder / "code.json"
        if record.is_file() and _still_valid(json.loads(record.read_text())):
            return folder
        shutil.rmtree(folder, ignore_errors=True)
        building = root / f"{name}.building"
        shutil.rmtree(building, ignore_errors=True)  # an interrupted build
        building.mkdir()
        build(building)
        (building / "code.json").write_text(json.dumps(_code_in_use(), indent=1))
        os.replace(building, folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_path(pytestconfig):
    folder = built_once(
        pytestconfig, "tiny-model", lambda f: train_tiny_model().save(f / "tiny.keras")
    )
    return folder / "tiny.keras"


@pytest.fixture(scope="session")
def tiny_model(tiny_model_path):
    from nsfw_mobile.models import load_keras_model

    return load_keras_model(tiny_model_path)


@pytest.fixture(scope="session")
def samples():
    return sample_images()


@pytest.fixture(scope="session")
def sample_pixels_224(samples):
    return load_images(samples, 224).pixels


@pytest.fixture(scope="session")
def sample_pixels_tiny(samples):
    """The shipped images plus synthetic ones, at the tiny models' input size."""
    natural = load_images(samples, TINY_SIZE).pixels
    synthetic, _ = synthetic_batch(12, TINY_SIZE, seed=1)
    return np.concatenate([natural, synthetic])


@pytest.fixture(scope="session")
def pretrained3():
    from nsfw_mobile.models import pretrained

    return pretrained(classes=3)


def assert_outputs_vary(probabilities: np.ndarray, minimum_std: float = 0.01) -> None:
    """A fidelity test on a model whose outputs never change proves nothing."""
    spread = np.asarray(probabilities).std(axis=0).max()
    assert spread > minimum_std, f"model outputs barely vary across images (std {spread:.4f})"


def convert_every_format(source, out_dir, calibration=None):
    from nsfw_mobile.convert import convert_all
    from nsfw_mobile.formats import FORMATS

    return {a.format: a for a in convert_all(source, FORMATS, out_dir, calibration=calibration)}


class FormatsOnce(Mapping):
    """Every registry format of one model, key -> Artifact, each converted on first use and
    once per run (``built_once`` per format): a test that needs two formats waits for two
    conversions, not for all of them."""

    def __init__(self, config, name: str, make_source, calibration=None):
        self.config, self.name, self.make_source = config, name, make_source
        self.calibration = calibration
        self._source = None
        self._made: dict = {}

    def _build(self, key: str, folder: Path) -> None:
        from nsfw_mobile.convert import convert_all
        from nsfw_mobile.formats import by_key

        if self._source is None:
            self._source = self.make_source()
        fmt = by_key(key)
        calibration = self.calibration if "calibration" in fmt.options else None
        (artifact,) = convert_all(self._source, [fmt], folder, calibration=calibration)
        record = {**artifact.to_dict(), "path": artifact.path.name}
        (folder / "artifact.json").write_text(json.dumps(record))

    def __getitem__(self, key: str):
        from nsfw_mobile.export import Artifact

        if key not in self._made:
            if key not in set(self):
                raise KeyError(key)
            folder = built_once(self.config, f"{self.name}-{key}", lambda f: self._build(key, f))
            record = json.loads((folder / "artifact.json").read_text())
            self._made[key] = Artifact(**{**record, "path": folder / record["path"]})
        return self._made[key]

    def __contains__(self, key) -> bool:  # without converting it
        return key in set(self)

    def __iter__(self):
        from nsfw_mobile.formats import FORMATS

        return iter([f.key for f in FORMATS])

    def __len__(self) -> int:
        from nsfw_mobile.formats import FORMATS

        return len(FORMATS)


def write_synthetic_images(folder: Path, count: int, seed: int, size: int = TINY_SIZE) -> Path:
    from PIL import Image

    images, _ = synthetic_batch(count, size, seed=seed)
    for index, image in enumerate(images):
        Image.fromarray(image).save(folder / f"synthetic_{seed}_{index:02d}.png")
    return folder


@pytest.fixture(scope="session")
def tiny_images_dir(tmp_path_factory):
    """Images like the tiny model's training data, as PNG files: its validation set (the
    natural samples are far outside what it learned)."""
    return write_synthetic_images(tmp_path_factory.mktemp("tiny_images"), 40, seed=5)


@pytest.fixture(scope="session")
def tiny_calibration_dir(tmp_path_factory):
    """Other images like its training data: the tiny model's calibration set."""
    return write_synthetic_images(tmp_path_factory.mktemp("tiny_calibration"), 20, seed=6)


@pytest.fixture(scope="session")
def tiny_source(tiny_model_path):
    from nsfw_mobile.models import load_source

    return load_source(tiny_model_path)


@pytest.fixture(scope="session")
def tiny_artifacts(pytestconfig, tiny_model_path, tiny_calibration_dir):
    """Every format of the registry, converted from the tiny model (key -> Artifact),
    full-integer ones calibrated on images like its training data."""
    from nsfw_mobile.models import load_source

    return FormatsOnce(
        pytestconfig, "tiny-artifacts", lambda: load_source(tiny_model_path), tiny_calibration_dir
    )


SECOND_SEED = 1
"""The suite's trained models hold their artefacts to the tolerance bounds on two seeds: the
quick loop on seed 0, the slow tier on this one too, so that a bound that holds for one
trained model only fails here, not on a user's machine."""


@pytest.fixture(scope="session")
def second_seed_model_path(pytestconfig):
    """The tiny model trained the same way from another seed."""
    folder = built_once(
        pytestconfig,
        f"tiny-model-seed-{SECOND_SEED}",
        lambda f: train_tiny_model(seed=SECOND_SEED).save(f / "tiny.keras"),
    )
    return folder / "tiny.keras"


@pytest.fixture(scope="session")
def second_seed_artifacts(pytestconfig, second_seed_model_path, tiny_calibration_dir):
    """``tiny_artifacts`` of the second seed's model."""
    from nsfw_mobile.models import load_source

    return FormatsOnce(
        pytestconfig,
        f"tiny-artifacts-seed-{SECOND_SEED}",
        lambda: load_source(second_seed_model_path),
        tiny_calibration_dir,
    )


@pytest.fixture(scope="session")
def full_artifacts(pytestconfig):
    """Every format of the registry, converted from the full-size pretrained model."""
    from nsfw_mobile.models import load_source

    return FormatsOnce(pytestconfig, "full-artifacts", lambda: load_source(None))
