"""One way to name a model: what the user gave (a zoo name, a file, a folder, a release)
becomes one :class:`ModelRef`, by one ordered rule set, in every command, the server, Ray
workers and the library.

Public entry (``predict``, ``serve``, Ray workers, ``nsfw_mobile.open_runner``)::

    from nsfw_mobile.resolve import RUN, resolve_model

    ref = resolve_model("mid", use=RUN)  # or a Path, "./mid", "models/", None
    print(ref.why)  # what it is and why (--verbose, --json: ref.to_dict())
    with ref.open_runner() as runner:
        ...

A use says what the caller does with the model: ``RUN`` classifies images (predict,
evaluate, serve, Ray), ``MEASURE`` times or checks files (bench, validate's candidates,
inspect), ``SOURCE`` converts or judges from the Keras model (convert, release, train
--backbone, validate --reference).

The rules, in order (the first that applies decides):

1. **No model** (None): the default for the use. RUN: the pretrained model as the float32
   TFLite file the package ships (``formats.PRETRAINED_TFLITE``); MEASURE and SOURCE: the
   pretrained zoo model's Keras reference.
2. **A zoo name**: a ``str`` without a path separator that is a zoo model's key or alias
   (``nsfw-mobile models``) is that zoo model. A ``Path``, ``./mid`` or ``mid/`` is never a
   name, so a user's folder is never replaced by a zoo model of the same name. RUN: the
   fastest validated file of the release of that model kept in the toolkit's cache when
   there is one (``nsfw-mobile models --fetch NAME --release`` makes it; never a side
   effect of predict), else its Keras reference; MEASURE and SOURCE: its Keras reference.
3. **A missing path**: ``errors.MissingFileError`` (a usage error, exit code 2).
4. **A release folder** (it holds ``manifest.json``): RUN: its fastest validated file on
   this machine (``engine_choice``: measured once, remembered); MEASURE: the files its
   manifest marks releasable; SOURCE: refused, naming the source the release records.
5. **Otherwise the registry's file type** (``formats.file_type_of``: a suffix, or a folder
   holding ``model.json``). Under MEASURE a folder that is no model is the models in it.
   An unknown type is a ``ModelFileError``.

``ModelRef.engine`` names the engine that runs it (``litert``, ``onnxruntime``, ``openvino``,
``tfjs``, ``coreml``; None for Keras): a release's choice is an (engine, file) pair, and
``open_runner`` opens the file on that engine, so the engine choice and a server share one object.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import zoo
from .errors import MissingFileError, NsfwMobileError, UsageError
from .formats import (
    KERAS,
    ONNX,
    PRETRAINED_TFLITE,
    TFJS_LAYERS,
    FileType,
    file_type_of,
    model_files_in,
)
from .manifest import MANIFEST, read_manifest, releasable_files

RUN = "run"
MEASURE = "measure"
SOURCE = "source"
USES = (RUN, MEASURE, SOURCE)

SOURCE_TYPES = (KERAS, TFJS_LAYERS, ONNX)
"""File types that load as a Keras model (the SOURCE of convert, release, validate): an
``.onnx`` classifier is imported (``onnx_import``) with its declared preprocessing."""

RULES_HELP = (
    "a zoo model's name (see `nsfw-mobile models`; a path such as ./mid or mid/ is never a "
    "name), a model file or a release folder"
)
"""How help texts name what --model takes (the rule above, in one line)."""


def zoo_release_folder(model: zoo.ZooModel) -> Path:
    """Where ``nsfw-mobile models --fetch NAME --release`` keeps a zoo model's release."""
    return model.release_folder


def is_name(given) -> bool:
    """Rule 2's test: only a ``str`` without a path separator can be a zoo name."""
    return (
        isinstance(given, str)
        and "/" not in given
        and os.sep not in given
        and (os.altsep is None or os.altsep not in given)
        and zoo.find(given) is not None
    )


