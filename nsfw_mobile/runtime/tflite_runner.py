"""TFLite runner on LiteRT (``ai_edge_litert``), without importing TensorFlow.

Falls back to ``tflite_runtime`` and then to ``tf.lite`` when LiteRT is not
installed. Float inputs get x / 255; integer inputs and outputs are mapped by
the tensors' own quantization parameters.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ModelFileError
from ..labels import default_labels
from ..metadata import ModelContract, contract_of, read_tflite
from ..quiet import native_output
from .base import Runner


def load_interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            from .._tf import import_tensorflow

            Interpreter = import_tensorflow().lite.Interpreter
    return Interpreter


def _contract_for(path: Path, width: int, input_size) -> ModelContract:
    """The contract in the file's metadata; labels.txt or the output width otherwise."""
    metadata = read_tflite(path)
    labels = metadata.labels or default_labels(width, path)
    if len(labels) != width:
        raise ModelFileError(f"{path}: {len(labels)} labels for a model with {width} outputs")
    return contract_of(metadata, labels=labels, input_size=input_size, name=path.stem)


class TFLiteRunner(Runner):
    def __init__(self, path: str | Path, *, num_threads: int | None = None):
        self.path = Path(path)
        self.name = f"tflite:{self.path.name}"
        Interpreter = load_interpreter_class()
        try:
            with native_output():  # LiteRT logs its XNNPACK delegate from C++
                self.interpreter = Interpreter(model_path=str(self.path), num_threads=num_threads)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelFileError(f"{self.path}: not a loadable TFLite model ({exc})") from None
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelFileError(
                f"{self.path}: expected one input and one output, "
                f"found {len(inputs)} and {len(outputs)}"
            )
        self.input, self.output = inputs[0], outputs[0]
        _, height, width, channels = self.input["shape"]
        if channels != 3:
            raise ModelFileError(f"{self.path}: input has {channels} channels, expected 3 (RGB)")
        self.input_size = (int(height), int(width))
        self.contract = _contract_for(self.path, int(self.output["shape"][-1]), self.input_size)
        self.labels = self.contract.labels

    @classmethod
    def open(cls, path, *, num_threads: int | None = None, allow_unsafe: bool = False):
        return cls(path, num_threads=num_threads)

    def _to_input(self, image: np.ndarray) -> np.ndarray:
        dtype = self.input["dtype"]
        if np.issubdtype(dtype, np.floating):
            return (image.astype(np.float32) / np.float32(255))[None].astype(dtype)
        scale, zero_point = self.input["quantization"]
        if dtype == np.uint8 and zero_point == 0 and abs(scale * 255 - 1) < 1e-6:
            return image[None]  # raw RGB bytes are already the quantized input
        quantized = np.round(image.astype(np.float32) / np.float32(255) / scale + zero_point)
        info = np.iinfo(dtype)
        return np.clip(quantized, info.min, info.max).astype(dtype)[None]

    def _from_output(self, raw: np.ndarray) -> np.ndarray:
        if np.issubdtype(raw.dtype, np.floating):
            return raw.astype(np.float32)
        scale, zero_point = self.output["quantization"]
        return ((raw.astype(np.float32) - zero_point) * scale).astype(np.float32)

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        pixels = self.check_pixels(pixels)
        results = np.zeros((len(pixels), len(self.labels)), np.float32)
        for index, image in enumerate(pixels):
            self.interpreter.set_tensor(self.input["index"], self._to_input(image))
            self.interpreter.invoke()
            raw = self.interpreter.get_tensor(self.output["index"])
            results[index] = self._from_output(raw)[0]
        return results
