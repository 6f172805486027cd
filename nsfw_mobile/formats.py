"""The one registry of model file types and output formats.

A :class:`FileType` says how a kind of model file is recognised (its suffix, or
the file that marks a model folder), which runner opens it, which function
inspects it and which engine benchmarks it. A :class:`Format` is one output of
``convert``: its file type, file name, converter, quantization, the options a
user may set for it and its validation tolerance.

The CLI choices, ``convert --to all``, dispatch by file type (``open_runner``,
``inspect``, ``bench DIR``), ``release`` and the docs read named fields of these
records; nothing else knows a suffix, and nothing indexes rows by position.
Runners, inspectors and converters are named as ``"module:attribute"`` and
imported only when used, so reading the registry stays cheap.

Tolerances compare a candidate's probabilities with the Keras reference's on
the same uint8 images. Figures measured on the pretrained model and the 21
shipped sample images (``nsfw-mobile convert --to all --out dist`` then
``nsfw-mobile validate dist/*.tflite dist/*.mlmodel dist/*.mlpackage dist/*.onnx
dist/*.ort``) are written beside each threshold. Bounds leave a margin of 2-10x over what a
correct conversion shows and stay far below what a broken one shows (wrong
scale, BGR, a perturbed weight, bad calibration: differences of 0.2 to 1).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import platform
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import MissingFileError, ModelFileError, UsageError
from .export import CALIBRATION, IO_TYPE
from .files import size_bytes
from .metadata import ArtifactMetadata

PRETRAINED = "pretrained"
"""The zoo name of the shipped model; what a name means is ``resolve.resolve_model``'s rule."""

PRETRAINED_TFLITE = Path(__file__).parent / "pretrained" / "nsfw_float32.tflite"
"""The pretrained model as float32 TFLite: predict's default, runs without TensorFlow.

A copy of ``models/nsfw_float32.tflite`` (the release of the pretrained model), so
its answers equal the Keras reference within the float32 tolerance.
"""


def resolve(reference: str):
    """Import ``"package.module:attr.sub"`` and return the attribute."""
    module_name, _, attribute = reference.partition(":")
    target = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target


@dataclass(frozen=True)
class FileType:
    """A kind of model file the toolkit reads."""

    key: str
    suffix: str
    runner: str
    """``module:Class`` of the Runner; its ``open(path, **options)`` opens a file."""
    inspector: str
    """``module:function`` returning the ``inspect`` report's fields for a file."""
    engine: str
    """What runs it in ``bench``."""
    description: str
    metadata_reader: str | None = None
    """``module:function`` returning its ``metadata.ArtifactMetadata``; None: labels only."""
    folder_marker: str | None = None
    """A folder holding this file is a model of this type (a TF.js model folder)."""
    native_system: str | None = None
    """The only system where its engine runs at speed (Core ML: Darwin); None: any."""
    threaded: bool = True
    """Its engine takes a thread count (LiteRT, TensorFlow); False: it does not (the TF.js
    CPU backend runs on one thread, Core ML picks its own compute units)."""
    engine_module: str | None = None
    """The optional package its engine comes from (ONNX Runtime: the ``onnx`` extra)."""
    batched: bool = True
    """Its runner takes a batch of images in one call (``predict --batch-size``); False: one
    image per call (LiteRT)."""
    lanes: bool = False
    """With more than one worker, ``predict`` runs it in lanes, one image per call in each
    (``Runner.lanes``), so ``--batch-size`` applies only with ``--workers 1``."""
    engine_id: str | None = None
    """The engine's short name (``ModelRef.engine``): litert, onnxruntime, tfjs, coreml;
    None: the Keras reference itself."""
    engines: tuple[str, ...] = ()
    """Keys in ENGINES of every engine that may run it, its own (``engine``) first; a file is
    validated on each of them (``validate --engine``) and ``predict`` may pick any pair that
    was."""

    def matches(self, path: Path) -> bool:
        if path.suffix.lower() == self.suffix:
            return True
        return bool(self.folder_marker) and (path / self.folder_marker).is_file()

    @property
    def runs_at_speed_here(self) -> bool:
        return self.native_system is None or platform.system() == self.native_system

    @property
    def engine_installed(self) -> bool:
        module = self.engine_module
        return module is None or importlib.util.find_spec(module) is not None

    def open_runner(self, path, *, engine: str | None = None, **options):
        """Open ``path`` on ``engine`` (a key in ENGINES; None: this type's own engine)."""
        if engine is None or engine == self.default_engine:
            return resolve(self.runner).open(path, **options)
        return resolve(engine_for(self, engine).runner).open(path, **options)

    @property
    def default_engine(self) -> str:
        """The key of the engine that runs it when none is named."""
        return self.engines[0] if self.engines else self.engine

    def can_run_on(self, engine: str) -> bool:
        """Whether ``engine`` (a key in ENGINES) may run files of this type."""
        return engine in (self.engines or (self.engine,))

    def installed_on(self, engine: str | None) -> bool:
        """Whether ``engine`` (None: its own) is installed here."""
        if engine is None or engine == self.default_engine:
            return self.engine_installed
        return engine_by_key(engine).installed

    def inspect(self, path: Path) -> dict:
        return resolve(self.inspector)(path)

    def read_metadata(self, path: Path) -> ArtifactMetadata:
        reader = self.metadata_reader
        return resolve(reader)(Path(path)) if reader else ArtifactMetadata()

    @property
    def shown(self) -> str:
        """How help texts name it: its suffix, or the file that marks its folder."""
        return self.suffix if self.folder_marker is None else f"{self.folder_marker} folder"


