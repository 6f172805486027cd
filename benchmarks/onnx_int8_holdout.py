"""int8 ONNX on images outside its calibration set: leave-one-out over the shipped samples.

    python benchmarks/onnx_int8_holdout.py [--held-out 7]

A release calibrates on the shipped sample images and validates on them too. Here each
held-out image is left out of the calibration set (the other 20 samples, the minimum, stay),
the pretrained model is quantized to int8 ONNX by the toolkit's converter, and the held-out
image is run in ONNX Runtime and compared with the Keras reference: same top-1 label or not,
and the largest probability difference. ``--held-out N`` takes every k-th sample so that N
are held out (each costs one quantization).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--held-out", type=int, default=7)
    arguments = parser.parse_args()
    from nsfw_mobile.export.onnx import keras2onnx
    from nsfw_mobile.images import load_images, sample_images
    from nsfw_mobile.models import load_source
    from nsfw_mobile.runtime.keras_runner import KerasRunner
    from nsfw_mobile.runtime.onnx_runner import OnnxRunner

    source = load_source(None)
    batch = load_images(sample_images(), source.input_size)
    reference = KerasRunner(source).predict(batch.pixels)
    step = max(1, len(batch.paths) // arguments.held_out)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for index in range(0, len(batch.paths), step)[: arguments.held_out]:
            calibration = np.delete(batch.pixels, index, axis=0)
            path = Path(work) / "nsfw_int8.onnx"
            keras2onnx(source, path, quantization="int8", calibration=calibration)
            with OnnxRunner(path, num_threads=1) as runner:
                ours = runner.predict(batch.pixels[index : index + 1])[0]
            rows.append(
                {
                    "image": batch.paths[index].name,
                    "same_top1": bool(ours.argmax() == reference[index].argmax()),
                    "max_abs_diff": round(float(np.abs(ours - reference[index]).max()), 4),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    print(
        json.dumps(
            {
                "held_out": len(rows),
                "top1_unchanged": sum(r["same_top1"] for r in rows),
                "max_abs_diff": max(r["max_abs_diff"] for r in rows),
                "mean_of_max_abs_diff": round(float(np.mean([r["max_abs_diff"] for r in rows])), 4),
            }
        )
    )


if __name__ == "__main__":
    main()
