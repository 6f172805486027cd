"""End-to-end `nsfw-mobile predict` throughput on a folder of large JPEG photos.

    python benchmarks/predict_throughput.py [--count 200] [--model PATH] [--workers N]

Makes COUNT 1600x1200 JPEGs (quality 90) from the shipped sample photos
(random crops, flips and colour shifts, upscaled), then times:

- decode only: images.iter_decoded over the folder (the same thread pool);
- end to end: predict.classify with the chosen model (default: the pretrained
  Keras model), as `nsfw-mobile predict` runs it;

and prints images per second and the share of single-threaded time spent
decoding. Figures depend on the machine; run it on the one you care about.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from nsfw_mobile.images import decode_image, find_images, iter_decoded, sample_images
from nsfw_mobile.predict import classify
from nsfw_mobile.runtime import open_runner


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--model", default=None, help="model file (default: pretrained Keras)")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_photos(folder, args.count)
        files = find_images([folder])
        runner = open_runner(args.model, num_threads=args.workers)
        runner.predict(np.zeros((1, *runner.input_size, 3), np.uint8))  # warm-up

        started = time.perf_counter()
        for path in files[:50]:
            decode_image(path, runner.input_size)
        decode_one = (time.perf_counter() - started) / min(50, len(files))

        started = time.perf_counter()
        for _ in iter_decoded(files, runner.input_size, workers=args.workers):
            pass
        decode_pool = time.perf_counter() - started

        started = time.perf_counter()
        pixels = np.stack([decode_image(p, runner.input_size) for p in files[:64]])
        runner.predict(pixels)  # inference alone, for the share below
        infer_one = (time.perf_counter() - started - decode_one * len(pixels)) / len(pixels)

        started = time.perf_counter()
        results = list(classify(runner, files, batch_size=args.batch_size, workers=args.workers))
        total = time.perf_counter() - started
        assert len(results) == len(files) and all(r.error is None for r in results)

    print(f"model: {runner.name}; {len(files)} JPEGs of 1600x1200")
    print(f"decode one image (draft mode + resize): {decode_one * 1e3:.1f} ms")
    print(f"inference one image (batched): {infer_one * 1e3:.1f} ms")
    print(f"decode share of single-threaded time: {decode_one / (decode_one + infer_one):.0%}")
    print(f"decode only, thread pool: {len(files) / decode_pool:.0f} images/s")
    print(f"end to end (nsfw-mobile predict): {len(files) / total:.0f} images/s")


if __name__ == "__main__":
    main()
