"""End-to-end `nsfw-mobile predict` throughput on a folder of large JPEG photos.

    python benchmarks/predict_throughput.py [--count 200] [--model models/nsfw_int8.tflite]

Makes COUNT 1600x1200 JPEGs (quality 90) from the shipped sample photos
(random crops, flips and colour shifts, upscaled), then times:

- decode alone and inference alone, each on one core, per image;
- the limit they imply: WORKERS / (decode + inference) images/s, what the cores
  could do if each spent exactly those times on every image;
- end to end: predict.classify with the chosen model, as `nsfw-mobile predict`
  runs it, and its share of the limit.

Everything is measured in the same run: compare figures within a run only.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from nsfw_mobile import open_runner
from nsfw_mobile.images import decode_image, sample_images
from nsfw_mobile.parallel import default_workers
from nsfw_mobile.predict import classify


def make_photos(folder: Path, count: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    sources = [Image.open(p).convert("RGB") for p in sample_images()]
    paths = []
    for index in range(count):
        image = sources[index % len(sources)]
        width, height = image.size
        left, top = rng.integers(0, width // 4 + 1), rng.integers(0, height // 4 + 1)
        crop = image.crop((left, top, left + 3 * width // 4, top + 3 * height // 4))
        if rng.random() < 0.5:
            crop = ImageOps.mirror(crop)
        shifted = np.clip(np.asarray(crop, np.int16) + rng.integers(-20, 21, 3), 0, 255)
        photo = Image.fromarray(shifted.astype(np.uint8)).resize((1600, 1200), Image.BICUBIC)
        path = folder / f"photo_{index:04d}.jpg"
        photo.save(path, quality=90)
        paths.append(path)
    return paths


def measure(model: str | None, count: int = 200, workers: int | None = None) -> dict:
    """Single-core decode and inference times, the two-lane limit they imply, and the
    end-to-end rate of predict.classify, all measured in this one run."""
    workers = workers or default_workers()
    with tempfile.TemporaryDirectory() as tmp:
        files = make_photos(Path(tmp), count)
        one_core = open_runner(model, num_threads=1)
        size = one_core.input_size
        one_core.predict(np.zeros((1, *size, 3), np.uint8))  # warm-up

        started = time.perf_counter()
        decoded = [decode_image(path, size) for path in files]
        decode_one = (time.perf_counter() - started) / count
        started = time.perf_counter()
        for pixels in decoded:
            one_core.predict(pixels[None])
        infer_one = (time.perf_counter() - started) / count
        del decoded

        runner = open_runner(model, num_threads=workers)
        runner.predict(np.zeros((1, *size, 3), np.uint8))
        started = time.perf_counter()
        results = list(classify(runner, files, workers=workers))
        rate = count / (time.perf_counter() - started)
        assert len(results) == count and all(r.error is None for r in results)
    limit = workers / (decode_one + infer_one)
    return {
        "model": runner.name,
        "images": count,
        "workers": workers,
        "decode_ms_one_core": decode_one * 1e3,
        "inference_ms_one_core": infer_one * 1e3,
        "limit_images_per_second": limit,
        "pipeline_images_per_second": rate,
        "share_of_limit": rate / limit,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--model", default=None, help="model file (default: pretrained Keras)")
    parser.add_argument("--workers", type=int, default=None, help="default: one per core")
    args = parser.parse_args()
    figures = measure(args.model, args.count, args.workers)
    print(f"model: {figures['model']}; {args.count} JPEGs of 1600x1200")
    print(
        f"decode one image, one core (draft mode + resize): {figures['decode_ms_one_core']:.2f} ms"
    )
    print(f"inference one image, one core: {figures['inference_ms_one_core']:.2f} ms")
    print(
        f"limit: {figures['workers']} cores / (decode + inference) = "
        f"{figures['limit_images_per_second']:.0f} images/s"
    )
    print(
        f"end to end (nsfw-mobile predict): {figures['pipeline_images_per_second']:.0f} images/s, "
        f"{figures['share_of_limit']:.0%} of the limit"
    )


if __name__ == "__main__":
    main()
