"""The product's classes, NSFWJS's classes, and the merge from five to three."""

from __future__ import annotations

from pathlib import Path

import numpy as np

LABELS: tuple[str, ...] = ("Neutral", "Porn", "Sexy")
"""The product's classes, in output order."""

NSFWJS_LABELS: tuple[str, ...] = ("Drawing", "Hentai", "Neutral", "Porn", "Sexy")
"""The classes of GantMan's model as NSFWJS orders them."""

MERGE_5_TO_3: dict[str, tuple[str, ...]] = {
    "Neutral": ("Drawing", "Neutral"),
    "Porn": ("Hentai", "Porn"),
    "Sexy": ("Sexy",),
}


def merge_matrix() -> np.ndarray:
    """The (5, 3) 0/1 matrix M with probs3 = probs5 @ M."""
    matrix = np.zeros((len(NSFWJS_LABELS), len(LABELS)), dtype=np.float32)
    for column, target in enumerate(LABELS):
        for source in MERGE_5_TO_3[target]:
            matrix[NSFWJS_LABELS.index(source), column] = 1.0
    return matrix


def merge_5_to_3(probabilities: np.ndarray) -> np.ndarray:
    """Merge NSFWJS's five probabilities (N, 5) into the product's three (N, 3)."""
    return np.asarray(probabilities, dtype=np.float32) @ merge_matrix()


def default_labels(width: int, model_file: str | Path | None = None) -> tuple[str, ...]:
    """Class names of a model without embedded labels: ``labels.txt`` beside its file,
    else the product's three or NSFWJS's five classes by output width."""
    from .errors import ModelFileError

    if model_file is not None:
        labels_file = Path(model_file).with_name("labels.txt")
        if labels_file.is_file():
            text = labels_file.read_text()
            labels = tuple(line.strip() for line in text.splitlines() if line.strip())
            if len(labels) != width:
                raise ModelFileError(
                    f"{labels_file}: {len(labels)} labels for a model with {width} outputs"
                )
            return labels
    if width == len(LABELS):
        return LABELS
    if width == len(NSFWJS_LABELS):
        return NSFWJS_LABELS
    raise ModelFileError(
        f"model has {width} outputs and no labels.txt beside it: write one label per line"
    )
