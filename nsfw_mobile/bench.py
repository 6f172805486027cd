"""Latency, load time, memory and size of model artefacts on this CPU.

Each artefact runs in its own child process (one engine's memory and threads
never count against another's). The children stay alive for the whole
benchmark and the parent asks each in turn for a block of timed runs, so runs
of different artefacts are interleaved in rounds and machine drift hits all of
them alike. Timed runs continue until both a minimum count and a minimum time
are reached.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import BenchmarkError, ModelFileError, UsageError
from .files import size_bytes
from .formats import engine_label, file_type_of
from .machine import SYSTEM_NAMES, machine_info, versions
from .pause import phase
from .resolve import MEASURE, ModelRef, resolve_model


@dataclass
class BenchResult:
    path: str
    engine: str
    threads: int
    size_bytes: int
    load_seconds: float
    runs: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    images_per_second: float
    peak_rss_mb: float


@dataclass
class BenchReport:
    machine: dict
    versions: dict
    settings: dict
    results: list[BenchResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------ child process


def peak_rss_mb() -> float:
    """This process's peak resident memory.

    Linux keeps ``ru_maxrss`` across ``exec``, so a child started by a parent that
    holds TensorFlow would report the parent's peak; ``VmHWM`` belongs to the
    process's own address space.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


def _worker(path: str, threads: int, engine: str | None = None) -> None:
    """Child: load the model, then answer 'run K' with K latencies and 'rss' with peak memory."""
    started = time.perf_counter()
    ref = resolve_model(path, use=MEASURE)
    if engine is not None:
        ref = replace(ref, engine_override=engine)
    with ref.open_runner(num_threads=threads) as runner:
        _serve(runner, started)


def _serve(runner, started: float) -> None:
    image = np.random.default_rng(0).integers(0, 256, (1, *runner.input_size, 3), dtype=np.uint8)
    runner.predict(image)
    load_seconds = time.perf_counter() - started
    for _ in range(5):  # warm-up
        runner.predict(image)
    print(json.dumps({"ready": True, "load_seconds": load_seconds}), flush=True)
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "run":
            latencies = []
            for _ in range(int(argument)):
                t0 = time.perf_counter()
                runner.predict(image)
                latencies.append((time.perf_counter() - t0) * 1e3)
            print(json.dumps({"latencies_ms": latencies}), flush=True)
        elif command == "rss":
            peak = peak_rss_mb() + runner.helper_peak_rss_mb()  # TF.js: Python plus Node
            print(json.dumps({"peak_rss_mb": peak}), flush=True)
        elif command == "quit":
            return


class _Child:
    def __init__(self, path: str, threads: int, engine: str | None = None):
        # The child's chatter is kept, and shown only if it dies.
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(threads),
            "TF_NUM_INTRAOP_THREADS": str(threads),
            "TF_NUM_INTEROP_THREADS": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nsfw_mobile.bench",
                "--worker",
                path,
                "--threads",
                str(threads),
                *(["--engine", engine] if engine else []),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env=env,
        )
        self.path, self.threads, self.engine, self.latencies = path, threads, engine, []
        try:
            self.load_seconds = self._read()["load_seconds"]
        except BaseException:  # died while loading, or Ctrl-C while waiting for it
            self.close()
            raise

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            self.stderr.seek(0)
            tail = self.stderr.read().decode(errors="replace").strip().splitlines()[-5:]
            on = f" on {self.engine}" if self.engine else ""
            raise BenchmarkError(
                f"{self.path}{on}: the benchmark process died (exit code {self.process.returncode})"
                + (": " + " | ".join(tail) if tail else "")
            )
        return json.loads(line)

    def ask(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        """Ask the child to quit (kill it if it does not), reap it, close its pipes."""
        try:
            if self.process.poll() is None:
                self.process.stdin.write("quit\n")
                self.process.stdin.flush()
            self.process.wait(timeout=30)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.stderr):
            with contextlib.suppress(OSError):  # a pipe the dead child left unflushed
                stream.close()


