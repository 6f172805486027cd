"""Classify image files with any Runner, in input order, on every core.

Two ways to use the cores, chosen by the runner:

- lanes (LiteRT): each worker thread owns a single-threaded copy of the model and
  decodes then classifies its own images. Pillow and LiteRT both release the GIL,
  so two lanes on two cores reach about 95% of what two cores can do, where a
  decoding pool feeding one multi-threaded interpreter reached 60-65% (threads
  fighting over cores, and batches handed from one stage to the other).
- a decoding pool feeding batches to the one runner (Keras, Core ML executors).
"""

from __future__ import annotations

import os
import queue
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ImageError, UsageError
from .formats import batched_help
from .images import DEFAULT_MAX_PIXELS, decode_image, iter_decoded
from .parallel import default_workers, ordered_map
from .runtime.base import Runner


@dataclass
class Prediction:
    path: str
    label: str | None = None
    probabilities: dict[str, float] | None = None
    nsfw_score: float | None = None
    error: str | None = None
    kind: str | None = None
    """The error's machine-readable kind (see ``errors.ImageError``)."""

    def is_flagged(self, threshold: float | None) -> bool:
        """Above ``threshold`` (None: nothing is flagged; nor is a model without a score)."""
        score = self.nsfw_score
        return threshold is not None and score is not None and score > threshold

    def to_dict(self) -> dict:
        if self.error is not None:
            return {"path": self.path, "error": self.error, "kind": self.kind}
        return {
            "path": self.path,
            "label": self.label,
            "probabilities": self.probabilities,
            "nsfw_score": self.nsfw_score,
        }

    def record(self, threshold: float | None = None) -> dict:
        """The record ``predict --json`` prints for this file (and ``serve`` answers):
        ``to_dict()``, plus ``flagged`` when a threshold is set and the file was read."""
        document = self.to_dict()
        if threshold is not None and self.error is None:
            document["flagged"] = self.is_flagged(threshold)
        return document


def predictions(
    runner: Runner, paths: list[str | os.PathLike], pixels: list[np.ndarray]
) -> list[Prediction]:
    """One Prediction per decoded image (``pixels`` from ``images.decode_image``), named by
    ``paths``: probabilities and score rounded to 6 decimals, as every command prints them."""
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


def column_names(labels: Iterable[str]) -> list[str]:
    """The columns of ``predict --csv`` and of the Parquet rows on Ray, written once."""
    return ["path", "label", *(f"p_{n}" for n in labels), "nsfw_score", "flagged", "error", "kind"]


def check_batching(model, workers: int | None) -> None:
    """Refuse a --batch-size the engine would ignore, in one line (the registry's ``batched``
    and ``lanes`` capabilities decide): ``model`` is a ``resolve.ModelRef``."""
    file_type = model.file_type
    if file_type is None:
        return
    name = Path(model.label).name
    if not file_type.batched:
        raise UsageError(
            f"--batch-size applies to engines that take batches; {name} is {file_type.key}, "
            f"one image per call in each lane (--workers sets the lanes; {batched_help()}): "
            "drop --batch-size"
        )
    lanes = workers or default_workers()
    if file_type.lanes and lanes > 1:
        raise UsageError(
            f"--batch-size applies to engines that take batches; {name} ({file_type.key}) runs "
            f"in {lanes} lanes, one image per call in each: add --workers 1 to give it "
            "batches, or drop --batch-size"
        )


_predictions = predictions


def classify(
    runner: Runner,
    paths: Iterable[str | os.PathLike],
    *,
    batch_size: int = 32,
    workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[Prediction]:
    """Yield one Prediction per file, in input order; unreadable files carry their error.

    ``workers``: threads (default: one per core, at most 8).
    """
    paths = [Path(p) for p in paths]
    workers = workers or default_workers()
    lanes = runner.lanes(min(workers, len(paths))) if workers > 1 and len(paths) > 1 else None
    if lanes:
        try:
            yield from _classify_in_lanes(lanes, paths, max_pixels)
        finally:
            for lane in lanes:
                lane.close()
    else:
        yield from _classify_batches(runner, paths, batch_size, workers, max_pixels)


def _classify_in_lanes(
    lanes: list[Runner], paths: list[Path], max_pixels: int
) -> Iterator[Prediction]:
    idle: queue.SimpleQueue[Runner] = queue.SimpleQueue()
    for lane in lanes:
        idle.put(lane)

    def work(path: Path) -> Prediction:
        runner = idle.get()
        try:
            pixels = decode_image(path, runner.input_size, max_pixels=max_pixels)
            return _predictions(runner, [path], [pixels])[0]
        except ImageError as exc:
            return Prediction(path=str(path), error=exc.reason, kind=exc.kind)
        finally:
            idle.put(runner)

    for _, prediction in ordered_map(work, paths, len(lanes)):
        yield prediction


def _classify_batches(
    runner: Runner, paths: list[Path], batch_size: int, workers: int, max_pixels: int
) -> Iterator[Prediction]:
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
            held.append(Prediction(path=str(path), error=result.reason, kind=result.kind))
        else:
            held.append(None)
            pending_paths.append(path)
            pending_pixels.append(result)
        if len(pending_pixels) >= batch_size:
            yield from flush()
    yield from flush()