@dataclass(frozen=True)
class Engine:
    """A runtime that runs model files: the ``--engine`` values of ``validate`` and ``bench``.

    A file type lists the engines that may run it (``FileType.engines``, its own first). An
    engine that is a file type's own runs it through ``FileType.runner``; one that runs
    another engine's files (OpenVINO for .onnx) names its own ``runner``.
    """

    key: str
    description: str
    runner: str | None = None
    """``module:Class`` of its Runner for files it runs beside their own engine; None: it is
    the own engine of the file types that list it."""
    module: str | None = None
    """The optional package it comes from (None: a core dependency, or checked elsewhere)."""
    extra: str | None = None
    """The pip extra that installs it."""

    @property
    def installed(self) -> bool:
        return self.module is None or importlib.util.find_spec(self.module) is not None


ENGINES: tuple[Engine, ...] = (
    Engine("keras", "Keras 3 on TensorFlow (the reference)", extra="full"),
    Engine("tfjs", "TensorFlow.js, wasm backend, under Node (needs Node.js)"),
    Engine("litert", "LiteRT (ai-edge-litert) with XNNPACK"),
    Engine("coreml", "Core ML (macOS; elsewhere the toolkit's numpy executor validates)"),
    Engine(
        "onnxruntime",
        "ONNX Runtime, CPU execution provider",
        module="onnxruntime",
        extra="onnx",
    ),
    Engine(
        "openvino",
        "OpenVINO, CPU plugin, f32 inference precision (never bf16)",
        runner="nsfw_mobile.runtime.openvino_runner:OpenVINORunner",
        module="openvino",
        extra="openvino",
    ),
)
ENGINE_KEYS: tuple[str, ...] = tuple(e.key for e in ENGINES)


def engine_by_key(key: str) -> Engine:
    for engine in ENGINES:
        if engine.key == key:
            return engine
    raise UsageError(f"unknown engine {key!r}: choose one of {', '.join(ENGINE_KEYS)}")


def engine_for(file_type: FileType, key: str) -> Engine:
    """The engine ``key`` for files of ``file_type``; a usage error where it cannot run them."""
    engine = engine_by_key(key)
    if key not in file_type.engines:
        raise UsageError(
            f"{key} cannot run {file_type.suffix} files ({file_type.description}): they run on "
            f"{', '.join(file_type.engines)}"
        )
    return engine


def engine_label(file_type: FileType, key: str | None) -> str:
    """What bench, the manifest and predict call the engine of a (file, engine) pair."""
    return file_type.engine if key is None or key == file_type.default_engine else key


