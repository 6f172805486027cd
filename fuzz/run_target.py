"""libFuzzer entry point for one target: python fuzz/run_target.py TARGET [libFuzzer args].

benchmarks/fuzz.py starts this with the corpus folders and limits; run it directly
to reproduce a finding: python fuzz/run_target.py tflite path/to/crash-file
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Coverage feedback for the toolkit's own modules: they are imported here, inside the
# instrumentation, before the heavy libraries the targets import lazily.
with atheris.instrument_imports(include=["nsfw_mobile", "targets", "PIL"]):
    import targets
    from PIL import (  # noqa: F401  Pillow's Python-level parsers
        BmpImagePlugin,
        GifImagePlugin,
        Image,
        JpegImagePlugin,
        PngImagePlugin,
        TiffImagePlugin,
        WebPImagePlugin,
    )  # fmt: skip

    from nsfw_mobile import (  # noqa: F401
        images,
        inspect_model,
        metadata,
        onnx_file,
        release,
        tfjs,
        tfjs_graph,
        tflite_metadata,
        video,
    )
    from nsfw_mobile.runtime import (  # noqa: F401
        coreml_mil,
        coreml_nn,
        coreml_runner,
        coreml_spec,
        numpy_ops,
        onnx_runner,
        tflite_runner,
    )


KERAS_TARGETS = ("tfjs", "tfjs_graph")
"""Targets that build Keras models: Keras is imported before the first input, so that its
import (over 10 s on a busy machine) is not timed as that input's run."""


def warm_up(name: str) -> None:
    """Run the target once per mode on a one-byte input before fuzzing, so that the
    libraries it imports lazily (coremltools' protobufs, ONNX Runtime, PyAV...) are loaded
    outside libFuzzer's per-input time limit: a slow import is not a hang."""
    for mode in range(4):
        with contextlib.suppress(Exception):  # the fuzzer itself finds and reports these
            targets.run_one(name, bytes([mode]))


def main() -> None:
    name = sys.argv[1]
    if name not in targets.TARGETS:
        raise SystemExit(f"unknown target {name!r}; targets: {', '.join(targets.TARGETS)}")
    if name in KERAS_TARGETS:
        from nsfw_mobile._tf import import_keras

        import_keras()
    warm_up(name)
    atheris.Setup([sys.argv[0], *sys.argv[2:]], lambda data: targets.run_one(name, data))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
