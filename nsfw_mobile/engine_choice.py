"""The fastest artefact of a release folder on this machine: measured briefly, remembered.

A release's manifest records each artefact's latency on the machine that made
the release, and CPUs rank engines differently (MobileNetV2 int8, one thread:
ONNX Runtime ahead of LiteRT on an Intel Xeon with AVX-512 VNNI, behind it on
an AMD EPYC). So ``fastest_here`` times the candidates in this process, one
thread each, as ``predict``'s lanes run them, and keeps the answer in the
toolkit's cache under a key made of this CPU, the engines' versions and the
candidates' SHA-256: a second call reads it back, and a changed file, engine
or machine means a new probe.

Candidates are the validated artefacts this machine runs at speed with an
engine that is installed. Those the manifest records as more than
``RECORDED_MARGIN`` times slower than its fastest are not probed: machines
differ by tens of percent per engine, not by a factor of two (TF.js in Node
records a second per image, float32 models three times int8's latency).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import ModelFileError
from .files import cache_root, sha256_file
from .formats import file_type_of
from .machine import SYSTEM_NAMES, machine_info, versions
from .manifest import inside_folder, read_manifest

RECORDED_MARGIN = 2.0
WARMUP_RUNS = 3
ROUNDS = 5
RUNS_PER_ROUND = 4
"""Runs of the candidates are interleaved in rounds, so drift hits them alike."""
CACHE_FOLDER = "fastest"
ENGINE_PACKAGES = ("ai-edge-litert", "onnxruntime", "coremltools", "numpy")


@dataclass
class Choice:
    path: Path
    engine: str
    """The engine's short name (``FileType.engine_id``)."""
    probed_ms: dict[str, float] = field(default_factory=dict)
    """Median single-thread latency here, by file name (empty: one candidate, no probe)."""
    recorded_ms: dict[str, float] = field(default_factory=dict)
    recorded_cpu: str = ""
    skipped: list[str] = field(default_factory=list)
    cache_file: Path | None = None
    cached: bool = False

    def explain(self) -> list[str]:
        """What ``predict --verbose`` says about the choice."""

        def figures(values: dict[str, float]) -> str:
            ranked = sorted(values.items(), key=lambda item: item[1])
            return ", ".join(f"{name} {ms:.2f} ms" for name, ms in ranked)

        lines = []
        if self.probed_ms:
            origin = f"cached in {self.cache_file}" if self.cached else "probed now"
            lines.append(
                f"  measured on this machine, 1 thread, median of {ROUNDS * RUNS_PER_ROUND} "
                f"runs ({origin}): {figures(self.probed_ms)}"
            )
        else:
            lines.append("  the only candidate this machine runs, so nothing to measure")
        if self.recorded_ms:
            lines.append(
                f"  the manifest's figures ({self.recorded_cpu or 'the release machine'}): "
                f"{figures(self.recorded_ms)}"
            )
        lines += [f"  not a candidate: {reason}" for reason in self.skipped]
        return lines


def _recorded_ms(entry: dict) -> float | None:
    figures = entry.get("latency", {}).get("threads_1")
    return float(figures["median_ms"]) if figures else None


def candidates(release_dir: Path, manifest: dict) -> tuple[list[tuple[Path, float | None]], list]:
    """(path, recorded 1-thread ms) of the artefacts worth probing, and why others are not."""
    runnable, skipped = [], []
    for entry in manifest["files"]:
        if not entry["releasable"]:
            continue
        path = inside_folder(release_dir, entry["file"])
        file_type = file_type_of(path)
        if not file_type.runs_at_speed_here:
            system = SYSTEM_NAMES.get(file_type.native_system, file_type.native_system)
            skipped.append(f"{path.name} ({file_type.engine} runs at speed on {system} only)")
        elif not file_type.engine_installed:
            skipped.append(f"{path.name} ({file_type.engine_module} is not installed)")
        else:
            runnable.append((path, _recorded_ms(entry)))
    recorded = [ms for _, ms in runnable if ms is not None]
    best = min(recorded, default=None)
    kept = []
    for path, ms in runnable:
        if best is not None and ms is not None and ms > RECORDED_MARGIN * best:
            skipped.append(
                f"{path.name} (recorded {ms:.2f} ms, over {RECORDED_MARGIN:g}x the "
                f"fastest recorded {best:.2f} ms)"
            )
        else:
            kept.append((path, ms))
    return kept, skipped


