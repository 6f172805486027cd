"""The model contract, and what every artefact says about itself, in one place.

A :class:`ModelContract` is what a model promises: its labels in output order,
which of them count as NSFW (the ``nsfw_score`` is the sum of their
probabilities), its input size and preprocessing, and its provenance (name,
version, author, licence, description, known limits, the source model's
SHA-256, the toolkit version). Exporters write it into every artefact through
``provenance`` (Core ML: description fields and user-defined metadata; TFLite:
the standard metadata and ``nsfw_mobile.json``; ONNX and ORT: ``metadata_props``;
``.keras``: an ``nsfw_mobile.json`` member of its zip). Each file type's reader lives beside
its format (``tflite_metadata``, ``tfjs``, ``onnx_file``, ``runtime.coreml_spec``) and
returns an :class:`ArtifactMetadata`; ``formats.read_metadata`` picks the reader for
any file, and ``contract_of`` turns what was read into a contract. This module is the
core contract: it imports no other module of the package but ``errors`` and the
version, so every layer above can use it.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ModelFileError, UsageError
from .version import __version__

PREPROCESSING = (
    "RGB, whole image squashed to the input size with bilinear resampling, "
    "EXIF orientation applied, alpha composited on white, pixels scaled by 1/255"
)


TOOLKIT = f"nsfw-mobile {__version__}"
KERAS_MEMBER = "nsfw_mobile.json"
"""The contract's file inside a ``.keras`` zip (Keras ignores members it does not know)."""

NSFW_NAMES = frozenset({"porn", "sexy", "hentai", "nsfw", "unsafe", "explicit", "nude", "nudity"})
"""Class names that count as NSFW when a model does not say which of its labels do."""

CONTRACT_FIELDS = ("name", "version", "author", "license", "description", "limits")
"""Provenance a user sets (convert/release/train options override the model's)."""

ORIGIN_FIELDS = ("source_url", "published_accuracy", "source_preprocessing", "import_max_abs_diff")
"""Where a zoo model was published and the accuracy its authors state (with their source);
for a model imported from ONNX, the preprocessing built into it and the import's measured
difference from ONNX Runtime on the original. Written only when set, so a user model's
artefacts do not gain empty entries."""


_RECORDED = ("source_sha256", "preprocessing", "toolkit")


def nsfw_labels_by_name(labels) -> tuple[str, ...]:
    return tuple(label for label in labels if label.lower() in NSFW_NAMES)


