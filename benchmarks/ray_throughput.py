"""Ray Data against `nsfw-mobile predict` on the same photos, in the same run.

    python benchmarks/ray_throughput.py [--count 400] [--cpus 2] [--model models/nsfw_int8.tflite]
                                        [--actors N] [--batch-size 32]

Makes COUNT 1600x1200 JPEGs as benchmarks/predict_throughput.py does, then times:

- predict: predict.classify on CPUS lanes, as `nsfw-mobile predict` runs it;
- Ray: a local Ray of CPUS CPUs (`ray.init` timed apart), then distributed.run, as
  `nsfw-mobile predict --ray --out DIR` runs it: the whole run (actors start, open the
  model, classify, write Parquet, the driver counts the rows) on a small set and on all
  COUNT photos. The difference between the two runs, divided into the extra photos,
  is the steady rate a long run reaches once the fixed costs are paid;
- the engine's overhead: 1 - Ray's steady rate / predict's rate.

Everything is measured in the same run on the same files: compare figures within a run.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from predict_throughput import make_photos  # noqa: E402

from nsfw_mobile import distributed  # noqa: E402
from nsfw_mobile.formats import PRETRAINED_TFLITE  # noqa: E402
from nsfw_mobile.predict import classify  # noqa: E402
from nsfw_mobile.runtime import open_runner  # noqa: E402

SMALL = 40
"""Photos in the short Ray run whose time stands for the fixed costs."""


def time_ray_run(files, out: Path, model, labels, **options) -> float:
    started = time.perf_counter()
    summary = distributed.run(files, out, model=model, labels=labels, **options)
    seconds = time.perf_counter() - started
    assert summary.rows == len(files) and summary.errors == 0, summary
    return seconds


def measure(model, count: int, cpus: int, **options) -> dict:
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "photos").mkdir()
        files = make_photos(tmp / "photos", count)
        runner = open_runner(model or PRETRAINED_TFLITE, num_threads=cpus)
        labels = list(runner.labels)
        started = time.perf_counter()
        results = list(classify(runner, files, workers=cpus))
        predict_rate = count / (time.perf_counter() - started)
        assert len(results) == count and all(r.error is None for r in results)

        started = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.ERROR,
                 log_to_driver=False)  # fmt: skip
        init_seconds = time.perf_counter() - started
        try:
            plans = []
            options["on_plan"] = plans.append
            small = time_ray_run(files[:SMALL], tmp / "small", model, labels, **options)
            whole = time_ray_run(files, tmp / "whole", model, labels, **options)
        finally:
            ray.shutdown()
    steady = (count - SMALL) / (whole - small)
    return {
        "model": runner.name,
        "images": count,
        "cpus": cpus,
        "plan": plans[-1].describe(),
        "predict_images_per_second": predict_rate,
        "ray_init_seconds": init_seconds,
        "ray_small_run_seconds": small,
        "ray_run_seconds": whole,
        "ray_images_per_second": count / whole,
        "ray_steady_images_per_second": steady,
        "ray_steady_per_cpu": steady / cpus,
        "engine_overhead": 1 - steady / predict_rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray and lanes")
    parser.add_argument("--model", default=None, help="default: the shipped float32 TFLite")
    parser.add_argument("--actors", type=int, default=None, help="default: one per CPU")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--readers", type=int, default=None, help="read tasks at a time")
    args = parser.parse_args()
    if args.count <= SMALL:
        parser.error(f"--count: more than {SMALL}")
    f = measure(args.model, args.count, args.cpus, actors=args.actors,
                batch_size=args.batch_size, readers=args.readers)  # fmt: skip
    print(f"model: {f['model']}; {f['images']} JPEGs of 1600x1200; {f['cpus']} CPUs")
    print(f"predict ({f['cpus']} lanes): {f['predict_images_per_second']:.1f} images/s")
    print(f"ray.init (local, {f['cpus']} CPUs): {f['ray_init_seconds']:.1f} s")
    print(f["plan"])
    print(
        f"Ray: {SMALL} photos in {f['ray_small_run_seconds']:.1f} s, {f['images']} in "
        f"{f['ray_run_seconds']:.1f} s ({f['ray_images_per_second']:.1f} images/s end to end)"
    )
    print(
        f"Ray steady rate: {f['ray_steady_images_per_second']:.1f} images/s, "
        f"{f['ray_steady_per_cpu']:.1f} per CPU; engine overhead against predict: "
        f"{f['engine_overhead']:.0%}"
    )


if __name__ == "__main__":
    main()
