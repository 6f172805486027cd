"""Converters: pure functions named after the edge they convert (see formats.py)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..files import sha256_file, size_bytes

CALIBRATION_PROPERTY = "calibration_sha256"
"""Metadata entry of a calibrated artefact: the SHA-256 of its calibration images (JSON)."""


def description(source) -> str:
    """The artefact's one-line description: the contract's, else one from its labels."""
    if source.contract.description:
        return source.contract.description
    labels = ", ".join(source.labels)
    return f"Image classifier ({labels}) converted by nsfw-mobile from {source.name}."


@dataclass
class Artifact:
    """One converted model file and how it was made."""

    path: Path
    target: str
    quantization: str
    seconds: float
    notes: list[str] = field(default_factory=list)
    size_bytes: int = 0
    sha256: str = ""
    format: str = ""
    """Key of the row in formats.FORMATS."""

    def finish(self, started: float) -> Artifact:
        self.seconds = round(time.perf_counter() - started, 2)
        self.size_bytes = size_bytes(self.path)
        self.sha256 = sha256_file(self.path)
        return self

    def to_dict(self) -> dict:
        document = asdict(self)
        document["path"] = str(self.path)
        return document


def calibration_for(quantization: str, calibration, what: str) -> tuple[object, dict[str, str]]:
    """``calibration_inputs`` for a conversion, refusing too few images when ``quantization``
    is int8 (``what`` names the quantization in the message); the record only for int8."""
    from ..errors import UsageError
    from ..formats import MIN_CALIBRATION_IMAGES

    pixels, record = calibration_inputs(calibration)
    if quantization != "int8":
        return pixels, {}
    count = 0 if pixels is None else len(pixels)
    if count < MIN_CALIBRATION_IMAGES:
        raise UsageError(
            f"{what} needs at least {MIN_CALIBRATION_IMAGES} calibration images, got "
            f"{count}: pass --calibration DIR with more images"
        )
    return pixels, record


def calibration_inputs(calibration) -> tuple[object, dict[str, str]]:
    """Calibration pixels and the metadata entries that name their files.

    ``calibration`` is an ``images.ImageBatch`` (decoded files: their SHA-256 go into the
    artefact, so that validation leaves those images out) or a bare uint8 array (nothing is
    recorded), or None.
    """
    import json

    paths = getattr(calibration, "paths", None)
    if paths is None:
        return calibration, {}
    checksums = sorted({sha256_file(path) for path in paths})
    return calibration.pixels, {CALIBRATION_PROPERTY: json.dumps(checksums)}
