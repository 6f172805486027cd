"""The Runner contract shared by every format."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from ..metadata import ModelContract


class Runner(ABC):
    """Runs one model on uint8 RGB batches and returns probabilities in label order.

    A runner may hold a process or a session (TF.js: a Node process): ``close()`` ends
    it, and ``with open_runner(path) as runner:`` closes it on the way out, on error
    too. Closing twice is harmless; runners that hold nothing close as a no-op.
    """

    labels: tuple[str, ...]
    input_size: tuple[int, int]
    """(height, width) of the images the model takes."""
    name: str
    contract: ModelContract
    """What the model promises (labels, NSFW labels, provenance), read from its file."""

    @abstractmethod
    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """``pixels``: uint8 (N, H, W, 3). Returns float32 (N, len(labels))."""

    def check_pixels(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.asarray(pixels)
        height, width = self.input_size
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[1:] != (height, width, 3):
            raise ValueError(
                f"{self.name} takes uint8 images of shape (N, {height}, {width}, 3), "
                f"got {pixels.dtype} {pixels.shape}"
            )
        return pixels

    def helper_peak_rss_mb(self) -> float:
        """Peak memory of a helper process the engine runs in (TF.js: Node), else 0."""
        return 0.0

    def close(self) -> None:  # noqa: B027 (most engines hold nothing to release)
        """Release the engine's resources (a session, a helper process); idempotent."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def lanes(self, count: int) -> list[Runner] | None:
        """``count`` independent single-threaded copies for parallel lanes, or None.

        A runner whose engine is cheap to open again (LiteRT) returns copies, so
        each of ``count`` threads can decode and infer its own images with no
        hand-off and no thread oversubscription. Others return None and are fed
        batches from a decoding pool instead. The caller closes the copies.
        """
        return None
