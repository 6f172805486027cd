"""The model zoo: the pretrained models users pick by name, in one table.

Each :class:`ZooModel` is a frozen record: its key and aliases (what users type
after ``--model``), where its weights come from (a folder shipped in the package,
or a model folder inside a pinned npm package, fetched on first use by
``zoo_fetch``), its TF.js format, input size, labels, licence, author, origin and
published accuracy with its source. ``contract(classes)`` turns a record into
the model contract every artefact of it carries, so nothing of one model is
assumed for another.

What a name means is ``resolve.resolve_model``'s rule: ``--model mid`` is the zoo
model even if a folder called ``mid`` exists; ``./mid``, ``mid/`` or a ``Path`` is
that folder, never a name.

This module imports no TensorFlow; ``models.pretrained(name=...)`` builds the
Keras model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import zoo_fetch
from .errors import UsageError
from .files import cache_root
from .labels import LABELS, NSFWJS_LABELS
from .zoo_fetch import model_digest

__all__ = ["ZOO", "DEFAULT", "ZooModel", "NpmSource", "find", "lookup", "model_digest"]

PACKAGE_DIR = Path(__file__).parent


@dataclass(frozen=True)
class NpmSource:
    """A model folder inside a pinned npm package (nsfwjs bundles its models as JS modules)."""

    package: str
    version: str
    integrity: str
    """The registry's ``dist.integrity`` of the tarball: ``npm view PKG@VERSION dist.integrity``."""
    tarball_bytes: int
    folder: str
    """The model's folder inside the package, such as ``dist/models/mobilenet_v2_mid``."""

    @property
    def spec(self) -> str:
        return f"{self.package}@{self.version}"

    @property
    def tarball_name(self) -> str:
        return f"{self.package}-{self.version}.tgz"


NSFWJS_4_3_0 = dict(
    package="nsfwjs",
    version="4.3.0",
    integrity=(
        "sha512-WTKDte0vp1X97N1h34P79G/hG+sVT3+TnDz9di1WseIJR93v11E4viNX7Vg9WsO6HYoR772Nzq2iM8jo3XBZ+g=="
    ),
    tarball_bytes=25_336_605,
)

NSFWJS_LIMITS = (
    "Drawings can be confused with hentai; male nudity and non-typical bodies were "
    "under-represented in the training data; skin-coloured textures, babies at the beach and "
    "medical images cause false positives. See nsfw_mobile/pretrained/MODEL_CARD.md."
)
"""What NSFWJS's users and its model card report of GantMan's models (one training set)."""


