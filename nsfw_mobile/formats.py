"""The one registry of output formats.

Every CLI choice, ``convert --to all``, validation tolerances, ``bench`` and
the docs read named fields of these records; nothing indexes rows by position.

Tolerances compare a candidate's probabilities with the Keras reference's on
the same uint8 images. Figures measured on the pretrained model and the 21
shipped sample images (``nsfw-mobile convert --to all --out dist`` then
``nsfw-mobile validate dist/*.tflite dist/*.mlmodel dist/*.mlpackage``) are
written beside each threshold. Bounds leave a margin of 2-10x over what a
correct conversion shows and stay far below what a broken one shows (wrong
scale, BGR, a perturbed weight, bad calibration: differences of 0.2 to 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError


@dataclass(frozen=True)
class Tolerance:
    """Pass when every bound that is set holds."""

    max_abs: float | None
    mean_abs: float | None
    min_agreement: float
    """Share of images whose top-1 label equals the reference's."""
    measured: str
    """What we measured on the pretrained model (docs only)."""

    @property
    def mode(self) -> str:
        return "strict" if self.max_abs is not None and self.max_abs <= 1e-3 else "statistical"


STRICT = Tolerance(1e-4, None, 1.0, "")
FLOAT16 = Tolerance(3e-2, 3e-3, 1.0, "")
DYNAMIC = Tolerance(0.15, 0.01, 0.97, "")
INT8_WEIGHTS = Tolerance(0.1, 0.01, 0.97, "")
FULL_INT8 = Tolerance(None, 0.03, 0.97, "")


@dataclass(frozen=True)
class Format:
    key: str
    target: str
    """mlmodel | mlpackage | tflite"""
    quantization: str
    filename: str
    tolerance: Tolerance
    summary: str
    precision: str | None = None
    """Compute precision of an ML Program; None elsewhere."""

    @property
    def suffix(self) -> str:
        return Path(self.filename).suffix

    @property
    def runner(self) -> str:
        return "tflite" if self.target == "tflite" else "coreml"


def _t(base: Tolerance, measured: str) -> Tolerance:
    return Tolerance(base.max_abs, base.mean_abs, base.min_agreement, measured)


FORMATS: tuple[Format, ...] = (
    Format(
        "mlmodel",
        "mlmodel",
        "none",
        "NSFW.mlmodel",
        _t(STRICT, "max 5.4e-7, mean 6.1e-8, top-1 100%"),
        "Core ML neural network, iOS 13+, float32 weights",
    ),
    Format(
        "mlmodel-float16",
        "mlmodel",
        "float16",
        "NSFW_float16.mlmodel",
        _t(FLOAT16, "max 1.4e-2, mean 8.3e-4, top-1 100%"),
        "Core ML neural network, iOS 13+, float16 weights",
    ),
    Format(
        "mlpackage",
        "mlpackage",
        "none",
        "NSFW.mlpackage",
        _t(FLOAT16, "max 9.5e-3, mean 6.7e-4, top-1 100% (float16 emulated)"),
        "Core ML ML Program, iOS 15+, float16 compute",
        precision="float16",
    ),
    Format(
        "mlpackage-float32",
        "mlpackage",
        "none",
        "NSFW_float32.mlpackage",
        _t(STRICT, "max 5.4e-7, mean 6.1e-8, top-1 100%"),
        "Core ML ML Program, iOS 15+, float32 compute",
        precision="float32",
    ),
    Format(
        "mlpackage-int8",
        "mlpackage",
        "int8",
        "NSFW_int8.mlpackage",
        _t(INT8_WEIGHTS, "max 1.8e-2, mean 1.3e-3, top-1 100% (float16 emulated)"),
        "Core ML ML Program, iOS 16+, int8 weights, float16 compute",
        precision="float16",
    ),
    Format(
        "tflite-float32",
        "tflite",
        "none",
        "nsfw_float32.tflite",
        _t(STRICT, "max 4.5e-7, mean 4.9e-8, top-1 100%"),
        "TFLite float32",
    ),
    Format(
        "tflite-float16",
        "tflite",
        "float16",
        "nsfw_float16.tflite",
        _t(FLOAT16, "max 1.4e-2, mean 8.3e-4, top-1 100%"),
        "TFLite float16 weights (float32 compute on CPU)",
    ),
    Format(
        "tflite-dynamic",
        "tflite",
        "dynamic",
        "nsfw_dynamic.tflite",
        _t(DYNAMIC, "max 3.5e-2, mean 2.0e-3, top-1 100%"),
        "TFLite dynamic-range int8 weights",
    ),
    Format(
        "tflite-int8",
        "tflite",
        "int8",
        "nsfw_int8.tflite",
        _t(FULL_INT8, "max 0.18, mean 1.0e-2, top-1 100% (calibrated on the 21 samples)"),
        "TFLite full-integer int8, uint8 input and output",
    ),
)

TARGETS: tuple[str, ...] = tuple(dict.fromkeys(f.target for f in FORMATS))


def by_key(key: str) -> Format:
    for fmt in FORMATS:
        if fmt.key == key:
            return fmt
    raise UsageError(f"unknown format {key!r}: choose one of {', '.join(f.key for f in FORMATS)}")


def quantizations(target: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(f.quantization for f in FORMATS if f.target == target))


def select(target: str, quantization: str = "none", precision: str | None = None) -> Format:
    """The registry row for a --to / --quantize / --precision choice."""
    if target not in TARGETS:
        raise UsageError(f"--to {target}: choose one of {', '.join(TARGETS)} or all")
    if precision is not None and target != "mlpackage":
        raise UsageError(f"--precision applies to --to mlpackage only, not {target}")
    rows = [f for f in FORMATS if f.target == target and f.quantization == quantization]
    if not rows:
        raise UsageError(
            f"--quantize {quantization} is not available for {target}: "
            f"choose one of {', '.join(quantizations(target))}"
        )
    if precision is None:
        return rows[0]
    for row in rows:
        if row.precision == precision:
            return row
    raise UsageError(
        f"--precision {precision} with --quantize {quantization} is not offered for {target}: "
        f"choose {', '.join(str(r.precision) for r in rows)}"
    )
