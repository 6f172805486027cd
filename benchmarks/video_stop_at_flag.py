"""Early exit for upload gates: `predict VIDEO --stop-at-flag` against a full run.

    python benchmarks/video_stop_at_flag.py [--minutes 10] [--at 60] [--json out.json]

Generates (never downloads) a clip of `--minutes` minutes, 320x240 at 15 fps, MPEG-4 at
a real bit rate (1 Mbit/s: at the encoder's default a still picture washes out), made
of the shipped neutral sample photos, a new one every 5 s, with a 10 s stretch of
microaneurysms.tif (which the default model scores Porn 0.90) from `--at` seconds. Then
runs the command line on it, one run after the other in fresh processes, each timed
from start to exit:

- `nsfw-mobile predict CLIP --json` (reads the whole clip), and
- `nsfw-mobile predict CLIP --json --stop-at-flag` (stops where the live rule flags it).

Prints both times, the time saved, where the gate stopped against the rule's latency,
and how much of the file it read.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WIDTH, HEIGHT, FPS, BIT_RATE, STRETCH_S = 320, 240, 15, 1_000_000, 10
NEUTRAL = ("astronaut.jpg", "coffee.jpg", "rocket.jpg", "chelsea.webp", "brick.jpg")


def make_clip(path: Path, seconds: int, at: float) -> Path:
    import av

    from nsfw_mobile.images import SAMPLES_DIR, decode_image

    size = (HEIGHT, WIDTH)
    neutral = [decode_image(SAMPLES_DIR / name, size) for name in NEUTRAL]
    planted = decode_image(SAMPLES_DIR / "microaneurysms.tif", size)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.bit_rate = BIT_RATE
        stream.codec_context.gop_size = FPS * 2
        for index in range(seconds * FPS):
            t = index / FPS
            pixels = planted if at <= t < at + STRETCH_S else neutral[int(t // 5) % len(neutral)]
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def timed_predict(clip: Path, *extra: str) -> tuple[float, int, dict]:
    command = [sys.executable, "-m", "nsfw_mobile.cli", "predict", str(clip), "--json", *extra]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 5):
        raise RuntimeError(done.stderr[-2000:])
    return seconds, done.returncode, json.loads(done.stdout.splitlines()[-1])


def run(minutes: int, at: float) -> dict:
    from nsfw_mobile.live_rule import LiveRuleParams

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        clip = make_clip(Path(tmp) / "upload.mp4", minutes * 60, at)
        generated = time.perf_counter() - started
        full_s, full_code, full = timed_predict(clip)
        gate_s, gate_code, gate = timed_predict(clip, "--stop-at-flag")
        size = clip.stat().st_size
    stretch = [e for e in full["timeline"] if at * 1000 <= e["t_ms"] < (at + STRETCH_S) * 1000]
    latency = LiveRuleParams().latency_s(min(e["nsfw_score"] for e in stretch))
    return {
        "clip": f"{minutes} min, {WIDTH}x{HEIGHT} {FPS} fps MPEG-4 at {BIT_RATE // 1000} kbit/s, "
        f"{size / 2**20:.1f} MB, planted stretch {at:g}-{at + STRETCH_S:g} s",
        "generate_seconds": round(generated, 1),
        "full": {"seconds": round(full_s, 2), "exit_code": full_code,
                 "samples": len(full["timeline"]), "segments": full["segments"]},
        "stop_at_flag": {"seconds": round(gate_s, 2), "exit_code": gate_code,
                         "samples": len(gate["timeline"]), "stopped": gate["stopped"]},
        "saved_seconds": round(full_s - gate_s, 2),
        "speed_up": round(full_s / gate_s, 1),
        "rule_latency_s": round(latency, 3),
        "stopped_after_stretch_start_s": round(gate["stopped"]["at_ms"] / 1000 - at, 3),
    }  # fmt: skip


def report(figures: dict) -> str:
    full, gate = figures["full"], figures["stop_at_flag"]
    stopped = gate["stopped"]
    read_mb, file_mb = stopped["read_bytes"] / 2**20, stopped["file_bytes"] / 2**20
    return "\n".join([
        f"Clip: {figures['clip']} (made in {figures['generate_seconds']} s).",
        f"- full run: {full['seconds']:.1f} s, {full['samples']} samples, exit {full['exit_code']}",
        f"- --stop-at-flag: {gate['seconds']:.1f} s, {gate['samples']} samples, exit "
        f"{gate['exit_code']}, stopped at {stopped['at_ms'] / 1000:.1f} s "
        f"({figures['stopped_after_stretch_start_s']:.1f} s after the stretch began; rule latency "
        f"{figures['rule_latency_s']:.2f} s + one 1 s sample), read {stopped['read_fraction']:.1%} "
        f"of the duration, {read_mb:.1f} of {file_mb:.1f} MB",
        f"- saved {figures['saved_seconds']:.1f} s ({figures['speed_up']}x faster)",
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--at", type=float, default=60.0)
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    args = parser.parse_args()
    figures = run(args.minutes, args.at)
    print(report(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