KERAS = FileType(
    "keras",
    ".keras",
    "nsfw_mobile.runtime.keras_runner:KerasRunner",
    "nsfw_mobile.inspect_model:inspect_keras",
    "keras",
    "Keras 3 model file",
    engines=("keras",),
)
TFJS_LAYERS = FileType(
    "tfjs",
    ".json",
    "nsfw_mobile.runtime.tfjs_runner:TFJSRunner",
    "nsfw_mobile.inspect_model:inspect_tfjs",
    "TF.js wasm (Node)",
    "TF.js layers or graph model (model.json and weight shards), run in TensorFlow.js under Node",
    metadata_reader="nsfw_mobile.tfjs:artifact_metadata",
    folder_marker="model.json",
    threaded=False,
    engine_id="tfjs",
    engines=("tfjs",),
)
TFLITE = FileType(
    "tflite",
    ".tflite",
    "nsfw_mobile.runtime.tflite_runner:TFLiteRunner",
    "nsfw_mobile.inspect_model:inspect_tflite",
    "litert",
    "TensorFlow Lite flatbuffer",
    metadata_reader="nsfw_mobile.tflite_metadata:artifact_metadata",
    batched=False,
    lanes=True,
    engine_id="litert",
    engines=("litert",),
)
MLMODEL = FileType(
    "mlmodel",
    ".mlmodel",
    "nsfw_mobile.runtime.coreml_runner:CoreMLRunner",
    "nsfw_mobile.inspect_model:inspect_coreml",
    "Core ML",
    "Core ML neural network",
    metadata_reader="nsfw_mobile.runtime.coreml_spec:artifact_metadata",
    native_system="Darwin",
    threaded=False,
    engine_id="coreml",
    engines=("coreml",),
)
MLPACKAGE = FileType(
    "mlpackage",
    ".mlpackage",
    "nsfw_mobile.runtime.coreml_runner:CoreMLRunner",
    "nsfw_mobile.inspect_model:inspect_coreml",
    "Core ML",
    "Core ML ML Program package (a folder)",
    metadata_reader="nsfw_mobile.runtime.coreml_spec:artifact_metadata",
    native_system="Darwin",
    threaded=False,
    engine_id="coreml",
    engines=("coreml",),
)
ONNX = FileType(
    "onnx",
    ".onnx",
    "nsfw_mobile.runtime.onnx_runner:OnnxRunner",
    "nsfw_mobile.inspect_model:inspect_onnx",
    "onnxruntime",
    "ONNX model, run in ONNX Runtime (CPU execution provider) or OpenVINO (CPU plugin)",
    metadata_reader="nsfw_mobile.onnx_file:artifact_metadata",
    engine_module="onnxruntime",
    lanes=True,
    engine_id="onnxruntime",
    engines=("onnxruntime", "openvino"),
)
ORT = FileType(
    "ort",
    ".ort",
    "nsfw_mobile.runtime.onnx_runner:OnnxRunner",
    "nsfw_mobile.inspect_model:inspect_onnx",
    "onnxruntime",
    "ONNX Runtime's own ORT format (what ORT Mobile's reduced builds load)",
    metadata_reader="nsfw_mobile.onnx_file:artifact_metadata",
    engine_module="onnxruntime",
    lanes=True,
    engine_id="onnxruntime",
    engines=("onnxruntime",),
)
FILE_TYPES: tuple[FileType, ...] = (KERAS, TFJS_LAYERS, TFLITE, MLMODEL, MLPACKAGE, ONNX, ORT)


def file_type_of(path: str | os.PathLike) -> FileType:
    """The file type of a model file or folder, by its suffix or the file that marks it.

    Only paths: what a name such as ``mid`` means is ``resolve.resolve_model``'s rule."""
    path = Path(path)
    for file_type in FILE_TYPES:
        if path.suffix.lower() == file_type.suffix:
            return file_type
    for file_type in FILE_TYPES:
        if file_type.matches(path):
            return file_type
    expected = ", ".join(
        f.suffix if f.folder_marker is None else f"{f.suffix} ({f.folder_marker})"
        for f in FILE_TYPES
    )
    raise ModelFileError(
        f"{path}: unknown model type {path.suffix or '(no suffix)'!r}; expected {expected}"
    )


def is_model_path(path: Path) -> bool:
    try:
        file_type_of(path)
    except ModelFileError:
        return False
    return True


def _listed_as_model(entry: Path) -> bool:
    """A model in a folder listing. A type known by its folder (TF.js: a folder holding
    model.json) is listed as that folder, so a loose .json file (a release's
    manifest.json) is not a model."""
    try:
        file_type = file_type_of(entry)
    except ModelFileError:
        return False
    marker = file_type.folder_marker
    return not (marker and entry.is_file() and entry.name != marker)


def model_files_in(folder: str | os.PathLike) -> list[Path]:
    """The model files and model folders directly inside ``folder``, sorted.

    Hidden entries are skipped, among them the ``.nsfw-mobile-partial-*`` and
    ``.nsfw-mobile-old-*`` entries an interrupted write may leave behind (see atomic.py).
    """
    return sorted(
        entry
        for entry in Path(folder).iterdir()
        if not entry.name.startswith(".") and _listed_as_model(entry)
    )