def bench(
    paths: list[ModelRef | str],
    *,
    threads: tuple[int, ...] = (1,),
    min_runs: int = 50,
    min_seconds: float = 2.0,
    block: int = 10,
    on_result=None,
    engines: list[str | None] | None = None,
) -> BenchReport:
    """Benchmark every artefact at every thread count (engines without a thread setting,
    TF.js, once at 1 thread); Core ML only on macOS.

    ``engines``: the engine each of ``paths`` runs on (a key in ``formats.ENGINES``; None: its
    file type's own); a path may be given twice, once per engine (``formats.engine_pairs``).
    """
    engines = list(engines) if engines is not None else [None] * len(paths)
    if len(engines) != len(paths):
        raise UsageError("bench: give one engine per path")
    report = BenchReport(
        machine_info(),
        versions(),
        {
            "threads": list(threads),
            "min_runs": min_runs,
            "min_seconds": min_seconds,
            "batch": 1,
            "block": block,
        },
    )
    refs = {}  # (spec, engine) -> ModelRef, each pair once
    for item, engine in zip(paths, engines):
        ref = item if isinstance(item, ModelRef) else resolve_model(item, use=MEASURE)
        for part in ref.parts:
            on = part if engine is None else replace(part, engine_override=engine)
            refs[(part.spec, engine)] = on
    runnable = []
    for (spec, engine), ref in refs.items():
        file_type = ref.file_type
        if not file_type.runs_at_speed_here:
            report.skipped.append(
                f"{ref.label}: {file_type.engine} latency needs "
                f"{SYSTEM_NAMES.get(file_type.native_system, file_type.native_system)} "
                "(here it runs only in the toolkit's validator, which is not a runtime)"
            )
            continue
        ref.fetch()
        runnable.append((spec, engine))
    one_thread = [pair for pair in runnable if not refs[pair].file_type.threaded]
    if set(threads) != {1}:
        report.skipped += [
            f"{refs[pair].label}: {refs[pair].file_type.engine} has no thread setting: measured "
            "once, at 1 thread"
            for pair in one_thread
        ]
    for index, count in enumerate(threads):
        timed = [(pair, 1 if pair in one_thread else count) for pair in runnable]
        timed = [(pair, n) for pair, n in timed if pair not in one_thread or index == 0]
        children: list[_Child] = []
        try:
            for (path, engine), path_threads in timed:  # one by one: a failure closes these
                children.append(_Child(path, path_threads, engine))
                phase(f"benchmarking:{Path(path).name}")  # its process is running
            started = {id(c): 0.0 for c in children}
            while True:
                pending = [
                    c
                    for c in children
                    if len(c.latencies) < min_runs or started[id(c)] < min_seconds
                ]
                if not pending:
                    break
                for child in pending:  # one block each per round: interleaved
                    latencies = child.ask(f"run {block}")["latencies_ms"]
                    child.latencies.extend(latencies)
                    started[id(child)] += sum(latencies) / 1e3
            for child in children:
                values = np.asarray(child.latencies)
                ref = refs[(child.path, child.engine)]
                result = BenchResult(
                    path=ref.label,
                    engine=engine_label(ref.file_type, child.engine),
                    threads=child.threads,
                    size_bytes=0 if ref.path is None else size_bytes(ref.path),
                    load_seconds=round(child.load_seconds, 3),
                    runs=len(values),
                    median_ms=round(float(np.median(values)), 3),
                    p90_ms=round(float(np.percentile(values, 90)), 3),
                    p99_ms=round(float(np.percentile(values, 99)), 3),
                    mean_ms=round(float(values.mean()), 3),
                    std_ms=round(float(values.std()), 3),
                    images_per_second=round(1e3 / float(np.median(values)), 1),
                    peak_rss_mb=round(child.ask("rss")["peak_rss_mb"], 1),
                )
                report.results.append(result)
                if on_result:
                    on_result(result)
        finally:
            for child in children:
                child.close()
    return report


def result_label(result: BenchResult) -> str:
    """A result's file name, and its engine where that is not the file's own
    (``nsfw_int8.onnx on openvino``)."""
    name = Path(result.path).name
    try:
        own = file_type_of(result.path).engine == result.engine
    except ModelFileError:  # a zoo model's name: its Keras reference
        own = True
    return name if own else f"{name} on {result.engine}"


def render_table(report: BenchReport) -> str:
    machine = report.machine
    lines = [
        f"{machine['cpu']}, {machine['cores']} cores, ISA {' '.join(machine['isa'])}",
        "batch 1; " + ", ".join(f"{k} {v}" for k, v in report.versions.items()),
        f"{'file':<28} {'engine':<11} {'thr':>3} {'median':>8} {'p90':>8} {'p99':>8} "
        f"{'img/s':>7} {'load s':>7} {'RSS MB':>7} {'MB':>6}",
    ]
    for r in report.results:
        lines.append(
            f"{Path(r.path).name:<28} {r.engine:<11} {r.threads:>3} {r.median_ms:>6.2f}ms "
            f"{r.p90_ms:>6.2f}ms {r.p99_ms:>6.2f}ms {r.images_per_second:>7.1f} "
            f"{r.load_seconds:>7.2f} {r.peak_rss_mb:>7.0f} {r.size_bytes / 1e6:>6.1f}"
        )
    lines += [f"skipped {line}" for line in report.skipped]
    return "\n".join(lines)


def render_markdown(report: BenchReport) -> str:
    lines = [
        "| file | engine | threads | median ms | p90 ms | p99 ms | mean ± std ms | images/s "
        "| load s | peak RSS MB | size MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report.results:
        lines.append(
            f"| `{Path(r.path).name}` | {r.engine} | {r.threads} | {r.median_ms:.2f} | "
            f"{r.p90_ms:.2f} | {r.p99_ms:.2f} | {r.mean_ms:.2f} ± {r.std_ms:.2f} | "
            f"{r.images_per_second:.1f} | {r.load_seconds:.2f} | {r.peak_rss_mb:.0f} | "
            f"{r.size_bytes / 1e6:.1f} |"
        )
    machine = report.machine
    lines += [
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, "
        f"ISA {', '.join(machine['isa'])}; {machine['system']}.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in report.versions.items()) + ".",
    ]
    lines += [f"- skipped {line}" for line in report.skipped]
    return "\n".join(lines) + "\n"


def main() -> None:  # the child process entry point
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--engine", default=None)
    arguments = parser.parse_args()
    _worker(arguments.worker, arguments.threads, arguments.engine)


if __name__ == "__main__":
    main()