@dataclass(frozen=True)
class ZooModel:
    key: str
    aliases: tuple[str, ...]
    contract_name: str
    """The name its artefacts record (the default's, ``nsfwjs-mobilenet_v2``, predates the zoo)."""
    summary: str
    """What it is, as the contract's description starts: "GantMan's ... NSFW classifier"."""
    architecture: str
    format: str
    """The TF.js format its weights come in: ``layers`` or ``graph``."""
    input_size: int
    parameters: int
    """Of the five-class model (``classes=3`` adds a fixed 5x3 merge)."""
    weights_bytes: int
    """model.json and shards, as the toolkit stores them."""
    sha256: str
    """``model_digest`` of model.json and its shards: the source checksum every artefact records."""
    accuracy: str
    accuracy_source: str
    source_url: str
    author: str = "GantMan (model); NSFWJS by Infinite Red, Inc."
    license: str = "MIT (Copyright (c) 2019 Infinite Red, Inc.)"
    version: str = "nsfwjs 4.3.0"
    labels: tuple[str, ...] = NSFWJS_LABELS
    limits: str = NSFWJS_LIMITS
    bundled: str | None = None
    """Folder inside the package that ships it; None: fetched from ``npm``."""
    npm: NpmSource | None = None
    backbone_alpha: float | None = None
    """MobileNetV2 width of its backbone, which ``train --backbone`` can start from; None: none."""
    backbone_input: tuple[float, float] = (1.0, 0.0)
    """(scale, offset) its backbone applies to [0, 1] pixels first (TF-Hub's: x * 2 - 1)."""

    @property
    def names(self) -> tuple[str, ...]:
        return (self.key, *self.aliases)

    @property
    def short_aliases(self) -> tuple[str, ...]:
        """The aliases to show (the ``nsfwjs-...`` ones repeat the name artefacts record)."""
        return tuple(a for a in self.aliases if not a.startswith("nsfwjs-"))

    @property
    def download_mb(self) -> float:
        return self.npm.tarball_bytes / 1e6 if self.npm else 0.0

    @property
    def folder(self) -> Path:
        """Where its model.json and shards are (or will be, once fetched)."""
        if self.bundled:
            return PACKAGE_DIR / self.bundled
        return cache_root() / zoo_fetch.MODELS_FOLDER / self.key

    @property
    def release_folder(self) -> Path:
        """Where ``nsfw-mobile models --fetch NAME --release`` keeps its release (the toolkit's
        cache); ``--model NAME`` runs that release's fastest validated file when it is there."""
        return cache_root() / "releases" / self.key

    @property
    def status(self) -> str:
        """shipped (in the package), cached (fetched before) or not fetched."""
        if self.bundled:
            return "shipped"
        return "cached" if (self.folder / "model.json").is_file() else "not fetched"

    @property
    def published_accuracy(self) -> str:
        return f"{self.accuracy} ({self.accuracy_source})"

    def model_json(self, *, fetch: bool = True, log=None) -> Path:
        """Its model.json, fetched into the cache first when needed (``fetch=False``: raise)."""
        if self.bundled:
            return self.folder / "model.json"
        path = self.folder / "model.json"
        if path.is_file():
            digest = model_digest(path)
            if digest != self.sha256:
                raise zoo_fetch.FetchError(
                    f"{self.folder}: its files have SHA-256 {digest[:16]}..., not the zoo's "
                    f"{self.sha256[:16]}... for {self.key}: delete the folder to fetch it again"
                )
            return path
        if not fetch:
            raise zoo_fetch.FetchError(f"{self.key} is not fetched yet; " + zoo_fetch.by_hand(self))
        return zoo_fetch.fetch(self, log=log)

    def contract(self, classes: int = 3):
        """This model's contract: its labels, input size and provenance."""
        from .metadata import ModelContract, nsfw_labels_by_name

        if classes not in (3, 5):
            raise UsageError(f"{self.key}: classes={classes}: choose 3 or 5")
        labels = LABELS if classes == 3 else self.labels
        return ModelContract(
            labels=labels,
            nsfw_labels=nsfw_labels_by_name(labels),
            input_size=(self.input_size, self.input_size),
            name=self.contract_name,
            version=self.version,
            author=self.author,
            license=self.license,
            description=(
                f"{self.summary} as NSFWJS 4.3.0 ships it, {classes} classes ({', '.join(labels)})."
            ),
            limits=self.limits,
            source_sha256=self.sha256,
            source_url=self.source_url,
            published_accuracy=self.published_accuracy,
        )

    def to_dict(self) -> dict:
        """What ``nsfw-mobile models --json`` prints for it."""
        return {
            "key": self.key,
            "aliases": list(self.aliases),
            "architecture": self.architecture,
            "format": self.format,
            "input_size": self.input_size,
            "parameters": self.parameters,
            "weights_bytes": self.weights_bytes,
            "labels": list(self.labels),
            "published_accuracy": self.accuracy,
            "accuracy_source": self.accuracy_source,
            "license": self.license,
            "author": self.author,
            "source_url": self.source_url,
            "weights": self.status,
            "folder": str(self.folder),
            "fetched_from": self.npm.spec if self.npm else None,
            "download_bytes": self.npm.tarball_bytes if self.npm else 0,
            "sha256": self.sha256,
            "train_backbone": self.backbone_alpha is not None,
        }