def read_metadata(path: str | os.PathLike) -> ArtifactMetadata:
    """The metadata of any model file the toolkit reads (empty fields where it has none), by
    the reader that lives beside its format."""
    return file_type_of(path).read_metadata(Path(path))


def inspect_file(path: str | os.PathLike) -> dict:
    """Describe any model file the toolkit reads; ModelFileError for corrupt or foreign files."""

    path = Path(path)
    if not path.exists():
        raise MissingFileError(path)
    file_type = file_type_of(path)
    report = {"path": str(path), "size_bytes": size_bytes(path), "format": file_type.key}
    report.update(file_type.inspect(path))
    return report


def file_types_help() -> str:
    """The model files every command takes, for help texts: from the rows above."""
    return ", ".join(f"{f.shown} ({f.key})" for f in FILE_TYPES)


def engines_help() -> str:
    """The engines that run each file type, for help texts."""
    return ", ".join(f"{f.engine} for {f.shown}" for f in FILE_TYPES)


def batched_help() -> str:
    """Which file types take --batch-size, for help texts and the refusal."""
    batched = [f.shown for f in FILE_TYPES if f.batched]
    single = [f.shown for f in FILE_TYPES if not f.batched]
    lanes = [f.shown for f in FILE_TYPES if f.batched and f.lanes]
    return (
        f"{', '.join(batched)} take batches ({', '.join(lanes)} only with --workers 1: more "
        f"workers run them in lanes, one image per call); {', '.join(single)} take one image "
        "per call in each lane"
    )


# ------------------------------------------------------------------ output formats


@dataclass(frozen=True)
class Tolerance:
    """How far a faithful artefact's probabilities may be from the reference's.

    Float32 formats get fixed bounds. A reduced-precision format names the
    ``precision`` it computes in (``precision.PRECISIONS``); the validator runs
    the reference itself at that precision on the same images, and the
    artefact may differ from the reference by ``multiplier`` times what that
    emulation differs (its *sensitivity*), but never less than the floors. A
    model that a format's rounding moves a lot gets room in proportion; a
    well-conditioned one is held tight; a broken conversion (wrong scale, BGR,
    a changed weight, bad calibration) differs by far more than either.

    Top-1 agreement counts only images whose reference margin between its two
    best classes is more than twice the difference allowed on that image: a
    flip inside that margin is a tie a faithful artefact may show, and is
    reported as such.
    """

    max_floor: float
    mean_floor: float | None
    min_agreement: float
    """Share of non-tie images whose top-1 label must equal the reference's."""
    precision: str | None = None
    """Emulated by ``precision.emulate``; None: float32, the floors are the bounds."""
    multiplier: float = 1.0
    measured: str = ""
    """What we measured on the pretrained model (docs only)."""

    @property
    def mode(self) -> str:
        return "strict" if self.precision is None else "relative"

    def bounds(self, sensitivity_max: float = 0.0, sensitivity_mean: float = 0.0):
        """(max, mean) bounds for a reference with this emulated sensitivity."""
        if self.precision is None:
            return self.max_floor, self.mean_floor
        mean = (
            None
            if self.mean_floor is None
            else max(self.mean_floor, self.multiplier * sensitivity_mean)
        )
        return max(self.max_floor, self.multiplier * sensitivity_max), mean

    def widened(self, extra: float) -> Tolerance:
        """This tolerance with ``extra`` added to its floors: the end-to-end bound against the
        original of an imported source (its import's own measured difference on top)."""
        return dataclasses.replace(
            self,
            max_floor=self.max_floor + extra,
            mean_floor=None if self.mean_floor is None else self.mean_floor + extra,
        )

    def allowance(self, per_image_sensitivity):
        """The difference allowed on each image (for the tie rule)."""
        import numpy as np

        per_image = np.asarray(per_image_sensitivity, np.float64)
        if self.precision is None:
            return np.full(per_image.shape, self.max_floor)
        return np.maximum(self.max_floor, self.multiplier * per_image)

    def describe(self) -> str:
        if self.precision is None:
            return f"max <= {self.max_floor:g}, top-1 {self.min_agreement:.0%}"
        mean = (
            f", mean <= max({self.mean_floor:g}, {self.multiplier:g}x)" if self.mean_floor else ""
        )
        return (
            f"max <= max({self.max_floor:g}, {self.multiplier:g}x {self.precision}){mean}, "
            f"top-1 {self.min_agreement:.0%} of non-ties"
        )