def _cache_key(paths: list[Path]) -> dict:
    machine = machine_info()
    return {
        "cpu": machine["cpu"],
        "isa": machine["isa"],
        "engines": {k: v for k, v in versions().items() if k in ENGINE_PACKAGES},
        "files": {path.name: sha256_file(path) for path in paths},
    }


def _cache_path(key: dict) -> Path:

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return cache_root() / CACHE_FOLDER / f"{digest[:32]}.json"


def _read_cache(path: Path, key: dict) -> dict | None:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("key") != key:
        return None
    probed = document.get("probed_ms")
    if not isinstance(probed, dict) or document.get("choice") not in key["files"]:
        return None
    if set(probed) != set(key["files"]) or not all(
        isinstance(v, int | float) for v in probed.values()
    ):
        return None
    return document


def probe(paths: list[Path]) -> dict[str, float]:
    """Median single-thread latency of each model file, in ms, runs interleaved in rounds."""
    runners = []
    try:
        for path in paths:
            runners.append(file_type_of(path).open_runner(path, num_threads=1))
        latencies: dict[str, list[float]] = {path.name: [] for path in paths}
        images = {}
        for runner in runners:
            height, width = runner.input_size
            images[id(runner)] = np.random.default_rng(0).integers(
                0, 256, (1, height, width, 3), dtype=np.uint8
            )
            for _ in range(WARMUP_RUNS):
                runner.predict(images[id(runner)])
        for _ in range(ROUNDS):
            for path, runner in zip(paths, runners):
                for _ in range(RUNS_PER_ROUND):
                    started = time.perf_counter()
                    runner.predict(images[id(runner)])
                    latencies[path.name].append((time.perf_counter() - started) * 1e3)
    finally:
        for runner in runners:
            runner.close()
    return {name: round(float(np.median(values)), 3) for name, values in latencies.items()}


def fastest_here(release_dir: str | Path, *, use_cache: bool = True) -> Choice:
    """The validated artefact of ``release_dir`` that runs fastest on this machine."""
    release_dir = Path(release_dir)
    manifest = read_manifest(release_dir)
    kept, skipped = candidates(release_dir, manifest)
    if not kept:
        raise ModelFileError(
            f"{release_dir}: the manifest has no validated artefact this machine runs"
            + (f" ({'; '.join(skipped)})" if skipped else "")
        )
    paths = [path for path, _ in kept]
    choice = Choice(
        path=paths[0],
        engine=file_type_of(paths[0]).engine_id,
        recorded_ms={path.name: ms for path, ms in kept if ms is not None},
        recorded_cpu=str(manifest.get("machine", {}).get("cpu", "")),
        skipped=skipped,
    )
    if len(paths) == 1:
        return choice
    key = _cache_key(paths)
    choice.cache_file = _cache_path(key)
    document = _read_cache(choice.cache_file, key) if use_cache else None
    if document is not None:
        choice.cached = True
        choice.probed_ms = {name: float(ms) for name, ms in document["probed_ms"].items()}
    else:
        choice.probed_ms = probe(paths)
        _write_cache(choice.cache_file, key, choice.probed_ms)
    name = min(choice.probed_ms, key=choice.probed_ms.get)
    choice.path = release_dir / name
    choice.engine = file_type_of(choice.path).engine_id
    return choice


def _write_cache(path: Path, key: dict, probed_ms: dict[str, float]) -> None:
    document = {
        "key": key,
        "choice": min(probed_ms, key=probed_ms.get),
        "probed_ms": probed_ms,
        "probed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        with atomic_path(path) as temporary:
            temporary.write_text(json.dumps(document, indent=2))
    except OSError:  # a read-only home: the choice stands, it is only not remembered
        pass