@dataclass(frozen=True)
class ModelRef:
    """A model, resolved: what it is, why, and how to open it."""

    given: str | None
    """What the user named, as text (None: nothing)."""
    use: str
    kind: str
    """default, zoo, file, release or folder."""
    why: str
    """One line: what runs and why (``--verbose``)."""
    path: Path | None = None
    """The file or folder to open; None: the zoo model's Keras reference."""
    zoo_model: zoo.ZooModel | None = None
    file_type: FileType | None = None
    members: tuple[ModelRef, ...] = ()
    """MEASURE of a folder or a release: one reference per file."""
    excluded: tuple[str, ...] = ()
    """A release's entries it does not promise (MEASURE)."""
    allow_unsafe: bool = False
    engine_override: str | None = None
    """The key of an engine other than the file type's own that runs it (``formats.ENGINES``:
    OpenVINO for an .onnx file, where a release's engine choice picked that pair)."""
    preprocessing: tuple[str, ...] = ()
    """``--preprocess`` items for an ``.onnx`` source (``models.onnx_source``)."""
    details: tuple[str, ...] = ()
    """More lines for --verbose (the engine choice's figures)."""
    log: Callable[[str], None] | None = field(default=None, compare=False, repr=False)
    """Where a zoo model's first fetch reports (the command line: stderr)."""

    @property
    def engine(self) -> str | None:
        """The engine that runs it: litert, onnxruntime, openvino, tfjs, coreml; None: Keras."""
        if self.file_type is None or self.use == SOURCE:
            return None
        return self.engine_override or self.file_type.engine_id

    @property
    def label(self) -> str:
        """How reports name it: its path, else the zoo name as given (or its key)."""
        if self.path is not None:
            return str(self.path)
        return self.given if is_name(self.given) else self.zoo_model.key

    @property
    def spec(self) -> str:
        """Text that resolves to the same file in another process (a bench child, a
        worker): a path always carries a separator, so it is never taken for a name."""
        if self.path is None:
            return self.zoo_model.key
        text = str(self.path)
        return text if "/" in text or os.sep in text else os.path.join(".", text)

    @property
    def parts(self) -> tuple[ModelRef, ...]:
        """What MEASURE measures: the members of a folder or release, else itself."""
        return self.members or (self,)

    def to_dict(self) -> dict:
        return {
            "given": self.given,
            "use": self.use,
            "kind": self.kind,
            "model": self.label,
            "zoo": self.zoo_model.key if self.zoo_model else None,
            "file_type": self.file_type.key if self.file_type else None,
            "engine": self.engine,
            "why": self.why,
            "members": [m.label for m in self.members],
            "excluded": list(self.excluded),
        }

    def explain(self) -> list[str]:
        """What --verbose prints: the line, then the details."""
        return [f"model: {self.why}", *self.details]

    def fetch(self) -> None:
        """A zoo model whose weights are not in the cache yet: fetch them now."""
        named = self.zoo_model
        if self.path is None and named is not None and named.status == "not fetched":
            named.model_json(log=self.log)

    def open_runner(self, *, num_threads: int | None = None, **options):
        """A Runner for it (close it, or use ``with``). SOURCE: the Keras model itself."""
        if self.members:
            raise UsageError(
                f"{self.given}: {len(self.members)} models; a runner opens one of them"
            )
        if self.use == SOURCE and self.path is not None:  # a TF.js source runs in Keras
            from .runtime.keras_runner import KerasRunner

            return KerasRunner(self.load_source(), **options)
        self.fetch()
        target = self.zoo_model.key if self.path is None else self.path
        if self.preprocessing:
            options["preprocessing"] = list(self.preprocessing)
        return self.file_type.open_runner(
            target,
            engine=self.engine_override,
            num_threads=num_threads,
            allow_unsafe=self.allow_unsafe,
            **options,
        )

    def load_source(self):
        """The Keras model and its contract (``models.SourceModel``), for convert and
        validation: a zoo model, a .keras file or a TF.js model."""
        from .models import load_source

        self.fetch()
        target = self.zoo_model.key if self.path is None else self.path
        return load_source(
            target, allow_unsafe=self.allow_unsafe, preprocessing=list(self.preprocessing) or None
        )


def resolve_model(
    given: str | os.PathLike | None = None,
    use: str = RUN,
    *,
    unsafe: bool = False,
    log: Callable[[str], None] | None = None,
    preprocessing=(),
) -> ModelRef:
    """``given`` as a :class:`ModelRef`, by the rules of the module doc.

    ``unsafe``: the user allows .keras Lambda layers (--unsafe); refused for anything
    that is not a .keras file. ``log``: where a zoo model's first fetch reports.
    ``preprocessing``: ``--preprocess`` items, for an ``.onnx`` file only.
    """
    if use not in USES:
        raise ValueError(f"use={use!r}: one of {', '.join(USES)}")
    ref = _resolve(given, use)
    ref = replace(ref, allow_unsafe=unsafe, log=log, preprocessing=tuple(preprocessing or ()))
    if ref.preprocessing and (ref.path is None or ref.path.suffix.lower() != ".onnx"):
        raise UsageError(
            f"--preprocess applies to .onnx source models only; {ref.label} is not one: "
            "drop --preprocess"
        )
    if unsafe and (ref.path is None or ref.file_type is not KERAS):
        raise UsageError(
            f"--unsafe applies to .keras model files only (their Lambda layers run code); "
            f"{ref.label} is not one: drop --unsafe"
        )
    if use == RUN and ref.path is None:
        _need_tensorflow_for(ref)
    return ref


