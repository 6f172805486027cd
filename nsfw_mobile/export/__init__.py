"""Converters: pure functions named after the edge they convert (see formats.py).

The registry (``formats``) names each converter by string and reads the options defined
here; converters never import the registry (it sits above them), so each checks its own
arguments against the variants it implements (``QUANTIZATIONS``), and a house test holds
those equal to the registry's rows.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..files import sha256_file, size_bytes


@dataclass(frozen=True)
class Option:
    """A converter option that only some formats take."""

    name: str
    flag: str
    applies_to: str
    """The formats that take it, in words."""
    default: object = None
    choices: tuple[str, ...] | None = None

    def check(self, value) -> None:
        if value is not None and self.choices and value not in self.choices:
            raise UsageError(f"{self.flag} {value}: choose one of {', '.join(self.choices)}")


CALIBRATION = Option("calibration", "--calibration", "full-integer TFLite and int8 ONNX")
IO_TYPE = Option("io_type", "--io", "full-integer TFLite", "uint8", ("uint8", "int8", "float32"))
MIN_CALIBRATION_IMAGES = 10
"""Fewest calibration images taken (the shipped default set has 10; real data: hundreds).
Written here once: the converters, ``convert``'s check and the help texts read it."""


def check_quantization(converter: str, quantization: str, offered) -> None:
    """Refuse a quantization the converter does not implement."""
    if quantization not in offered:
        raise UsageError(
            f"{converter}: quantization {quantization!r} is not offered: choose one of "
            f"{', '.join(offered)}"
        )


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
