"""Ray Data against `nsfw-mobile predict` on the same photos, in the same run.

    python benchmarks/ray_throughput.py [--count 400] [--cpus 2] [--model models/nsfw_int8.tflite]
                                        [--actors N] [--batch-size 32] [--readers N]

Makes COUNT 1600x1200 JPEGs as benchmarks/predict_throughput.py does, then times:

- predict: predict.classify on CPUS lanes, as `nsfw-mobile predict` runs it;
- Ray: a local Ray of CPUS CPUs (`ray.init` timed apart), then distributed.run, as
  `nsfw-mobile predict --ray --out DIR` runs it: the whole run (actors start, open the
  model, classify, write Parquet, the driver counts the rows), once on SMALL photos and
  once on all COUNT.

Wall-clock rates are what a user waits, but on a machine others use too they say more
about the others than about Ray. So the CPU time of every process of a run (this one and
all it started: Ray's raylet, GCS, readers, actors; sampled from /proc every 0.1 s, Linux
only) is counted too. Ray's CPU per image is the long run's CPU minus the short run's,
over the extra photos: what each more image costs once a run's fixed costs are paid.
Against predict's CPU per image it gives the engine's overhead, and its inverse is what
one fully used core classifies per second: the figure to size a cluster with.

Everything is measured in the same run on the same files: compare figures within a run.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from predict_throughput import make_photos  # noqa: E402

from nsfw_mobile import (
    distributed,  # noqa: E402
    open_runner,  # noqa: E402
)
from nsfw_mobile.formats import PRETRAINED_TFLITE  # noqa: E402
from nsfw_mobile.predict import classify  # noqa: E402

SMALL = 40
"""Photos in the short Ray run whose time stands for the fixed costs."""


TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


NAMES: dict[int, str] = {}
"""Process names (``comm``, as Ray sets them: ``ray::MapWorker(``, ``raylet``...) by pid."""


def _descendants_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of every process started by this one, by pid."""
    parents, times = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name, rest = (entry / "stat").read_text().split(" (", 1)[1].rsplit(")", 1)
        except (OSError, ValueError):
            continue
        fields = rest.split()
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / TICK
        NAMES[int(entry.name)] = name
    ours, grew = {os.getpid()}, True
    while grew:
        found = {pid for pid, parent in parents.items() if parent in ours} - ours
        ours |= found
        grew = bool(found)
    return {pid: times[pid] for pid in ours - {os.getpid()}}


class CpuMeter:
    """CPU seconds used by this process and its descendants while it runs; a process that
    ends between two samples (0.1 s apart) loses at most that much."""

    def __enter__(self):
        self.first = _descendants_cpu()
        self.last = dict(self.first)
        self.own = time.process_time()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while not self.done.wait(0.1):
            self.last.update(_descendants_cpu())

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()
        self.last.update(_descendants_cpu())
        self.by_name = Counter({"driver": time.process_time() - self.own})
        for pid, seconds in self.last.items():
            self.by_name[NAMES.get(pid, "?")] += seconds - self.first.get(pid, 0.0)
        self.seconds = sum(self.by_name.values())


def time_ray_run(files, out: Path, model, labels, **options) -> tuple[float, CpuMeter]:
    """(wall seconds, CPU used) of distributed.run."""
    with CpuMeter() as cpu:
        started = time.perf_counter()
        summary = distributed.run(files, out, model=model, labels=labels, **options)
        seconds = time.perf_counter() - started
    assert summary.rows == len(files) and summary.errors == 0, summary
    return seconds, cpu


def measure(model, count: int, cpus: int, **options) -> dict:
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "photos").mkdir()
        files = make_photos(tmp / "photos", count)
        runner = open_runner(model or PRETRAINED_TFLITE, num_threads=cpus)
        labels = list(runner.labels)
        with CpuMeter() as cpu:
            started = time.perf_counter()
            results = list(classify(runner, files, workers=cpus))
            predict_rate = count / (time.perf_counter() - started)
        predict_cpu = cpu.seconds / count
        assert len(results) == count and all(r.error is None for r in results)

        started = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.ERROR,
                 log_to_driver=False)  # fmt: skip
        init_seconds = time.perf_counter() - started
        try:
            plans = []
            options["on_plan"] = plans.append
            small, small_cpu = time_ray_run(files[:SMALL], tmp / "small", model, labels, **options)
            whole, whole_cpu = time_ray_run(files, tmp / "whole", model, labels, **options)
        finally:
            ray.shutdown()
    ray_cpu = (whole_cpu.seconds - small_cpu.seconds) / (count - SMALL)
    extra = whole_cpu.by_name.copy()
    extra.subtract(small_cpu.by_name)
    breakdown = ", ".join(
        f"{name} {seconds / (count - SMALL) * 1e3:.1f}" for name, seconds in extra.most_common(6)
    )
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
        "predict_cpu_ms_per_image": predict_cpu * 1e3,
        "ray_cpu_ms_per_image": ray_cpu * 1e3,
        "ray_fixed_cpu_seconds": small_cpu.seconds - SMALL * ray_cpu,
        "ray_run_cpu_ms_per_image": whole_cpu.seconds / count * 1e3,
        "ray_cpu_ms_per_image_by_process": breakdown,
        "engine_cpu_overhead": ray_cpu / predict_cpu - 1,
        "load_average": os.getloadavg()[0],
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
    print(
        f"predict ({f['cpus']} lanes): {f['predict_images_per_second']:.1f} images/s, "
        f"{f['predict_cpu_ms_per_image']:.1f} ms CPU per image"
    )
    print(f["plan"])
    print(
        f"Ray: ray.init {f['ray_init_seconds']:.1f} s; {SMALL} photos in "
        f"{f['ray_small_run_seconds']:.1f} s, {f['images']} in {f['ray_run_seconds']:.1f} s "
        f"({f['ray_images_per_second']:.1f} images/s end to end); "
        f"{f['ray_run_cpu_ms_per_image']:.1f} ms CPU per image over the long run, "
        f"{f['ray_cpu_ms_per_image']:.1f} per further image and "
        f"{f['ray_fixed_cpu_seconds']:.1f} CPU s fixed per run"
    )
    print(
        f"engine CPU overhead per image: {f['engine_cpu_overhead']:+.0%}; one fully used core "
        f"classifies {1e3 / f['ray_cpu_ms_per_image']:.0f} images/s on Ray, "
        f"{1e3 / f['predict_cpu_ms_per_image']:.0f} with predict"
    )
    print(f"Ray's CPU ms per further image, by process: {f['ray_cpu_ms_per_image_by_process']}")
    print(f"load average (1 min) at the end: {f['load_average']:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
