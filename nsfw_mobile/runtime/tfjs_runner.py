"""TF.js runner: the model in real TensorFlow.js under Node.

One long-lived ``node`` process per model (``js/tfjs_server.cjs``) loads the
model with ``tf.loadLayersModel`` (a graph model: ``tf.loadGraphModel``) and
answers uint8 batches with probabilities; the pixels are divided by 255 in
JavaScript, as a web page does.

Two tfjs backends: ``wasm`` (the default: ``@tensorflow/tfjs-backend-wasm``,
XNNPACK kernels compiled to WebAssembly with SIMD, the backend browsers use on
CPUs; about 15-25x faster than ``cpu`` here) and ``cpu`` (tfjs's
pure-JavaScript kernels: slow, but the simplest implementation, kept as the
reference ``wasm`` is checked against; docs/tfjs-backends.md).
The model folder is checked by the toolkit's own reader first (shard paths,
sizes, weight names), so a broken folder gets the importer's message rather
than a JavaScript stack. The pinned npm packages come from ``node_packages``.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import weakref
from pathlib import Path

import numpy as np

from ..errors import ModelFileError, UsageError
from ..labels import default_labels
from ..metadata import ModelContract, contract_of
from ..node_packages import TFJS, node_executable, node_modules
from ..tfjs import artifact_metadata, model_json_of, read_model
from .base import Runner

SERVER = Path(__file__).parent / "js" / "tfjs_server.cjs"
BATCH = 16
"""Images per request: bounds the JavaScript heap a request needs."""
BACKENDS = ("wasm", "cpu")
DEFAULT_BACKEND = "wasm"


def _contract_for(model_json: Path, width: int, input_size) -> ModelContract:
    metadata = artifact_metadata(model_json)
    labels = metadata.labels or default_labels(width, model_json)
    if len(labels) != width:
        raise ModelFileError(f"{model_json}: {len(labels)} labels for a model with {width} outputs")
    return contract_of(metadata, labels=labels, input_size=input_size, name=model_json.parent.name)


def _stop(process: subprocess.Popen, log) -> None:
    if process.poll() is None:
        process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    process.stdout.close()
    log.close()


class TFJSRunner(Runner):
    """``backend``: "wasm" (default) or "cpu", the tfjs backend the model runs on."""

    def __init__(
        self, path: str | Path, *, backend: str = DEFAULT_BACKEND, modules: Path | None = None
    ):
        if backend not in BACKENDS:
            raise UsageError(f"TF.js backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        self.model_json = model_json_of(Path(path))
        self.path = self.model_json.parent
        self.name = f"tfjs:{self.path.name}"
        read_model(self.model_json)  # names a broken folder in our words
        modules = modules or node_modules(TFJS)
        self._log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed by the finalizer)
        self._process = subprocess.Popen(
            [node_executable(), str(SERVER), str(modules), str(self.model_json), backend],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        self._finalizer = weakref.finalize(self, _stop, self._process, self._log)
        hello = self._read_reply("loading the model")
        self.tfjs_version, self.backend = hello["tfjs"], hello["backend"]
        self.simd = bool(hello.get("simd"))
        shape, out_shape = hello["input_shape"], hello["output_shape"]
        if len(shape) != 4 or shape[3] != 3 or None in shape[1:] or len(out_shape) != 2:
            self.close()
            raise ModelFileError(
                f"{self.model_json}: input shape {shape} and output shape {out_shape}; expected "
                "images (N, height, width, 3) in and (N, classes) out"
            )
        self.input_size = (int(shape[1]), int(shape[2]))
        self.contract = _contract_for(self.model_json, int(out_shape[1]), self.input_size)
        self.labels = self.contract.labels

    @classmethod
    def open(
        cls,
        path,
        *,
        num_threads: int | None = None,
        allow_unsafe: bool = False,
        backend: str = DEFAULT_BACKEND,
        **_,
    ):
        """``num_threads`` does not apply: both backends run on one thread under Node
        (tfjs's threaded wasm build does not start in Node: tensorflow/tfjs#3830)."""
        return cls(path, backend=backend)

    def _read_reply(self, doing: str) -> dict:
        line = self._process.stdout.readline()
        try:
            reply = json.loads(line) if line else {}
        except ValueError:
            reply = {}
        if "error" in reply or not reply:
            self._log.seek(0)
            tail = " / ".join(self._log.read().strip().splitlines()[-3:])
            message = reply.get("error") or f"node exited with {self._process.poll()}: {tail}"
            self.close()
            raise ModelFileError(f"{self.model_json}: TensorFlow.js failed {doing}: {message}")
        return reply

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        pixels = self.check_pixels(pixels)
        if self._process.poll() is not None:
            raise ModelFileError(f"{self.model_json}: the TensorFlow.js process has ended")
        results = []
        for start in range(0, len(pixels), BATCH):
            chunk = np.ascontiguousarray(pixels[start : start + BATCH])
            header = np.array(chunk.shape, "<u4").tobytes()
            try:
                self._process.stdin.write(header + chunk.tobytes())
                self._process.stdin.flush()
            except BrokenPipeError:
                pass  # the process died: its reply (none) and log tell why
            results.append(np.array(self._read_reply("running")["probabilities"], np.float32))
        if not results:
            return np.zeros((0, len(self.labels)), np.float32)
        return np.concatenate(results).reshape(len(pixels), len(self.labels))

    def helper_peak_rss_mb(self) -> float:
        """The Node process's peak resident memory (``VmHWM``; 0 where /proc is missing)."""
        try:
            status = Path(f"/proc/{self._process.pid}/status").read_text()
        except OSError:
            return 0.0
        line = next((x for x in status.splitlines() if x.startswith("VmHWM:")), "VmHWM: 0 kB")
        return int(line.split()[1]) / 1024

    def close(self) -> None:
        self._finalizer()