def _resolve(given, use: str) -> ModelRef:
    text = None if given is None else str(given)
    if given is None:  # rule 1
        if use == RUN:
            default = _file(PRETRAINED_TFLITE, None, use, "the default model (the pretrained "
                            "model as the float32 TFLite file the package ships)")  # fmt: skip
            return replace(default, kind="default", zoo_model=zoo.DEFAULT)
        return _zoo_reference(None, use, zoo.DEFAULT, "the default model")
    if is_name(given):  # rule 2
        named = zoo.find(given)
        if use == RUN:
            released = _cached_release(named)
            if released is not None:
                return _fastest(released, given, use, zoo_model=named)
            return _zoo_reference(
                text, use, named, f"no release of it is cached ({_release_hint(named)})"
            )
        return _zoo_reference(text, use, named, "a zoo model's name")
    path = Path(given)
    if not path.exists():  # rule 3
        raise MissingFileError(given)
    if path.is_dir() and (path / MANIFEST).is_file():  # rule 4
        if use == RUN:
            return _fastest(path, text, use)
        if use == SOURCE:
            source = read_manifest(path)["source"]
            named = zoo.by_sha256(source["sha256"])
            raise UsageError(
                f"{path} is a release folder, not a source model: it was made from "
                f"{source.get('file', '?')} (SHA-256 {source['sha256'][:16]}...): give "
                + (named.key if named else "that model")
            )
        files, excluded = releasable_files(path)
        members = tuple(
            _file(f, text, use, f"releasable file of the release {path}") for f in files
        )
        return ModelRef(
            text, use, "release", f"{path}: the {len(members)} files its manifest marks releasable",
            path=path, members=members, excluded=tuple(excluded),
        )  # fmt: skip
    if use == MEASURE and path.is_dir() and not _is_model(path):  # rule 5, a folder of models
        members = tuple(_file(f, text, use, f"model file in {path}") for f in model_files_in(path))
        return ModelRef(
            text, use, "folder", f"{path}: the {len(members)} model files in it",
            path=path, members=members,
        )  # fmt: skip
    return _file(path, text, use, "a model file")  # rule 5


def _is_model(path: Path) -> bool:
    try:
        file_type_of(path)
    except NsfwMobileError:
        return False
    return True


def _file(path: Path, given, use: str, why: str) -> ModelRef:
    file_type = file_type_of(path)
    shown = given if given is not None and Path(given) == path else path  # ./mid, not mid
    return ModelRef(
        given, use, "file", f"{shown} ({file_type.key}): {why}", path=path, file_type=file_type
    )


def _zoo_reference(given, use: str, named: zoo.ZooModel, why: str) -> ModelRef:
    return ModelRef(
        given, use, "default" if given is None else "zoo",
        f"{named.key}'s Keras reference: {why}", zoo_model=named, file_type=KERAS,
    )  # fmt: skip


def _fastest(folder: Path, given, use: str, zoo_model=None) -> ModelRef:
    from .engine_choice import fastest_here  # numpy and the engines: only for a release

    choice = fastest_here(folder)
    of = f"{zoo_model.key}'s cached release" if zoo_model else "the release"
    return ModelRef(
        None if given is None else str(given), use, "zoo" if zoo_model else "release",
        f"{choice.path.name} ({choice.engine}), the fastest validated model of {of} on "
        "this machine",
        path=choice.path, zoo_model=zoo_model, file_type=file_type_of(choice.path),
        engine_override=choice.engine_key,
        details=(f"  release folder: {folder}", *choice.explain()),
    )  # fmt: skip


def _cached_release(named: zoo.ZooModel) -> Path | None:
    """The zoo model's release in the cache, when there is one made from its weights."""
    folder = zoo_release_folder(named)
    if not (folder / MANIFEST).is_file():
        return None
    if read_manifest(folder)["source"]["sha256"] != named.sha256:
        return None  # made from other weights: not this model
    return folder


def _release_hint(named: zoo.ZooModel) -> str:
    return f"nsfw-mobile models --fetch {named.aliases[0]} --release makes one"


def _need_tensorflow_for(ref: ModelRef) -> None:
    """A zoo model runs as its Keras reference: say so when TensorFlow is missing."""
    if importlib.util.find_spec("tensorflow") is None:
        named = ref.zoo_model
        raise NsfwMobileError(
            f"--model {ref.given} runs {named.key} as its Keras reference, which needs "
            "TensorFlow (not installed here): pip install 'nsfw-mobile[full]'; or, where "
            f"TensorFlow is installed, make its release ({_release_hint(named)}; or "
            f"nsfw-mobile release {named.key} --out DIR and --model DIR): its TFLite files "
            "run without TensorFlow"
        )
