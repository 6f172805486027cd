"""Checksums and sizes of artefacts, which may be files or folders (``.mlpackage``), and
the toolkit's cache folder."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

MAX_DECLARED_ELEMENTS = 1 << 26
"""The one size limit on model files: 67 M tensor elements over the tensors a file declares
(TFLite: weights and activations; ONNX: weights). The pretrained MobileNetV2 declares 9.6 M
as TFLite, InceptionV3 22.4 M weights. Runners refuse more before their engine allocates:
a 5 KB mutated TFLite model declaring 100 M made LiteRT allocate 1.9 GB
(fuzz/targets.py: fuzz_tflite)."""


def cache_root() -> Path:
    """The toolkit's cache: NSFW_MOBILE_CACHE, else $XDG_CACHE_HOME or ~/.cache, /nsfw-mobile."""
    if os.environ.get("NSFW_MOBILE_CACHE"):
        return Path(os.environ["NSFW_MOBILE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nsfw-mobile"


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file, or of a folder (an .mlpackage) as its sorted names and contents."""
    digest = hashlib.sha256()
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():  # a folder's checksum covers its files' names too
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def size_bytes(path: str | Path) -> int:
    """Size of a file, or the total of a folder's files (an .mlpackage)."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size