OPTIONS = {option.name: option for option in (CALIBRATION, IO_TYPE)}
"""The converters' options (defined beside them in ``export``); the rows say who takes which."""
DEFAULT_STEMS = ("NSFW", "nsfw")
"""File name stems of the defaults (NSFW.mlmodel, nsfw_int8.tflite); --name replaces them."""
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
DEFAULT_PRECISION = "float16"
"""Compute precision of an ML Program when none is asked for."""


@dataclass(frozen=True)
class Format:
    key: str
    file_type: FileType
    quantization: str
    filename: str
    tolerance: Tolerance
    summary: str
    converter: str
    """``module:function`` called as ``converter(source, out, quantization=..., ...)``."""
    precision: str | None = None
    """Compute precision of an ML Program; None elsewhere."""
    options: tuple[str, ...] = ()
    """Names in OPTIONS that this format's converter takes."""

    @property
    def target(self) -> str:
        return self.file_type.key

    def filename_for(self, name: str | None = None) -> str:
        """The file name, with ``name`` in place of the default stem (NSFW / nsfw)."""
        if name is None:
            return self.filename
        if not NAME_PATTERN.fullmatch(name):
            raise UsageError(
                f"--name {name!r}: use letters, digits, '-', '_' and '.' (it names the files)"
            )
        stem = next(s for s in DEFAULT_STEMS if self.filename.startswith(s))
        return name + self.filename[len(stem) :]

    @property
    def suffix(self) -> str:
        return self.file_type.suffix

    def convert(self, source, out: Path, **options):
        """Run this format's converter; ``options`` are the OPTIONS it takes."""
        unknown = set(options) - set(self.options)
        if unknown:
            raise UsageError(f"{self.key} takes no {', '.join(sorted(unknown))}")
        if self.precision is not None:
            options["precision"] = self.precision
        return resolve(self.converter)(source, out, quantization=self.quantization, **options)


def _t(base: Tolerance, measured: str) -> Tolerance:
    return dataclasses.replace(base, measured=measured)


# Bounds, floors and multipliers. The emulation reproduces a faithful artefact's
# difference within 0.8-1.05x on the pretrained model (see precision.py), so twice the
# emulated sensitivity leaves a margin; full-integer artefacts get three times it, as
# their activation ranges come from calibration images other than the validation ones.
# Floors hold where a model barely moves at the format's precision: below them the
# engines' own arithmetic (summation order, float16 kernels) is what shows.
STRICT = Tolerance(1e-4, None, 1.0)
FLOAT16 = Tolerance(2e-3, 2e-4, 1.0, "float16-weights", 2.0)
FLOAT16_UNFOLDED = dataclasses.replace(FLOAT16, precision="float16-weights-unfolded")
FLOAT16_COMPUTE = dataclasses.replace(FLOAT16, precision="float16-compute")
INT8_WEIGHTS = Tolerance(5e-3, 5e-4, 1.0, "int8-weights-float16-compute", 2.0)
DYNAMIC = Tolerance(5e-3, 5e-4, 1.0, "int8-dynamic-range", 2.0)
# A full-integer file takes its activation ranges from its calibration images, so on an
# image the emulation calls decisive it may still land on the other side of a narrow margin:
# a 2-epoch user model calibrated on other images flipped 1 of 25 decisive images
# (tests/test_own_model.py); the pretrained and the tiny test model flip none.
FULL_INT8 = Tolerance(2e-2, 2e-3, 0.95, "int8-full", 3.0)
UINT8_WEIGHTS = Tolerance(5e-3, 5e-4, 1.0, "uint8-weights-per-tensor", 2.0)

COREML_CONVERTER = "nsfw_mobile.export.coreml:keras2coreml"
TFJS_CONVERTER = "nsfw_mobile.export.tfjs:keras2tfjs"
TFLITE_CONVERTER = "nsfw_mobile.export.tflite:keras2tflite"
ONNX_CONVERTER = "nsfw_mobile.export.onnx:keras2onnx"
ORT_CONVERTER = "nsfw_mobile.export.onnx:keras2ort"

