"""Class-per-folder datasets for training and evaluation.

Layouts (one folder per class; names match labels case-insensitively):

    DATA/train/{neutral,porn,sexy}/...   + DATA/test/... (or DATA/val/...)
    DATA/{neutral,porn,sexy}/...         split with --val-split

``train`` takes its classes from the folders (``--merge drawings=neutral``
folds one folder into another class, as the seed merged the scraper's five
folders into three); ``evaluate`` maps folders onto the model's labels.

Every file is decoded once, before training, by ``images.py`` (same resize,
orientation and colour rules as inference), so corrupt files are found and
listed up front and never crash an epoch. The decoded uint8 pixels are kept in
a cache (a .npy memory map in the run folder) that every epoch reads, so the
JPEGs are not decoded again.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ImageError, UsageError
from .files import sha256_file
from .images import IMAGE_SUFFIXES, iter_decoded
from .labels import NSFWJS_LABELS

CANONICAL_NAMES = {name.lower(): name for name in NSFWJS_LABELS} | {"drawings": "Drawing"}
"""Folder names of the NSFWJS classes (and the scraper's "drawings") spelled as labels."""
HELD_OUT_FOLDERS = ("test", "val")


@dataclass
class Split:
    """Files of one split with their class indices, in a fixed order."""

    paths: list[Path]
    labels: np.ndarray

    def counts(self, names) -> dict[str, int]:
        counter = Counter(int(i) for i in self.labels)
        return {name: counter.get(i, 0) for i, name in enumerate(names)}


@dataclass
class Dataset:
    root: Path
    class_names: tuple[str, ...]
    train: Split
    val: Split
    val_source: str
    corrupt: list[ImageError] = field(default_factory=list)


def parse_merge(text: str | None) -> dict[str, str]:
    """``"drawings=neutral,hentai=porn"`` -> {"drawings": "neutral", "hentai": "porn"}."""
    merge: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        source, equals, target = item.partition("=")
        if not equals or not source.strip() or not target.strip():
            raise UsageError(f"--merge {text!r}: write FOLDER=CLASS pairs such as drawings=neutral")
        merge[source.strip().lower()] = target.strip().lower()
    return merge


def _folders(root: Path) -> list[Path]:
    return [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]


def discover_classes(root: Path, merge: dict[str, str] | None = None) -> tuple[str, ...]:
    """Class names from a split's folders after ``merge``, sorted, NSFWJS names capitalised."""
    merge = merge or {}
    spelled = {f.name.lower(): f.name for f in _folders(root)}
    unused = sorted(set(merge) - set(spelled))
    if unused:
        raise UsageError(f"--merge names {', '.join(unused)}, which {root} has no folder for")
    keys = {merge.get(key, key) for key in spelled}
    labels = sorted((CANONICAL_NAMES.get(k, spelled.get(k, k)) for k in keys), key=str.lower)
    if len(labels) < 2:
        raise UsageError(f"{root}: found {len(labels)} class folder(s); a classifier needs two")
    return tuple(labels)


def _class_folders(root: Path, class_names, merge: dict[str, str]) -> dict[int, list[Path]]:
    lookup = {name.lower(): index for index, name in enumerate(class_names)}
    lookup |= {alias: lookup[name.lower()] for alias, name in CANONICAL_NAMES.items()
               if name.lower() in lookup}  # fmt: skip
    found: dict[int, list[Path]] = {}
    for folder in _folders(root):
        key = folder.name.lower()
        index = lookup.get(merge.get(key, key))
        if index is None:
            raise UsageError(
                f"{folder}: folder {folder.name!r} is not a class of the model "
                f"({', '.join(class_names)}); rename or remove it, or fold it into a class "
                f"with --merge {key}=CLASS"
            )
        found.setdefault(index, []).append(folder)
    for index, folders in found.items():
        if len(folders) > 1 and not any(f.name.lower() in merge for f in folders):
            raise UsageError(f"{root}: two folders map to class {class_names[index]!r}")
    missing = [class_names[i] for i in range(len(class_names)) if i not in found]
    if missing:
        raise UsageError(
            f"{root}: no folder for class {', '.join(missing)} (expected one per class)"
        )
    return found


def list_split(root: Path, class_names, merge: dict[str, str] | None = None) -> Split:
    paths, labels = [], []
    for index, folders in sorted(_class_folders(root, class_names, merge or {}).items()):
        files = sorted(
            p
            for folder in folders
            for p in folder.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        paths.extend(files)
        labels.extend([index] * len(files))
    return Split(paths, np.asarray(labels, np.int64))


def split_roots(root: str | os.PathLike) -> tuple[Path, Path | None]:
    """The training folder and the held-out one (test/ or val/), as train and evaluate see them."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{root}: no such dataset folder")
    train_root = root / "train" if (root / "train").is_dir() else root
    held_out = next((root / n for n in HELD_OUT_FOLDERS if (root / n).is_dir()), None)
    return train_root, held_out


def scan(
    root: str | os.PathLike,
    *,
    class_names=None,
    merge: dict[str, str] | None = None,
    val_split: float | None = None,
    seed: int = 0,
) -> Dataset:
    """Find the train and validation files of a dataset folder (no decoding yet).

    ``class_names``: the labels to map folders onto; None takes them from the folders.
    """
    root = Path(root)
    train_root, val_root = split_roots(root)
    class_names = tuple(class_names or discover_classes(train_root, merge))
    train = list_split(train_root, class_names, merge)
    if val_root is not None:
        if val_split is not None:
            raise UsageError(
                f"{root} has a {val_root.name}/ folder: drop --val-split or that folder"
            )
        val, val_source = list_split(val_root, class_names, merge), f"{val_root.name}/ folder"
    else:
        fraction = 0.2 if val_split is None else val_split
        if not 0 < fraction < 1:
            raise UsageError(f"--val-split {fraction}: choose a fraction between 0 and 1")
        order = np.random.default_rng(seed).permutation(len(train.paths))
        cut = int(round(len(order) * (1 - fraction)))
        val = Split([train.paths[i] for i in order[cut:]], train.labels[order[cut:]])
        train = Split([train.paths[i] for i in order[:cut]], train.labels[order[:cut]])
        val_source = f"{fraction:.0%} of the training files (seed {seed})"
    if not len(train.paths) or not len(val.paths):
        raise UsageError(f"{root}: no images in the train or validation split")
    return Dataset(root, class_names, train, val, val_source)


def duplicates_across(dataset: Dataset) -> list[tuple[Path, Path]]:
    """Files of the held-out split whose bytes (SHA-256) also appear in the training split."""
    training = {}
    for path in dataset.train.paths:
        with contextlib.suppress(OSError):
            training.setdefault(sha256_file(path), path)
    pairs = []
    for path in dataset.val.paths:
        with contextlib.suppress(OSError):
            twin = training.get(sha256_file(path))
            if twin is not None:
                pairs.append((twin, path))
    return pairs


def decode_split(
    split: Split,
    size: tuple[int, int],
    cache: str | os.PathLike | None = None,
    *,
    workers: int | None = None,
    progress=None,
) -> tuple[np.ndarray, np.ndarray, list[ImageError]]:
    """Decode every file once: (pixels uint8 (N, H, W, 3), labels, errors).

    With ``cache`` the pixels go to a .npy file opened as a memory map, so a
    dataset larger than memory still trains. Unreadable files are dropped and
    returned as errors.
    """
    height, width = size
    count = len(split.paths)
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        pixels = np.lib.format.open_memmap(
            cache, mode="w+", dtype=np.uint8, shape=(count, height, width, 3)
        )
    else:
        pixels = np.empty((count, height, width, 3), np.uint8)
    keep, errors = [], []
    for index, (_, result) in enumerate(iter_decoded(split.paths, size, workers=workers)):
        if isinstance(result, ImageError):
            errors.append(result)
        else:
            pixels[len(keep)] = result
            keep.append(index)
        if progress:
            progress(1)
    labels = split.labels[keep]
    return pixels[: len(keep)], labels, errors


def class_weights(labels: np.ndarray, classes: int) -> dict[int, float]:
    """Inverse-frequency weights that average 1 over the training samples."""
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (classes * np.maximum(counts, 1)), 0.0)
    return {index: float(w) for index, w in enumerate(weights)}


AUGMENTATIONS = ("rotation", "shift", "shear", "zoom", "channel_shift", "flip")


def check_augmentations(names) -> None:
    unknown = set(names) - set(AUGMENTATIONS)
    if unknown:
        raise UsageError(
            f"--augment {','.join(sorted(unknown))}: choose from {','.join(AUGMENTATIONS)} or none"
        )


def augmenter(enabled: tuple[str, ...] = AUGMENTATIONS, seed: int = 0):
    """The seed's on-the-fly augmentation as Keras layers, on the 0-255 scale.

    rotation up to 30 degrees, width/height shift 0.2, shear 0.2, zoom 0.2,
    channel shift 20, horizontal flip; each can be switched off.
    """
    import keras

    check_augmentations(enabled)
    layers = []
    if "rotation" in enabled:
        layers.append(keras.layers.RandomRotation(30 / 360, fill_mode="nearest", seed=seed))
    if "shift" in enabled:
        layers.append(keras.layers.RandomTranslation(0.2, 0.2, fill_mode="nearest", seed=seed + 1))
    if "shear" in enabled:
        layers.append(keras.layers.RandomShear(0.2, 0.2, fill_mode="nearest", seed=seed + 2))
    if "zoom" in enabled:
        layers.append(keras.layers.RandomZoom(0.2, fill_mode="nearest", seed=seed + 3))
    if "flip" in enabled:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed + 4))
    return layers, "channel_shift" in enabled


def make_tf_dataset(pixels, labels, *, batch_size, training, augment=(), seed=0):
    """A tf.data pipeline over decoded pixels: shuffle, augment, scale to [0, 1], prefetch."""
    from ._tf import import_tensorflow

    tf = import_tensorflow()
    dataset = tf.data.Dataset.from_tensor_slices(np.arange(len(labels)))
    if training:
        dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)

    def load(indices):
        batch = tf.numpy_function(lambda i: np.asarray(pixels[np.sort(i)]), [indices], tf.uint8)
        order = tf.argsort(tf.argsort(indices))  # pixels came back sorted; restore order
        batch = tf.gather(batch, order)
        batch.set_shape((None, *pixels.shape[1:]))
        return tf.cast(batch, tf.float32), tf.gather(tf.constant(labels), indices)

    dataset = dataset.batch(batch_size).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if training and augment:
        layers, channel_shift = augmenter(tuple(augment), seed)

        def apply(images, targets):
            for layer in layers:
                images = layer(images, training=True)
            if channel_shift:
                shift = tf.random.uniform((tf.shape(images)[0], 1, 1, 3), -20.0, 20.0)
                images = tf.clip_by_value(images + shift, 0.0, 255.0)
            return images, targets

        dataset = dataset.map(apply, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.map(lambda x, y: (x / 255.0, y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)
