"""The reference runner: the Keras model itself."""

from __future__ import annotations

import numpy as np

from .._tf import import_tensorflow
from ..models import SourceModel, load_source
from .base import Runner


class KerasRunner(Runner):
    def __init__(self, source: SourceModel, batch_size: int = 32):
        tf = import_tensorflow()
        self.source = source
        self.model = source.model
        self.contract = source.contract
        self.labels = source.labels
        self.input_size = source.input_size
        self.name = f"keras:{source.name}"
        self.batch_size = batch_size
        height, width = self.input_size
        # A traced graph runs about 8x faster than eager model(x) at batch 1.
        self._forward = tf.function(
            lambda x: self.model(x, training=False),
            input_signature=[tf.TensorSpec((None, height, width, 3), tf.float32)],
        )

    @classmethod
    def open(cls, path=None, *, allow_unsafe: bool = False, batch_size: int = 32, num_threads=None):
        """``num_threads`` is TensorFlow's process-wide setting, so it is left to the caller."""
        return cls(load_source(path, allow_unsafe=allow_unsafe), batch_size=batch_size)

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        pixels = self.check_pixels(pixels)
        outputs = []
        for start in range(0, len(pixels), self.batch_size):
            batch = pixels[start : start + self.batch_size].astype(np.float32) / np.float32(255)
            outputs.append(np.asarray(self._forward(batch)))
        if not outputs:
            return np.zeros((0, len(self.labels)), np.float32)
        return np.concatenate(outputs).astype(np.float32)
