"""`nsfw-mobile serve` under load, against `predict` on the same photos, in one run.

    python benchmarks/serve_load.py [--model FILE] [--photos 48] [--soak-s 600]

Everything stays on 127.0.0.1 and stops by itself (every phase is bounded in requests
and seconds). One run measures, on the same 1600x1200 photo-like JPEGs (made as
benchmarks/predict_throughput.py makes them):

1. one image's decode + inference on one core (the yardstick for p99 at concurrency 1);
2. `predict`'s rate: predict.classify over the folder, as `nsfw-mobile predict` runs it,
   in a child process: images per CPU-second of that process (and per wall second);
3. the server (a child process, `nsfw-mobile serve`) under concurrency 1, 4, 16 and 64
   from a separate load process (keep-alive connections, one raw JPEG body per
   POST /v1/classify):
   requests/s, p50/p95/p99, errors, and images per CPU-second of the server process
   (from /proc), since the load process shares the cores;
4. a soak at half the peak rate (RSS of the server at its start and end, errors);
5. 4x the peak rate for a while (share of 503s, p99 of those accepted) and recovery.

The figures are printed and written as JSON (--out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# ------------------------------------------------------------------ predict's side


def _predict_child(model: str, files: list[str], workers: int, out) -> None:
    from nsfw_mobile import open_runner
    from nsfw_mobile.predict import classify

    with open_runner(model) as runner:
        list(classify(runner, files[:4], workers=workers))  # warm-up
        cpu, wall = time.process_time(), time.perf_counter()
        results = list(classify(runner, files, workers=workers))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    out.put({"images": len(results), "errors": sum(r.error is not None for r in results),
             "cpu_s": cpu, "wall_s": wall})  # fmt: skip


def predict_rate(model: str, files: list[str], workers: int) -> dict:
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    child = context.Process(target=_predict_child, args=(model, files, workers, out))
    child.start()
    figures = out.get(timeout=900)
    child.join(60)
    figures["images_per_cpu_s"] = figures["images"] / figures["cpu_s"]
    figures["images_per_s"] = figures["images"] / figures["wall_s"]
    return figures


def one_image_ms(model: str, files: list[str]) -> float:
    """Decode + inference of one image on one core, median over the photos."""
    from nsfw_mobile import open_runner
    from nsfw_mobile.images import decode_image

    with open_runner(model, num_threads=1) as runner:
        runner.predict(np.zeros((1, *runner.input_size, 3), np.uint8))
        times = []
        for path in files:
            started = time.perf_counter()
            runner.predict(decode_image(path, runner.input_size)[None])
            times.append((time.perf_counter() - started) * 1e3)
    return float(np.median(times))


# ------------------------------------------------------------------ the load process


class _Connection:
    """A lean HTTP/1.1 keep-alive client: the load process should spend its CPU time on
    sending, not in a client library (httpx cost the loaded cores more than the server's
    own HTTP handling)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def post(self, path: str, body: bytes) -> int:
        """One request; a kept-alive connection the server has closed meanwhile (uvicorn
        closes idle ones after 5 s) is opened again once, as HTTP clients do."""
        reused = self.writer is not None
        try:
            return await self._post(path, body)
        except (ConnectionError, IndexError, asyncio.IncompleteReadError):
            self.close()
            if not reused:
                raise
            return await self._post(path, body)

    async def _post(self, path: str, body: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        await self.writer.drain()
        status = int((await self.reader.readline()).split()[1])
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and "close" in value.lower():
                close = True
        await self.reader.readexactly(length)
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _load(url: str, bodies: list[bytes], concurrency: int, requests: int,
                rate: float | None, seconds: float) -> dict:  # fmt: skip
    """``requests`` POSTs (or as many as ``seconds`` allow) with at most ``concurrency``
    under way; with ``rate``, started at that many per second (open loop)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    idle = [_Connection(host, int(port)) for _ in range(concurrency)]
    latencies, statuses = [], {}
    started = time.perf_counter()
    slots = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        body = bodies[index % len(bodies)]
        connection = idle.pop()
        begin = time.perf_counter()
        try:
            status = await connection.post("/v1/classify", body)
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
            status = type(exc).__name__
            connection.close()
        finally:
            idle.append(connection)
            slots.release()
        statuses[status] = statuses.get(status, 0) + 1
        if status == 200:
            latencies.append(time.perf_counter() - begin)

    tasks = []
    for index in range(requests):
        if time.perf_counter() - started > seconds:
            break
        if rate is not None:
            delay = started + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await slots.acquire()
        tasks.append(asyncio.create_task(one(index)))
    await asyncio.gather(*tasks)
    for connection in idle:
        connection.close()
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1e3 if latencies else np.zeros(1)
    return {
        "sent": len(tasks), "statuses": {str(k): v for k, v in statuses.items()},
        "wall_s": wall, "answered_per_s": len(latencies) / wall,
        "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
    }  # fmt: skip


def _load_child(args, out) -> None:
    out.put(asyncio.run(_load(*args)))


def load(url, bodies, *, concurrency, requests, rate=None, seconds=120.0) -> dict:
    """Run one bounded load from a separate process."""
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    args = (url, bodies, concurrency, requests, rate, seconds)
    child = context.Process(target=_load_child, args=(args, out))
    child.start()
    figures = out.get(timeout=seconds + 120)
    child.join(60)
    return figures


# ------------------------------------------------------------------ the server


class Server:
    def __init__(self, model: str, *args: str):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "nsfw_mobile.cli", "serve", model, "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.process.stdout.readline()))
        reader.start()
        reader.join(60)
        if not line or " on " not in line[0]:
            self.process.kill()
            raise RuntimeError(f"the server did not start: {line}")
        self.url = line[0].split(" on ")[-1].strip()

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(60)


def measured(server: Server, **kwargs) -> dict:
    cpu = cpu_seconds(server.process.pid)
    figures = load(server.url, **kwargs)
    figures["server_cpu_s"] = cpu_seconds(server.process.pid) - cpu
    answered = figures["statuses"].get("200", 0)
    figures["images_per_server_cpu_s"] = answered / max(figures["server_cpu_s"], 1e-9)
    return figures


def main() -> None:
    from predict_throughput import make_photos

    from nsfw_mobile.formats import PRETRAINED_TFLITE

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(PRETRAINED_TFLITE))
    parser.add_argument("--photos", type=int, default=48)
    parser.add_argument("--predict-images", type=int, default=400)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--requests", type=int, default=300, help="per concurrency level")
    parser.add_argument("--soak-s", type=float, default=600.0)
    parser.add_argument("--overload-s", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    report: dict = {"model": args.model, "cpu": _cpu_name(), "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        photos = make_photos(Path(tmp), args.photos)
        bodies = [p.read_bytes() for p in photos]
        files = [str(photos[i % len(photos)]) for i in range(args.predict_images)]
        report["one_image_ms"] = one_image_ms(args.model, [str(p) for p in photos])
        print(f"one image, decode + inference, one core: {report['one_image_ms']:.1f} ms")
        report["predict"] = predict_rate(args.model, files, args.workers)
        p = report["predict"]
        print(f"predict: {p['images_per_cpu_s']:.1f} images per CPU-second, "
              f"{p['images_per_s']:.1f} images/s ({p['images']} images)")  # fmt: skip

        server = Server(args.model, "--workers", str(args.workers), "--max-queue", "256")
        try:
            load(server.url, bodies, concurrency=4, requests=40)  # warm-up
            report["levels"] = {}
            for concurrency in (1, 4, 16, 64):
                figures = measured(server, bodies=bodies, concurrency=concurrency,
                                   requests=args.requests)  # fmt: skip
                figures["share_of_predict"] = (
                    figures["images_per_server_cpu_s"] / p["images_per_cpu_s"]
                )
                report["levels"][concurrency] = figures
                print(f"c={concurrency:>2}: {figures['answered_per_s']:.1f} req/s, p50 "
                      f"{figures['p50_ms']:.0f} ms, p95 {figures['p95_ms']:.0f} ms, p99 "
                      f"{figures['p99_ms']:.0f} ms, statuses {figures['statuses']}, "
                      f"{figures['images_per_server_cpu_s']:.1f} images per server "
                      f"CPU-second ({figures['share_of_predict']:.0%} of predict's)")  # fmt: skip
            peak = max(f["answered_per_s"] for f in report["levels"].values())

            rss_start = rss_mb(server.process.pid)
            soak = measured(server, bodies=bodies, concurrency=64, rate=peak / 2,
                            requests=int(peak / 2 * args.soak_s) + 1,
                            seconds=args.soak_s)  # fmt: skip
            soak["rss_start_mb"], soak["rss_end_mb"] = rss_start, rss_mb(server.process.pid)
            soak["rss_growth"] = soak["rss_end_mb"] / rss_start - 1
            soak["seconds"] = args.soak_s
            report["soak"] = soak
            print(f"soak {args.soak_s:.0f} s at {peak / 2:.1f} req/s: statuses "
                  f"{soak['statuses']}, p99 {soak['p99_ms']:.0f} ms, RSS {rss_start:.0f} -> "
                  f"{soak['rss_end_mb']:.0f} MB ({soak['rss_growth']:+.1%})")  # fmt: skip
        finally:
            report["exit_code"] = server.stop()

        server = Server(args.model, "--workers", str(args.workers), "--max-queue", "16")
        try:
            over = measured(server, bodies=bodies, concurrency=256, rate=4 * peak,
                            requests=int(4 * peak * args.overload_s) + 1,
                            seconds=args.overload_s)  # fmt: skip
            over["share_503"] = over["statuses"].get("503", 0) / max(over["sent"], 1)
            after = load(server.url, bodies, concurrency=1, requests=20)
            over["recovery_statuses"] = after["statuses"]
            report["overload"] = over
            print(f"4x overload ({4 * peak:.0f} req/s offered, queue 16): "
                  f"{over['share_503']:.0%} answered 503, p99 of the accepted "
                  f"{over['p99_ms']:.0f} ms, statuses {over['statuses']}; after: "
                  f"{after['statuses']}")  # fmt: skip
        finally:
            report["overload_exit_code"] = server.stop()
    print(f"server exit codes after SIGTERM: {report['exit_code']}, "
          f"{report['overload_exit_code']}")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