MOBILENET_V2 = ZooModel(
    key="nsfwjs-mobilenet-v2",
    aliases=("pretrained", "mobilenet-v2", "nsfwjs-mobilenet_v2"),
    contract_name="nsfwjs-mobilenet_v2",
    summary="GantMan's MobileNetV2 NSFW classifier",
    architecture="MobileNetV2 1.0 + Dense 256/128 head (layers model)",
    format="layers",
    input_size=224,
    parameters=2_619_461,
    weights_bytes=2_738_586,
    sha256="0fdfc93f6aa28e04ed9fdd67641f022b8f202fa4183f03d6d7bf6c0559ecfa28",
    accuracy="about 90%",
    accuracy_source='NSFWJS README: "~90% with small and ~93% with midsized model"',
    source_url="https://github.com/infinitered/nsfwjs/tree/master/models/mobilenet_v2",
    bundled="pretrained/mobilenet_v2",
    backbone_alpha=1.0,
)
MOBILENET_V2_MID = ZooModel(
    key="nsfwjs-mobilenet-v2-mid",
    aliases=("mid", "mobilenet-v2-mid", "nsfwjs-mobilenet_v2_mid"),
    contract_name="nsfwjs-mobilenet_v2_mid",
    summary="GantMan's MobileNetV2 (width 1.4) NSFW classifier",
    architecture="MobileNetV2 1.4 (TF-Hub feature vector) + Dense 5 (graph model)",
    format="graph",
    input_size=224,
    parameters=4_300_773,
    weights_bytes=4_442_403,
    sha256="16305c0e70c8d0e7526149b792632b2832d0047f1f36d52fab4273982bbab4cc",
    accuracy="about 93%",
    accuracy_source='NSFWJS README: "~90% with small and ~93% with midsized model"',
    source_url="https://github.com/infinitered/nsfwjs/tree/master/models/mobilenet_v2_mid",
    npm=NpmSource(**NSFWJS_4_3_0, folder="dist/models/mobilenet_v2_mid"),
    backbone_alpha=1.4,
    backbone_input=(2.0, -1.0),
)
INCEPTION_V3 = ZooModel(
    key="nsfwjs-inception-v3",
    aliases=("inception-v3", "nsfwjs-inception_v3"),
    contract_name="nsfwjs-inception_v3",
    summary="GantMan's InceptionV3 NSFW classifier",
    architecture="InceptionV3 + Dense 256/128 head (layers model)",
    format="layers",
    input_size=299,
    parameters=22_360_869,
    weights_bytes=22_576_615,
    sha256="7855a23a648b38fc894f287b051e1092d5b335bd245f7a3986068314d6ae6c95",
    accuracy="about 93%",
    accuracy_source='GantMan/nsfw_model README: "93% Accuracy ... based on Inception V3"',
    source_url="https://github.com/infinitered/nsfwjs/tree/master/models/inception_v3",
    npm=NpmSource(**NSFWJS_4_3_0, folder="dist/models/inception_v3"),
)

ZOO: tuple[ZooModel, ...] = (MOBILENET_V2, MOBILENET_V2_MID, INCEPTION_V3)
DEFAULT = MOBILENET_V2
"""The model every command uses when none is named; it ships in the package."""


def find(name) -> ZooModel | None:
    """The zoo model called ``name`` (key or alias), else None."""
    text = str(name)
    return next((model for model in ZOO if text in model.names), None)


def is_zoo_name(name) -> bool:
    """Whether ``name`` is a zoo model's name. Only strings are names: a ``Path`` is a file."""
    return isinstance(name, str) and find(name) is not None


def lookup(name) -> ZooModel:
    """The zoo model called ``name``; a UsageError that lists the names otherwise."""
    model = find(name)
    if model is None:
        known = "; ".join(f"{m.key} ({', '.join(m.aliases)})" for m in ZOO)
        raise UsageError(f"no zoo model is called {name!r}: choose one of {known}")
    return model


def by_sha256(digest: str) -> ZooModel | None:
    """The zoo model whose source checksum is ``digest`` (what a release records), else None."""
    return next((model for model in ZOO if digest and model.sha256 == digest), None)
