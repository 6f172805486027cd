"""ONNX and ORT format models on ONNX Runtime's CPU execution provider.

The toolkit's reader (``onnx_file.check_model_file``) checks the file before
ONNX Runtime sees it. A uint8 input takes the uint8 batch as it is (the
toolkit's exports scale it inside); a float32 input gets pixels / 255, as every
float model of the toolkit. Threads as LiteRT's: ``num_threads`` sets
ONNX Runtime's intra-op pool (None: its default, one per core), inter-op 1;
``lanes`` gives single-threaded copies, one per core, for ``predict``.
Imports neither TensorFlow nor the ``onnx`` package: ``pip install
nsfw-mobile[onnx]`` is all it needs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ModelFileError
from ..labels import default_labels
from ..metadata import ModelContract, contract_of
from ..onnx_file import OnnxSummary, artifact_metadata, check_model_file, read_model_file
from ..quiet import native_output
from .base import Runner

PROVIDERS = ["CPUExecutionProvider"]


def import_onnxruntime():
    try:
        import onnxruntime
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "ONNX models run in ONNX Runtime, which is not installed: "
            "pip install 'nsfw-mobile[onnx]'",
            name="onnxruntime",
        ) from exc
    return onnxruntime


def _contract_for(path: Path, summary: OnnxSummary) -> ModelContract:
    """The contract in metadata_props; labels.txt or the output width otherwise."""
    metadata = artifact_metadata(path, summary)
    labels = metadata.labels or default_labels(summary.classes, path)
    if len(labels) != summary.classes:
        raise ModelFileError(
            f"{path}: {len(labels)} labels for a model with {summary.classes} outputs"
        )
    return contract_of(metadata, labels=labels, input_size=summary.input_size, name=path.stem)


def carries_contract(summary: OnnxSummary) -> bool:
    """Whether the toolkit wrote the file: its ``metadata_props`` hold the model contract, so
    its input is the toolkit's (RGB pixels; uint8 as they are, float32 / 255)."""
    return "toolkit" in summary.metadata


def foreign_message(path: Path) -> str:
    return (
        f"{path}: carries no nsfw-mobile contract in its metadata, so what it expects (BGR or "
        "RGB, mean, std, scale) is unknown and it is not run on a guess: the commands import it "
        "as a source model (`nsfw-mobile predict IMAGES --model FILE`, `convert FILE`), with "
        "the preprocessing of a preprocessor_config.json beside it or of --preprocess"
    )


class OnnxRunner(Runner):
    def __init__(self, path: str | Path, *, num_threads: int | None = None):
        self.path = Path(path)
        self.name = f"onnxruntime:{self.path.name}"
        self.num_threads = num_threads
        self.summary = summary = check_model_file(self.path)
        if not carries_contract(summary):
            raise ModelFileError(foreign_message(self.path))
        self.input_size = summary.input_size
        self.contract = _contract_for(self.path, summary)
        self.labels = self.contract.labels
        self.raw_input = summary.image_input.dtype == "uint8"
        self.fixed_batch = summary.image_input.shape[0] == 1
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads or 0
        options.inter_op_num_threads = 1
        try:
            with native_output():  # ONNX Runtime warns from C++ about unused initializers
                self.session = ort.InferenceSession(str(self.path), options, providers=PROVIDERS)
        except Exception as exc:  # ORT's own exception types (Fail, InvalidGraph, ...)
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelFileError(f"{self.path}: ONNX Runtime cannot load it ({message})") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    @classmethod
    def open(
        cls, path, *, num_threads: int | None = None, allow_unsafe: bool = False,
        preprocessing=None,
    ):  # fmt: skip
        """A runner of the file; a foreign ``.onnx`` (no toolkit contract) is imported as a
        source model and run in Keras with its declared preprocessing built in
        (``preprocessing``: ``--preprocess`` items, see ``models.onnx_source``)."""
        path = Path(path)
        if path.suffix.lower() == ".onnx" and (
            preprocessing or not carries_contract(read_model_file(path))
        ):
            from ..models import onnx_source
            from .keras_runner import KerasRunner

            return KerasRunner(onnx_source(path, preprocessing=preprocessing))
        return cls(path, num_threads=num_threads)

    def lanes(self, count: int) -> list[OnnxRunner]:
        return [OnnxRunner(self.path, num_threads=1) for _ in range(count)]

    def _run(self, pixels: np.ndarray) -> np.ndarray:
        feed = pixels if self.raw_input else pixels.astype(np.float32) / np.float32(255)
        try:
            (probabilities,) = self.session.run([self.output_name], {self.input_name: feed})
        except Exception as exc:  # ORT's own exception types on a graph that cannot run
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelFileError(f"{self.path}: the model cannot run ({message})") from None
        probabilities = np.asarray(probabilities, np.float32)
        if probabilities.shape != (len(pixels), len(self.labels)):
            raise ModelFileError(
                f"{self.path}: the model answered shape {list(probabilities.shape)} for "
                f"{len(pixels)} images of {len(self.labels)} classes"
            )
        return probabilities

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        pixels = self.check_pixels(pixels)
        if len(pixels) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        if self.fixed_batch:
            return np.concatenate([self._run(pixels[i : i + 1]) for i in range(len(pixels))])
        return self._run(pixels)

    def close(self) -> None:
        self.session = None
