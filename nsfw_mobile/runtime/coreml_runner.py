"""Core ML runner: Core ML itself on macOS, the numpy executors elsewhere."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from ..errors import ModelFileError
from ..metadata import contract_of
from .base import Runner
from .coreml_spec import artifact_metadata, class_labels, image_features, load_spec

MALFORMED = (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError,
             ZeroDivisionError, RecursionError)  # fmt: skip
"""What numpy and the spec walkers raise on a spec whose parts do not fit together."""


class CoreMLRunner(Runner):
    """``backend``: "auto" (Core ML on macOS, numpy elsewhere), "coreml" or "numpy".

    ``emulate_fp16`` applies to the numpy executor of float16 ML Programs.
    """

    def __init__(self, path: str | Path, *, backend: str = "auto", emulate_fp16: bool = True):
        self.path = Path(path)
        try:
            self._open(backend, emulate_fp16)
        except MALFORMED as exc:
            raise ModelFileError(
                f"{self.path}: malformed model: its description, layers or weights do not fit "
                f"together ({type(exc).__name__}: {exc})"
            ) from None

    def _open(self, backend: str, emulate_fp16: bool) -> None:
        self.spec = load_spec(self.path)
        self.labels = class_labels(self.spec)
        if not self.labels:
            raise ModelFileError(f"{self.path}: not a classifier (no class labels in the model)")
        images = image_features(self.spec)
        if len(images) != 1:
            raise ModelFileError(f"{self.path}: expected one image input, found {len(images)}")
        self.input_name = images[0].name
        self.input_size = (images[0].type.imageType.height, images[0].type.imageType.width)
        self.contract = contract_of(
            artifact_metadata(self.path, self.spec),
            labels=self.labels,
            input_size=self.input_size,
            name=self.path.stem,
        )
        self.probabilities_name = self.spec.description.predictedProbabilitiesName
        if backend == "auto":
            backend = "coreml" if platform.system() == "Darwin" else "numpy"
        self.backend = backend
        self.name = f"coreml:{self.path.name}"
        if backend == "coreml":
            from .._tf import import_coremltools

            ct = import_coremltools()
            self._model = ct.models.MLModel(str(self.path))
        elif self.spec.WhichOneof("Type") == "mlProgram":
            from .coreml_mil import ProgramExecutor

            self._model = ProgramExecutor(self.spec, self.path, emulate_fp16=emulate_fp16)
        else:
            from .coreml_nn import NeuralNetworkExecutor

            self._model = NeuralNetworkExecutor(self.spec, str(self.path))

    @classmethod
    def open(cls, path, *, num_threads=None, allow_unsafe: bool = False, **options):
        """``num_threads`` does not apply: Core ML chooses its own compute units."""
        return cls(path, **options)

    def outputs(self, image: np.ndarray) -> dict:
        """Core ML's own output dictionary (classLabel and the probabilities) for one image."""
        if self.backend == "coreml":
            from PIL import Image

            return self._model.predict({self.input_name: Image.fromarray(image, "RGB")})
        try:
            return self._model.predict(image)
        except MALFORMED as exc:  # a graph whose shapes or operands do not fit together
            raise ModelFileError(
                f"{self.path}: the model cannot run ({type(exc).__name__}: {exc})"
            ) from None

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        pixels = self.check_pixels(pixels)
        results = np.zeros((len(pixels), len(self.labels)), np.float32)
        for index, image in enumerate(pixels):
            probabilities = self.outputs(image)[self.probabilities_name]
            results[index] = [probabilities[label] for label in self.labels]
        return results
