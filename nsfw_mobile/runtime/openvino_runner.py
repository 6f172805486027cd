"""The ONNX files of a release on OpenVINO's CPU plugin: the same file, another engine.

The toolkit's reader (``onnx_file.check_model_file``) checks the file and the
contract is read from its ``metadata_props`` by the same reader as ONNX
Runtime's runner, before OpenVINO sees the file. The uint8 batch goes in as it
is (the toolkit's exports scale it inside); a float32 input gets pixels / 255.

The compiled model is configured, never left to OpenVINO's defaults:

- ``INFERENCE_PRECISION_HINT`` f32. OpenVINO's CPU plugin otherwise runs the
  float parts of a model in bfloat16 on CPUs with AVX-512 BF16 or AMX, which
  is another precision than the file's (and than what was validated); the
  int8 QDQ file keeps its int8 convolutions, with its float parts in f32.
- ``INFERENCE_NUM_THREADS`` ``num_threads`` (None: OpenVINO's default, one
  per core) and ``NUM_STREAMS`` 1: one inference at a time per compiled
  model; ``lanes`` gives single-threaded copies, one per core, for
  ``predict``, as the LiteRT and ONNX Runtime runners do.
- ``ENABLE_CPU_PINNING`` off: two single-threaded lanes must not be pinned to
  the same core.
- The input shape is fixed to one image (OpenVINO compiles a static shape
  faster than a dynamic one); a batch runs image by image.

Needs ``pip install 'nsfw-mobile[openvino]'``; imports neither TensorFlow, the
``onnx`` package nor ONNX Runtime. OpenVINO cannot read ``.ort`` files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ModelFileError
from ..onnx_file import check_model_file
from ..quiet import native_output
from .base import Runner
from .onnx_runner import _contract_for

PRECISION = "f32"
"""The inference precision asked of OpenVINO for every file (see the module doc)."""


def import_openvino():
    try:
        import openvino
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "this engine is OpenVINO, which is not installed: pip install 'nsfw-mobile[openvino]'",
            name="openvino",
        ) from exc
    return openvino


def compile_config(num_threads: int | None) -> dict:
    """The CPU plugin's settings for one runner (see the module doc)."""
    return {
        "INFERENCE_PRECISION_HINT": PRECISION,
        "INFERENCE_NUM_THREADS": int(num_threads or 0),
        "NUM_STREAMS": 1,
        "ENABLE_CPU_PINNING": False,
    }


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class OpenVINORunner(Runner):
    engine = "openvino"

    def __init__(self, path: str | Path, *, num_threads: int | None = None):
        self.path = Path(path)
        self.name = f"openvino:{self.path.name}"
        self.num_threads = num_threads
        self.summary = summary = check_model_file(self.path)
        if summary.format != "onnx":
            raise ModelFileError(
                f"{self.path}: OpenVINO reads .onnx files, not the ORT format: run it on "
                "onnxruntime"
            )
        self.input_size = summary.input_size
        self.contract = _contract_for(self.path, summary)
        self.labels = self.contract.labels
        self.raw_input = summary.image_input.dtype == "uint8"
        ov = import_openvino()
        try:
            with native_output():
                core = ov.Core()
                model = core.read_model(str(self.path))
                image = model.inputs[0]
                model.reshape({image.get_any_name(): [1, *self.input_size, 3]})
                self.compiled = core.compile_model(model, "CPU", compile_config(num_threads))
        except Exception as exc:  # OpenVINO raises RuntimeError with its own text
            raise ModelFileError(
                f"{self.path}: OpenVINO cannot load it ({_first_line(exc)})"
            ) from None
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.precision = hint.to_string() if hasattr(hint, "to_string") else str(hint)
        if self.precision != PRECISION:  # never another precision than the one validated
            raise ModelFileError(
                f"{self.path}: OpenVINO compiled it in {self.precision}, not {PRECISION}"
            )
        self.request = self.compiled.create_infer_request()

    @classmethod
    def open(cls, path, *, num_threads: int | None = None, allow_unsafe: bool = False):
        return cls(path, num_threads=num_threads)

    def lanes(self, count: int) -> list[OpenVINORunner]:
        return [OpenVINORunner(self.path, num_threads=1) for _ in range(count)]

    def _run(self, image: np.ndarray) -> np.ndarray:
        feed = image if self.raw_input else image.astype(np.float32) / np.float32(255)
        try:
            self.request.infer({0: feed})
        except Exception as exc:  # OpenVINO's RuntimeError on a graph that cannot run
            message = _first_line(exc)
            raise ModelFileError(f"{self.path}: the model cannot run ({message})") from None
        return np.array(self.request.get_output_tensor(0).data, np.float32)

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        pixels = self.check_pixels(pixels)
        if len(pixels) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        probabilities = np.concatenate([self._run(pixels[i : i + 1]) for i in range(len(pixels))])
        if probabilities.shape != (len(pixels), len(self.labels)):
            raise ModelFileError(
                f"{self.path}: the model answered shape {list(probabilities.shape)} for "
                f"{len(pixels)} images of {len(self.labels)} classes"
            )
        return probabilities

    def close(self) -> None:
        self.request = None
        self.compiled = None
