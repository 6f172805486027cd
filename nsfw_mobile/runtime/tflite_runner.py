"""TFLite runner on LiteRT (``ai_edge_litert``), without importing TensorFlow.

Falls back to ``tflite_runtime`` and then to ``tf.lite`` when LiteRT is not
installed. Float inputs get x / 255; integer inputs and outputs are mapped by
the tensors' own quantization parameters.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from ..errors import ModelFileError
from ..files import MAX_DECLARED_ELEMENTS
from ..labels import default_labels
from ..metadata import ModelContract, contract_of
from ..quiet import native_output
from ..tflite_metadata import (
    artifact_metadata,
    declared_tensor_elements,
    input_shapes,
    structure_problem,
)
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
    metadata = artifact_metadata(path)
    labels = metadata.labels or default_labels(width, path)
    if len(labels) != width:
        raise ModelFileError(f"{path}: {len(labels)} labels for a model with {width} outputs")
    return contract_of(metadata, labels=labels, input_size=input_size, name=path.stem)


def _refuse_unsafe_models(path: Path) -> None:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        declared, problem = declared_tensor_elements(data), structure_problem(data)
        shapes = input_shapes(data)
    except (IndexError, ValueError, TypeError, AttributeError, struct.error):
        # not a flatbuffer that can be walked: LiteRT is not trusted with it either
        raise ModelFileError(
            f"{path}: not a loadable TFLite model (its flatbuffer does not parse)"
        ) from None
    if problem is not None:
        raise ModelFileError(f"{path}: malformed TFLite graph: {problem}")
    if len(shapes) != 1 or len(shapes[0]) != 4 or shapes[0][0] != 1:
        # checked before LiteRT allocates: a batch of 513 8x8 images made it take 2.4 GB
        raise ModelFileError(
            f"{path}: input shapes {shapes}; expected one image (1, height, width, 3)"
        )
    if declared > MAX_DECLARED_ELEMENTS:
        raise ModelFileError(
            f"{path}: its tensors declare {declared:,} elements, over the limit of "
            f"{MAX_DECLARED_ELEMENTS:,}: refused before LiteRT allocates them"
        )


class TFLiteRunner(Runner):
    def __init__(self, path: str | Path, *, num_threads: int | None = None):
        self.path = Path(path)
        self.name = f"tflite:{self.path.name}"
        _refuse_unsafe_models(self.path)
        Interpreter = load_interpreter_class()
        try:
            with native_output():  # LiteRT logs its XNNPACK delegate from C++
                self.interpreter = Interpreter(model_path=str(self.path), num_threads=num_threads)
                self.interpreter.allocate_tensors()
            # the details decode tensor names: UnicodeDecodeError (a ValueError) on bad bytes
            inputs = self.interpreter.get_input_details()
            outputs = self.interpreter.get_output_details()
        except (ValueError, RuntimeError) as exc:
            raise ModelFileError(f"{self.path}: not a loadable TFLite model ({exc})") from None
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelFileError(
                f"{self.path}: expected one input and one output, "
                f"found {len(inputs)} and {len(outputs)}"
            )
        self.input, self.output = inputs[0], outputs[0]
        shape, out_shape = tuple(self.input["shape"]), tuple(self.output["shape"])
        if len(shape) != 4 or shape[0] != 1 or len(out_shape) != 2 or out_shape[0] != 1:
            raise ModelFileError(
                f"{self.path}: input shape {list(shape)} and output shape {list(out_shape)}; "
                "expected one image (1, height, width, 3) in and (1, classes) out"
            )
        _, height, width, channels = shape
        if channels != 3:
            raise ModelFileError(f"{self.path}: input has {channels} channels, expected 3 (RGB)")
        self.input_size = (int(height), int(width))
        self.contract = _contract_for(self.path, int(self.output["shape"][-1]), self.input_size)
        self.labels = self.contract.labels

    @classmethod
    def open(cls, path, *, num_threads: int | None = None, allow_unsafe: bool = False):
        return cls(path, num_threads=num_threads)

    def lanes(self, count: int) -> list[TFLiteRunner]:
        return [TFLiteRunner(self.path, num_threads=1) for _ in range(count)]

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
            try:
                self.interpreter.set_tensor(self.input["index"], self._to_input(image))
                self.interpreter.invoke()
                raw = self.interpreter.get_tensor(self.output["index"])
            except (ValueError, RuntimeError) as exc:  # LiteRT's errors on a broken graph
                raise ModelFileError(f"{self.path}: the model cannot run ({exc})") from None
            results[index] = self._from_output(raw)[0]
        return results
