"""Video throughput: seconds and times-realtime for `--every 1` and `--keyframes`.

    python benchmarks/video_throughput.py [--minutes 10] [--model models/nsfw_int8.tflite]

Generates (never downloads) a 1280x720, 30 fps MPEG-4 clip with a keyframe every
2 s, made of slowly panning crops of the shipped sample photos, plus a 1-minute
clip of the same kind. Each measurement runs in a fresh process, so its peak
resident memory (VmHWM) is its own. Prints, per sampling mode: wall seconds,
times realtime, the decode and inference shares of the time, peak memory; and
the peak memory of the 1-minute clip beside the long one (it must not grow with
clip length).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

WIDTH, HEIGHT, FPS, KEYFRAME_S = 1280, 720, 30, 2


def make_clip(path: Path, seconds: int) -> Path:
    import av
    from PIL import Image

    from nsfw_mobile.images import sample_images

    pictures = [
        np.asarray(Image.open(p).convert("RGB").resize((WIDTH + 240, HEIGHT), Image.BILINEAR))
        for p in sample_images()
    ]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.bit_rate = 4_000_000
        stream.codec_context.gop_size = FPS * KEYFRAME_S
        stream.thread_type = "AUTO"
        for index in range(seconds * FPS):
            scene, step = divmod(index, 5 * FPS)  # a new picture every 5 s, panning
            picture = pictures[scene % len(pictures)]
            crop = np.ascontiguousarray(picture[:, step * 240 // (5 * FPS) :][:, :WIDTH])
            for packet in stream.encode(av.VideoFrame.from_ndarray(crop, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(clip: str, model: str, keyframes: bool) -> None:
    from nsfw_mobile import open_runner
    from nsfw_mobile.video import classify_video

    runner = open_runner(model)
    predict, inference = runner.predict, [0.0]

    def timed(pixels):
        started = time.perf_counter()
        try:
            return predict(pixels)
        finally:
            inference[0] += time.perf_counter() - started

    runner.predict = timed
    started = time.perf_counter()
    result = classify_video(runner, clip, keyframes=keyframes)
    seconds = time.perf_counter() - started
    print("RESULT " + json.dumps({
        "seconds": seconds,
        "inference_seconds": inference[0],
        "samples": len(result.timeline),
        "duration_s": result.verdict["duration_ms"] / 1000,
        "peak_rss_mb": peak_rss_mb(),
    }), flush=True)  # fmt: skip


def measure(clip: Path, model: str, keyframes: bool) -> dict:
    command = [sys.executable, __file__, "--child", str(clip), "--model", model]
    output = subprocess.run(
        command + (["--keyframes"] if keyframes else []), capture_output=True, text=True
    )
    for line in output.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(output.stderr[-2000:])


def run(minutes: int, model: str) -> dict:
    """Every figure of the benchmark, as data (benchmarks/run_all.py renders it too)."""
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        long_clip = make_clip(Path(tmp) / "long.mp4", minutes * 60)
        short_clip = make_clip(Path(tmp) / "short.mp4", 60)
        generated = time.perf_counter() - started
        figures = {
            "every_1": measure(long_clip, model, False),
            "keyframes": measure(long_clip, model, True),
            "every_1_one_minute": measure(short_clip, model, False),
        }
    for row in figures.values():
        row["times_realtime"] = row["duration_s"] / row["seconds"]
        row["inference_share"] = row["inference_seconds"] / row["seconds"]
    clip = f"{WIDTH}x{HEIGHT} {FPS} fps MPEG-4, keyframe every {KEYFRAME_S} s"
    return {"minutes": minutes, "model": Path(model).name, "clip": clip,
            "generate_seconds": generated, **figures}  # fmt: skip


def report(figures: dict) -> list[str]:
    lines = [
        f"{figures['minutes']}-minute and 1-minute clips, {figures['clip']}; model "
        f"{figures['model']}; each run in its own process.",
        "",
        "| mode | seconds | times realtime (target) | samples | decode / inference | peak MB |",
        "|---|---|---|---|---|---|",
    ]
    for key, name, target in (("every_1", "--every 1", 20), ("keyframes", "--keyframes", 150)):
        row = figures[key]
        lines.append(
            f"| `{name}` | {row['seconds']:.1f} | **{row['times_realtime']:.1f}x** ({target}x) | "
            f"{row['samples']} | {1 - row['inference_share']:.0%} / {row['inference_share']:.0%} "
            f"| {row['peak_rss_mb']:.0f} |"
        )
    lines += [
        "",
        f"Peak memory with `--every 1`: {figures['every_1_one_minute']['peak_rss_mb']:.0f} MB for "
        f"the 1-minute clip, {figures['every_1']['peak_rss_mb']:.0f} MB for the "
        f"{figures['minutes']}-minute clip.",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--model", default=str(HERE.parent / "models" / "nsfw_int8.tflite"))
    parser.add_argument("--child")
    parser.add_argument("--keyframes", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.model, args.keyframes)
        return
    print("\n".join(report(run(args.minutes, args.model))))


if __name__ == "__main__":
    main()
