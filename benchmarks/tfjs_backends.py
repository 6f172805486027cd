"""TF.js under Node: the wasm backend against the pure-JavaScript cpu backend.

    python benchmarks/tfjs_backends.py [MODEL_DIR ...] [--runs 5] [--json FILE]

For each TF.js layers model folder (default: the shipped pretrained MobileNetV2,
nsfw_mobile/pretrained/mobilenet_v2), and each backend of the TF.js runner:
the time to start Node and load the model, the per-image latency at batch 1
(median of --runs runs on one shipped sample, after one warm-up), and the
probabilities on all shipped samples. Then how far wasm is from cpu (max and
mean absolute difference, top-1 agreement) and how much faster it is.
Node runs each backend on one thread.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from nsfw_mobile.images import load_images, sample_images
from nsfw_mobile.models import PRETRAINED_DIR
from nsfw_mobile.runtime.tfjs_runner import BACKENDS, TFJSRunner


def measure(folder: Path, backend: str, runs: int) -> dict:
    started = time.perf_counter()
    runner = TFJSRunner(folder, backend=backend)
    try:
        load_seconds = time.perf_counter() - started
        pixels = load_images(sample_images(), runner.input_size).pixels
        runner.predict(pixels[:1])  # warm-up
        latencies = []
        for _ in range(runs):
            t0 = time.perf_counter()
            runner.predict(pixels[:1])
            latencies.append((time.perf_counter() - t0) * 1e3)
        started = time.perf_counter()
        probabilities = runner.predict(pixels)
        batch_ms = (time.perf_counter() - started) * 1e3 / len(pixels)
        return {
            "backend": runner.backend,
            "simd": runner.simd,
            "input_size": list(runner.input_size),
            "load_seconds": round(load_seconds, 2),
            "median_ms": round(float(np.median(latencies)), 1),
            "batch_ms_per_image": round(batch_ms, 1),
            "probabilities": probabilities,
        }
    finally:
        runner.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", type=Path, default=[PRETRAINED_DIR])
    parser.add_argument("--runs", type=int, default=5, help="timed batch-1 runs per backend")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    results = []
    print(
        f"{'model':<16} {'backend':<8} {'load s':>6} {'ms/image (batch 1)':>18} "
        f"{'ms/image (batch 16)':>19}"
    )
    for folder in args.models:
        by_backend = {backend: measure(folder, backend, args.runs) for backend in BACKENDS}
        for backend, figures in by_backend.items():
            label = backend + (" simd" if figures["simd"] else "")
            print(
                f"{folder.name:<16} {label:<8} {figures['load_seconds']:6.2f} "
                f"{figures['median_ms']:18.1f} {figures['batch_ms_per_image']:19.1f}"
            )
        wasm, cpu = by_backend["wasm"], by_backend["cpu"]
        difference = np.abs(wasm["probabilities"] - cpu["probabilities"])
        agreement = float(
            (wasm["probabilities"].argmax(1) == cpu["probabilities"].argmax(1)).mean()
        )
        speedup = cpu["median_ms"] / wasm["median_ms"]
        print(
            f"{folder.name:<16} wasm vs cpu on {len(difference)} samples: "
            f"max {difference.max():.2e}, mean {difference.mean():.2e}, "
            f"top-1 {agreement:.0%}; wasm {speedup:.1f}x faster"
        )
        for figures in by_backend.values():
            figures.pop("probabilities")
        results.append(
            {
                "model": str(folder),
                "backends": by_backend,
                "wasm_vs_cpu_max_abs_diff": float(difference.max()),
                "wasm_vs_cpu_mean_abs_diff": float(difference.mean()),
                "top1_agreement": agreement,
                "speedup": round(speedup, 1),
            }
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
