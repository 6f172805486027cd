"""The fastest (engine, file) pair of a release folder on this machine: measured, remembered.

A release's manifest records each artefact's latency on the machine that made
the release, and CPUs rank engines differently (MobileNetV2 int8, one thread:
OpenVINO and ONNX Runtime ahead of LiteRT on an Intel Xeon with AVX-512 VNNI,
LiteRT ahead on one AMD EPYC). So ``fastest_here`` times the candidates in this
process, one thread each, as ``predict``'s lanes run them, and keeps the answer
in the toolkit's cache under a key made of this CPU, the engines' versions and
the candidates' (engine, file SHA-256) pairs: a second call reads it back, and
a changed file, engine or machine means a new probe.

Candidates are the (engine, file) pairs the manifest records as validated
(``releasable``; a file on an engine other than its own only where the manifest's
``engines`` says so) that this machine runs at speed with an engine that is
installed. Those the manifest records as more than ``RECORDED_MARGIN`` times
slower than its fastest are not probed: machines differ by tens of percent per
engine, not by a factor of two (TF.js in Node records a second per image,
float32 models three times int8's latency).

Pairs within ``TIE`` (3%) of the fastest probe are a tie: measurement noise on
a shared machine is of that order. A tie goes to the engine listed first in the
registry (``formats.ENGINES``: LiteRT, then ONNX Runtime, then OpenVINO; the
engine with the fewest extra packages and the quickest load), then to the
smaller file.
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
from .files import cache_root, sha256_file, size_bytes
from .formats import ENGINE_KEYS, engine_by_key, file_type_of
from .machine import SYSTEM_NAMES, machine_info, versions
from .manifest import inside_folder, read_manifest

RECORDED_MARGIN = 2.0
TIE = 0.03
"""Pairs within 3% of the fastest probe are a tie (see the module doc for the rule)."""
WARMUP_RUNS = 3
ROUNDS = 5
RUNS_PER_ROUND = 4
"""Runs of the candidates are interleaved in rounds, so drift hits them alike."""
CACHE_FOLDER = "fastest"
ENGINE_PACKAGES = ("ai-edge-litert", "onnxruntime", "openvino", "coremltools", "numpy")


@dataclass(frozen=True)
class Pair:
    """A file of the release on one engine (``engine`` None: the file type's own)."""

    path: Path
    engine: str | None = None

    @property
    def engine_key(self) -> str:
        return self.engine or file_type_of(self.path).default_engine

    @property
    def label(self) -> str:
        """How the figures name it: the file name, and the engine where it is not the file's
        own (``nsfw_int8.onnx on openvino``)."""
        return self.path.name if self.engine is None else f"{self.path.name} on {self.engine}"


@dataclass
class Choice:
    path: Path
    engine: str
    """The engine's short name (``FileType.engine_id``, or the key of the other engine)."""
    probed_ms: dict[str, float] = field(default_factory=dict)
    """Median single-thread latency here, by pair label (empty: one candidate, no probe)."""
    recorded_ms: dict[str, float] = field(default_factory=dict)
    recorded_cpu: str = ""
    skipped: list[str] = field(default_factory=list)
    cache_file: Path | None = None
    cached: bool = False
    engine_key: str | None = None
    """The engine to open ``path`` on (None: the file type's own), for ``open_runner``."""
    tie: list[str] = field(default_factory=list)
    """Labels of the pairs within TIE of the fastest, when more than one (the rule chose)."""

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
        if len(self.tie) > 1:
            lines.append(
                f"  within {TIE:.0%} of the fastest, a tie: {', '.join(self.tie)}; the tie goes "
                "to the engine first in the registry, then the smaller file"
            )
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


def validated_pairs(release_dir: Path, manifest: dict) -> list[tuple[Pair, dict]]:
    """Every (engine, file) pair the manifest records as validated, with its record: a file
    on its own engine where it is releasable, on another where its ``engines`` entry says so."""
    pairs = []
    for entry in manifest["files"]:
        if not entry["releasable"]:
            continue
        path = inside_folder(release_dir, entry["file"])
        file_type = file_type_of(path)
        pairs.append((Pair(path), entry))
        for key, record in entry.get("engines", {}).items():
            if key == file_type.default_engine or key not in ENGINE_KEYS:
                continue
            if record.get("releasable") is True and file_type.can_run_on(key):
                pairs.append((Pair(path, key), record))
    return pairs


def candidates(release_dir: Path, manifest: dict) -> tuple[list[tuple[Pair, float | None]], list]:
    """(pair, recorded 1-thread ms) of the validated pairs worth probing, and why others are
    not."""
    runnable, skipped = [], []
    for pair, record in validated_pairs(release_dir, manifest):
        file_type = file_type_of(pair.path)
        if not file_type.runs_at_speed_here:
            system = SYSTEM_NAMES.get(file_type.native_system, file_type.native_system)
            skipped.append(f"{pair.label} ({file_type.engine} runs at speed on {system} only)")
        elif not file_type.installed_on(pair.engine):
            module = engine_by_key(pair.engine).module if pair.engine else file_type.engine_module
            skipped.append(f"{pair.label} ({module} is not installed)")
        else:
            runnable.append((pair, _recorded_ms(record)))
    recorded = [ms for _, ms in runnable if ms is not None]
    best = min(recorded, default=None)
    kept = []
    for pair, ms in runnable:
        if best is not None and ms is not None and ms > RECORDED_MARGIN * best:
            skipped.append(
                f"{pair.label} (recorded {ms:.2f} ms, over {RECORDED_MARGIN:g}x the "
                f"fastest recorded {best:.2f} ms)"
            )
        else:
            kept.append((pair, ms))
    return kept, skipped


def choose(probed_ms: dict[str, float], pairs: list[Pair]) -> tuple[Pair, list[str]]:
    """The pair to use, and the labels tied with the fastest (within TIE), fastest first.

    A tie goes to the engine listed first in ``formats.ENGINES``, then the smaller file."""
    by_label = {pair.label: pair for pair in pairs}
    fastest = min(probed_ms.values())
    tied = sorted(
        (label for label, ms in probed_ms.items() if ms <= fastest * (1 + TIE)),
        key=probed_ms.get,
    )

    def rule(label: str):
        pair = by_label[label]
        return ENGINE_KEYS.index(pair.engine_key), _size(pair.path), probed_ms[label]

    return by_label[min(tied, key=rule)], tied


def _size(path: Path) -> int:
    return size_bytes(path)


def _cache_key(pairs: list[Pair]) -> dict:
    """This CPU, the engines' versions and each (engine, file) pair with the file's SHA-256."""
    machine = machine_info()
    checksums = {path: sha256_file(path) for path in dict.fromkeys(p.path for p in pairs)}
    return {
        "cpu": machine["cpu"],
        "isa": machine["isa"],
        "engines": {k: v for k, v in versions().items() if k in ENGINE_PACKAGES},
        "pairs": {
            pair.label: {"engine": pair.engine_key, "sha256": checksums[pair.path]}
            for pair in pairs
        },
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
    if not isinstance(probed, dict) or document.get("choice") not in key["pairs"]:
        return None
    if set(probed) != set(key["pairs"]) or not all(
        isinstance(v, int | float) for v in probed.values()
    ):
        return None
    return document


def probe(pairs: list[Pair]) -> dict[str, float]:
    """Median single-thread latency of each (engine, file) pair, in ms, by its label; runs
    interleaved in rounds."""
    pairs = [pair if isinstance(pair, Pair) else Pair(Path(pair)) for pair in pairs]
    runners = []
    try:
        for pair in pairs:
            runners.append(
                file_type_of(pair.path).open_runner(pair.path, engine=pair.engine, num_threads=1)
            )
        latencies: dict[str, list[float]] = {pair.label: [] for pair in pairs}
        images = {}
        for runner in runners:
            height, width = runner.input_size
            images[id(runner)] = np.random.default_rng(0).integers(
                0, 256, (1, height, width, 3), dtype=np.uint8
            )
            for _ in range(WARMUP_RUNS):
                runner.predict(images[id(runner)])
        for _ in range(ROUNDS):
            for pair, runner in zip(pairs, runners):
                for _ in range(RUNS_PER_ROUND):
                    started = time.perf_counter()
                    runner.predict(images[id(runner)])
                    latencies[pair.label].append((time.perf_counter() - started) * 1e3)
    finally:
        for runner in runners:
            runner.close()
    return {name: round(float(np.median(values)), 3) for name, values in latencies.items()}


def fastest_here(release_dir: str | Path, *, use_cache: bool = True) -> Choice:
    """The validated (engine, file) pair of ``release_dir`` that runs fastest on this machine."""
    release_dir = Path(release_dir)
    manifest = read_manifest(release_dir)
    kept, skipped = candidates(release_dir, manifest)
    if not kept:
        raise ModelFileError(
            f"{release_dir}: the manifest has no validated artefact this machine runs"
            + (f" ({'; '.join(skipped)})" if skipped else "")
        )
    pairs = [pair for pair, _ in kept]
    choice = _choice(pairs[0])
    choice.recorded_ms = {pair.label: ms for pair, ms in kept if ms is not None}
    choice.recorded_cpu = str(manifest.get("machine", {}).get("cpu", ""))
    choice.skipped = skipped
    if len(pairs) == 1:
        return choice
    key = _cache_key(pairs)
    choice.cache_file = _cache_path(key)
    document = _read_cache(choice.cache_file, key) if use_cache else None
    if document is not None:
        choice.cached = True
        choice.probed_ms = {name: float(ms) for name, ms in document["probed_ms"].items()}
    else:
        choice.probed_ms = probe(pairs)
    chosen, choice.tie = choose(choice.probed_ms, pairs)
    if document is None:
        _write_cache(choice.cache_file, key, choice.probed_ms, chosen.label)
    picked = _choice(chosen)
    choice.path, choice.engine, choice.engine_key = picked.path, picked.engine, picked.engine_key
    return choice


def _choice(pair: Pair) -> Choice:
    file_type = file_type_of(pair.path)
    return Choice(path=pair.path, engine=pair.engine or file_type.engine_id, engine_key=pair.engine)


def _write_cache(path: Path, key: dict, probed_ms: dict[str, float], choice: str) -> None:
    document = {
        "key": key,
        "choice": choice,
        "probed_ms": probed_ms,
        "probed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        with atomic_path(path) as temporary:
            temporary.write_text(json.dumps(document, indent=2))
    except OSError:  # a read-only home: the choice stands, it is only not remembered
        pass