FORMATS: tuple[Format, ...] = (
    Format(
        "mlmodel",
        MLMODEL,
        "none",
        "NSFW.mlmodel",
        _t(STRICT, "max 5.4e-7, mean 6.1e-8, top-1 100%"),
        "Core ML neural network, iOS 13+, float32 weights",
        COREML_CONVERTER,
    ),
    Format(
        "mlmodel-float16",
        MLMODEL,
        "float16",
        "NSFW_float16.mlmodel",
        _t(FLOAT16, "max 1.4e-2, mean 8.3e-4, top-1 100%"),
        "Core ML neural network, iOS 13+, float16 weights",
        COREML_CONVERTER,
    ),
    Format(
        "mlpackage",
        MLPACKAGE,
        "none",
        "NSFW.mlpackage",
        _t(FLOAT16_COMPUTE, "max 9.5e-3, mean 6.7e-4, top-1 100% (float16 emulated)"),
        "Core ML ML Program, iOS 15+, float16 compute",
        COREML_CONVERTER,
        precision="float16",
    ),
    Format(
        "mlpackage-float32",
        MLPACKAGE,
        "none",
        "NSFW_float32.mlpackage",
        _t(STRICT, "max 5.4e-7, mean 6.1e-8, top-1 100%"),
        "Core ML ML Program, iOS 15+, float32 compute",
        COREML_CONVERTER,
        precision="float32",
    ),
    Format(
        "mlpackage-int8",
        MLPACKAGE,
        "int8",
        "NSFW_int8.mlpackage",
        _t(INT8_WEIGHTS, "max 1.8e-2, mean 1.3e-3, top-1 100% (float16 emulated)"),
        "Core ML ML Program, iOS 16+, int8 weights, float16 compute",
        COREML_CONVERTER,
        precision="float16",
    ),
    Format(
        "tflite-float32",
        TFLITE,
        "none",
        "nsfw_float32.tflite",
        _t(STRICT, "max 4.5e-7, mean 4.9e-8, top-1 100%"),
        "TFLite float32",
        TFLITE_CONVERTER,
    ),
    Format(
        "tflite-float16",
        TFLITE,
        "float16",
        "nsfw_float16.tflite",
        _t(FLOAT16, "max 1.4e-2, mean 8.3e-4, top-1 100%"),
        "TFLite float16 weights (float32 compute on CPU)",
        TFLITE_CONVERTER,
    ),
    Format(
        "tflite-dynamic",
        TFLITE,
        "dynamic",
        "nsfw_dynamic.tflite",
        _t(DYNAMIC, "max 3.5e-2, mean 2.0e-3, top-1 100%"),
        "TFLite dynamic-range int8 weights",
        TFLITE_CONVERTER,
    ),
    Format(
        "tflite-int8",
        TFLITE,
        "int8",
        "nsfw_int8.tflite",
        _t(FULL_INT8, "max 0.18, mean 1.0e-2, top-1 100% (calibrated on the 21 samples)"),
        "TFLite full-integer int8, uint8 input and output",
        TFLITE_CONVERTER,
        options=("calibration", "io_type"),
    ),
    Format(
        "tfjs-float32",
        TFJS_LAYERS,
        "none",
        "nsfw_tfjs_float32",
        _t(STRICT, "max 1.6e-6, mean 7.5e-8, top-1 100% (tfjs 4.22 wasm backend, Node)"),
        "TF.js layers model folder, float32 weights",
        TFJS_CONVERTER,
    ),
    Format(
        "tfjs-float16",
        TFJS_LAYERS,
        "float16",
        "nsfw_tfjs_float16",
        _t(FLOAT16_UNFOLDED, "max 4.4e-3, mean 2.4e-4, top-1 100% (tfjs 4.22 wasm backend, Node)"),
        "TF.js layers model folder, float16 weights (float32 compute)",
        TFJS_CONVERTER,
    ),
    Format(
        "tfjs-uint8",
        TFJS_LAYERS,
        "uint8",
        "nsfw_tfjs_uint8",
        _t(
            UINT8_WEIGHTS,
            "pretrained max 1.2e-6 (it shipped as uint8; wasm backend); float-trained models "
            "max 0.171-0.257, mean 7.7e-3-9.0e-3, top-1 100% (cpu backend)",
        ),
        "TF.js layers model folder, uint8 kernels (affine per tensor), float32 vectors",
        TFJS_CONVERTER,
    ),
    Format(
        "onnx-float32",
        ONNX,
        "none",
        "nsfw_float32.onnx",
        _t(STRICT, "max 1.1e-6, mean 6.1e-8, top-1 100% (ONNX Runtime 1.32, CPU)"),
        "ONNX float32, opset 13, uint8 RGB input (pixels / 255 inside)",
        ONNX_CONVERTER,
    ),
    Format(
        "onnx-float16",
        ONNX,
        "float16",
        "nsfw_float16.onnx",
        _t(FLOAT16, "max 1.2e-2, mean 5.5e-4, top-1 100% (ONNX Runtime 1.32, CPU)"),
        "ONNX float16 kernels (cast to float32 at load), uint8 RGB input",
        ONNX_CONVERTER,
    ),
    Format(
        "onnx-int8",
        ONNX,
        "int8",
        "nsfw_int8.onnx",
        _t(FULL_INT8, "max 0.19, mean 1.1e-2, top-1 100% (calibrated on the 21 samples)"),
        "ONNX static int8 QDQ (per-channel int8 weights, uint8 activations), uint8 RGB input",
        ONNX_CONVERTER,
        options=("calibration",),
    ),
    Format(
        "ort-int8",
        ORT,
        "int8",
        "nsfw_int8.ort",
        _t(FULL_INT8, "max 0.19, mean 1.1e-2, top-1 100% (the int8 ONNX model's figures)"),
        "ORT format of the int8 ONNX model (ORT Mobile reduced builds)",
        ORT_CONVERTER,
        options=("calibration",),
    ),
)

