"""Classify image files with any Runner: decoding overlaps inference, order is kept."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ImageError
from .images import DEFAULT_MAX_PIXELS, iter_decoded
from .runtime.base import Runner


@dataclass
class Prediction:
    path: str
    label: str | None = None
    probabilities: dict[str, float] | None = None
    nsfw_score: float | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        return {
            "path": self.path,
            "label": self.label,
            "probabilities": self.probabilities,
            "nsfw_score": self.nsfw_score,
        }


def _predictions(runner: Runner, paths: list[Path], pixels: list[np.ndarray]) -> list[Prediction]:
    probabilities = runner.predict(np.stack(pixels))
    scores = runner.contract.nsfw_score(probabilities)
    if scores is None:  # a model without NSFW labels: its probabilities, no score
        scores = [None] * len(probabilities)
    return [
        Prediction(
            path=str(path),
            label=runner.labels[int(np.argmax(row))],
            probabilities={name: round(float(p), 6) for name, p in zip(runner.labels, row)},
            nsfw_score=None if score is None else round(float(score), 6),
        )
        for path, row, score in zip(paths, probabilities, scores)
    ]


def classify(
    runner: Runner,
    paths: Iterable[str | os.PathLike],
    *,
    batch_size: int = 32,
    workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[Prediction]:
    """Yield one Prediction per file, in input order; unreadable files carry their error."""
    pending_paths: list[Path] = []
    pending_pixels: list[np.ndarray] = []
    held: list[Prediction | None] = []  # keeps errors in order between batches

    def flush() -> Iterator[Prediction]:
        done = (
            iter(_predictions(runner, pending_paths, pending_pixels))
            if pending_pixels
            else iter(())
        )
        for slot in held:
            yield slot if slot is not None else next(done)
        pending_paths.clear()
        pending_pixels.clear()
        held.clear()

    for path, result in iter_decoded(
        paths, runner.input_size, workers=workers, max_pixels=max_pixels
    ):
        if isinstance(result, ImageError):
            held.append(Prediction(path=str(path), error=result.reason))
        else:
            held.append(None)
            pending_paths.append(path)
            pending_pixels.append(result)
        if len(pending_pixels) >= batch_size:
            yield from flush()
    yield from flush()
