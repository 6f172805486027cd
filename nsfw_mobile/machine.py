"""This machine, as benchmarks and the engine choice record it: CPU, ISA flags, versions."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

SYSTEM_NAMES = {"Darwin": "macOS"}
ISA_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "amx_int8",
    "neon",
    "asimd",
    "asimddp",
)


def machine_info() -> dict:
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags.update(value.split())
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "system": platform.platform(),
        "isa": [flag for flag in ISA_FLAGS if flag in flags],
        "python": platform.python_version(),
    }


def versions() -> dict:
    found = {}
    for name in (
        "nsfw-mobile",
        "numpy",
        "ai-edge-litert",
        "onnxruntime",
        "openvino",
        "tensorflow-cpu",
        "tensorflow",
        "keras",
        "coremltools",
        "pillow",
    ):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found