@dataclass(frozen=True)
class ModelContract:
    """What a model promises; see the module doc."""

    labels: tuple[str, ...]
    nsfw_labels: tuple[str, ...]
    input_size: tuple[int, int]
    """(height, width)"""
    name: str = "model"
    version: str = ""
    author: str = ""
    license: str = ""
    description: str = ""
    limits: str = ""
    source_sha256: str = ""
    source_url: str = ""
    published_accuracy: str = ""
    source_preprocessing: str = ""
    """What an imported model's own layers do first (BGR, mean, std, crop); empty: nothing."""
    import_max_abs_diff: str = ""
    """The import's largest difference from ONNX Runtime on the original file, where measured."""
    preprocessing: str = PREPROCESSING
    toolkit: str = TOOLKIT

    def __post_init__(self):
        unknown = [label for label in self.nsfw_labels if label not in self.labels]
        if unknown:
            raise UsageError(
                f"NSFW labels {unknown} are not among the model's labels {list(self.labels)}"
            )

    @property
    def nsfw_indices(self) -> list[int]:
        return [self.labels.index(label) for label in self.nsfw_labels]

    def nsfw_score(self, probabilities: np.ndarray) -> np.ndarray | None:
        """Sum of the NSFW labels' probabilities per row; None for a model without any."""
        if not self.nsfw_labels:
            return None
        return np.asarray(probabilities)[..., self.nsfw_indices].sum(axis=-1)

    def replace(self, **changes) -> ModelContract:
        """A copy with the given fields changed; None values leave a field as it is."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_properties(self) -> dict[str, str]:
        """As flat string entries (Core ML user-defined metadata, TFLite's JSON)."""
        height, width = self.input_size
        return {
            "labels": json.dumps(list(self.labels)),
            "nsfw_labels": json.dumps(list(self.nsfw_labels)),
            "input_size": f"{width}x{height}",
            "preprocessing": self.preprocessing,
            **{name: getattr(self, name) for name in CONTRACT_FIELDS},
            **{name: getattr(self, name) for name in ORIGIN_FIELDS if getattr(self, name)},
            "source_sha256": self.source_sha256,
            "toolkit": self.toolkit,
        }

    @classmethod
    def from_properties(cls, properties: dict, *, labels=(), input_size=(0, 0)) -> ModelContract:
        """Read ``to_properties`` back; ``labels`` and ``input_size`` fill what is missing.

        A file without ``nsfw_labels`` (made before contracts, or elsewhere) gets
        the NSFW labels its class names imply.
        """
        try:
            labels = tuple(json.loads(properties["labels"])) if "labels" in properties else labels
            nsfw = (
                tuple(json.loads(properties["nsfw_labels"]))
                if "nsfw_labels" in properties
                else nsfw_labels_by_name(labels)
            )
            if "input_size" in properties:
                width, height = (int(v) for v in str(properties["input_size"]).split("x"))
                input_size = (height, width)
        except (ValueError, TypeError, RecursionError) as exc:
            raise ModelFileError(f"unreadable model contract in the metadata ({exc})") from None
        if not all(isinstance(label, str) for label in (*labels, *nsfw)):
            raise ModelFileError("unreadable model contract: labels must be strings")
        try:
            return cls(
                labels=tuple(labels),
                nsfw_labels=tuple(nsfw),
                input_size=tuple(input_size),
                **{
                    name: str(properties[name])
                    for name in (*CONTRACT_FIELDS, *ORIGIN_FIELDS, *_RECORDED)
                    if name in properties
                },
            )
        except UsageError as exc:
            raise ModelFileError(f"inconsistent model contract in the metadata: {exc}") from None


def write_keras_contract(path: str | Path, contract: ModelContract) -> None:
    """Add the contract to a saved ``.keras`` file (a zip) as ``nsfw_mobile.json``."""
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(KERAS_MEMBER, json.dumps(contract.to_properties(), indent=2))


def read_keras_contract(path: str | Path) -> dict[str, str]:
    """The contract entries a ``.keras`` file carries; empty when it has none."""
    try:
        with zipfile.ZipFile(path) as archive:
            if KERAS_MEMBER not in archive.namelist():
                return {}
            document = json.loads(archive.read(KERAS_MEMBER))
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, RuntimeError, EOFError,
            NotImplementedError):  # fmt: skip
        return {}  # RuntimeError: an encrypted member; Keras then names the problem
    return document if isinstance(document, dict) else {}


@dataclass
class ArtifactMetadata:
    """An artefact's labels, input size and provenance, as its file records them."""

    labels: tuple[str, ...] = ()
    input_size: tuple[int, int] | None = None
    """(height, width), where the file records it."""
    info: dict[str, str] = field(default_factory=dict)
    """Name, description, version, author and licence fields of the file's own format."""
    properties: dict[str, str] = field(default_factory=dict)
    """The toolkit's provenance entries (see ``provenance``); empty for foreign files."""

    @property
    def made_by_toolkit(self) -> bool:
        return "toolkit" in self.properties


def provenance(source, *, target: str, quantization: str, **extra) -> dict[str, str]:
    """The metadata entries of an artefact of ``source``: its contract and how it was made."""
    contract = source.contract.replace(source_sha256=source.sha256, toolkit=TOOLKIT)
    entries = {
        **contract.to_properties(),
        "source_model": Path(source.path).name,
        "target": target,
        "quantization": quantization,
    }
    entries.update({key: str(value) for key, value in extra.items()})
    return entries


def contract_of(metadata: ArtifactMetadata, *, labels, input_size, name: str) -> ModelContract:
    """An artefact's contract from its metadata, else what its labels imply.

    ``labels`` are the ones the model file really maps its outputs to (a Core ML
    classifier's, the TFLite labels file's); they win over the contract's copy.
    """
    properties = dict(metadata.properties)
    properties.pop("labels", None)
    for key in ("name", "version", "author", "license", "description"):
        if not properties.get(key) and metadata.info.get(key):
            properties[key] = metadata.info[key]
    properties.setdefault("name", name)
    return ModelContract.from_properties(properties, labels=labels, input_size=input_size)