# Bounds of a format on an engine other than its file type's own, where they are stated apart
# (the engine x file pairs ``validate --engine`` judges). Each is the format's own rule,
# relative to the model's own sensitivity at the format's precision (the numbers above are
# not changed); ``measured`` is what the pair showed on the pretrained model. OpenVINO runs
# with an explicit f32 inference precision (runtime/openvino_runner.py).
ENGINE_TOLERANCES: dict[tuple[str, str], Tolerance] = {
    ("openvino", "onnx-float32"): _t(
        STRICT, "max 1.4e-6, mean 7.7e-8, top-1 100% (OpenVINO 2026.4, CPU, f32)"
    ),
    ("openvino", "onnx-float16"): _t(
        FLOAT16, "max 1.2e-2, mean 5.5e-4, top-1 100% (OpenVINO 2026.4, CPU, f32)"
    ),
    ("openvino", "onnx-int8"): _t(
        FULL_INT8,
        "max 0.20, mean 1.9e-2, top-1 100% (OpenVINO 2026.4; within 3/255 of ONNX Runtime)",
    ),
}


def tolerance_for(fmt: Format, engine: str | None = None) -> Tolerance:
    """The tolerance of ``fmt`` run on ``engine`` (None or its own engine: the format's)."""
    if engine is None or engine == fmt.file_type.default_engine:
        return fmt.tolerance
    engine_for(fmt.file_type, engine)  # a pair that cannot run is a usage error
    return ENGINE_TOLERANCES.get((engine, fmt.key), fmt.tolerance)


def engines_of(fmt: Format) -> tuple[str, ...]:
    """Every engine that may run files of ``fmt`` (its files are validated on each)."""
    return fmt.file_type.engines or (fmt.file_type.default_engine,)


def engine_pairs(
    paths: Iterable, engine: str | None, *, skip_unrunnable: bool = False
) -> tuple[list, list[str | None], list[str]]:
    """(paths, engines) pairs for an ``--engine`` value, and the pairs left out, in words.

    ``paths``: files, or resolved models (``resolve.ModelRef``: its ``file_type`` and
    ``label`` are used), given back as they came. None: each file on its own engine. A key:
    each file on that engine (a file it cannot run is a usage error, or left out with
    ``skip_unrunnable``). 'all': each file on every engine that may run it and is installed
    here (the others are left out).
    """
    chosen_paths: list = []
    chosen: list[str | None] = []
    left_out: list[str] = []
    for item in paths:
        if engine is None:
            chosen_paths.append(item)
            chosen.append(None)
            continue
        file_type = getattr(item, "file_type", None) or file_type_of(item)
        path = getattr(item, "label", None) or str(item)
        if engine == "all":
            keys = file_type.engines or (file_type.default_engine,)
        elif not file_type.can_run_on(engine):
            if not skip_unrunnable:
                engine_for(file_type, engine)  # raises, naming the engines that run it
            left_out.append(f"{path}: {engine} cannot run {file_type.suffix} files")
            continue
        else:
            keys = (engine,)
        for key in keys:
            if key is not None and not file_type.installed_on(key):
                extra = engine_by_key(key).extra
                left_out.append(f"{path} on {key}: pip install 'nsfw-mobile[{extra}]'")
                continue
            chosen_paths.append(item)
            chosen.append(key)
    return chosen_paths, chosen, left_out


TARGETS: tuple[str, ...] = tuple(dict.fromkeys(f.target for f in FORMATS))
QUANTIZATIONS: tuple[str, ...] = tuple(dict.fromkeys(f.quantization for f in FORMATS))
"""Every --quantize value some target offers."""
PRECISIONS: tuple[str, ...] = tuple(dict.fromkeys(f.precision for f in FORMATS if f.precision))
"""Every --precision (compute precision) some ML Program offers."""


def by_key(key: str) -> Format:
    for fmt in FORMATS:
        if fmt.key == key:
            return fmt
    raise UsageError(f"unknown format {key!r}: choose one of {', '.join(f.key for f in FORMATS)}")


def quantizations(target: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(f.quantization for f in FORMATS if f.target == target))


def select(target: str, quantization: str = "none", precision: str | None = None) -> Format:
    """The registry row for a --to / --quantize / --precision choice; exactly one or an error."""
    if target not in TARGETS:
        raise UsageError(f"--to {target}: choose one of {', '.join(TARGETS)} or all")
    rows = [f for f in FORMATS if f.target == target and f.quantization == quantization]
    if not rows:
        raise UsageError(
            f"--quantize {quantization} is not available for {target}: "
            f"choose one of {', '.join(quantizations(target))}"
        )
    precisions = {row.precision for row in rows} - {None}
    if precision is not None and not precisions:
        raise UsageError(
            f"--precision applies to --to mlpackage only (ML Programs); {target} has no "
            "compute precision setting"
        )
    wanted = precision or (DEFAULT_PRECISION if precisions else None)
    matching = [row for row in rows if row.precision == wanted]
    if len(matching) != 1:
        raise UsageError(
            f"--precision {wanted} with --quantize {quantization} is not offered for {target}: "
            f"choose {', '.join(sorted(precisions))}"
        )
    return matching[0]


def check_options(formats: Iterable[Format], **given) -> None:
    """Refuse an option that none of the chosen formats takes, before any work.

    A value of None is an option not given; any other value is one the user chose, the
    default included, and is refused where no chosen format would use it.
    """
    formats = list(formats)
    for name, value in given.items():
        option = OPTIONS[name]
        if value is None:
            continue
        if option.choices and value not in option.choices:
            raise UsageError(f"{option.flag} {value}: choose one of {', '.join(option.choices)}")
        if not any(name in f.options for f in formats):
            takers = [f.key for f in FORMATS if name in f.options]
            raise UsageError(
                f"{option.flag} applies to {option.applies_to} only: add --to {takers[0]}"
            )


def engines_markdown_table() -> str:
    """The engine x file table of docs/formats.md, from the registry."""
    types = list(FILE_TYPES)
    lines = [
        "| engine | " + " | ".join(f"`{t.suffix}`" for t in types) + " | install |",
        "|---|" + "---|" * len(types) + "---|",
    ]
    for engine in ENGINES:
        cells = []
        for t in types:
            if not t.can_run_on(engine.key):
                cells.append("-")
            else:
                cells.append("yes" if t.default_engine == engine.key else "yes (also)")
        install = f"`nsfw-mobile[{engine.extra}]`" if engine.extra else "the core package"
        lines.append(f"| {engine.key}: {engine.description} | {' | '.join(cells)} | {install} |")
    return "\n".join(lines)


def markdown_table() -> str:
    """The formats table of docs/formats.md, from the registry."""
    lines = ["| key | file | what | tolerance |", "|---|---|---|---|"]
    for f in FORMATS:
        lines.append(f"| {f.key} | {f.filename} | {f.summary} | {f.tolerance.describe()} |")
    return "\n".join(lines)


def format_of(path: str | os.PathLike) -> Format:
    """The registry row an artefact was made as, from the metadata convert wrote."""
    properties = read_metadata(path).properties
    target = properties.get("target")
    if target in TARGETS:
        return select(
            target,
            properties.get("quantization", "none"),
            properties.get("compute_precision") if target == "mlpackage" else None,
        )
    raise UsageError(
        f"{path}: no nsfw-mobile metadata says how it was made, so its tolerance is unknown; "
        "pass --format KEY (see `nsfw-mobile formats`)"
    )


def formats_help() -> str:
    """The output formats, for help texts: every key of the rows above."""
    return ", ".join(f.key for f in FORMATS)


def targets_help() -> str:
    return ", ".join(TARGETS)
