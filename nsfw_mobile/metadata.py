"""What every artefact says about itself, written and read in one place.

Exporters write an artefact's metadata through ``provenance`` (Core ML:
description fields and user-defined metadata; TFLite: the standard metadata
and ``nsfw_mobile.json``). Runners, ``validate`` and ``inspect`` read it back
through ``read_metadata``, whatever the file type. This module imports neither
the exporters nor the runners, so both can use it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__

PREPROCESSING = (
    "RGB, whole image squashed to the input size with bilinear resampling, "
    "EXIF orientation applied, alpha composited on white, pixels scaled by 1/255"
)


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
    """The toolkit's metadata entries for an artefact of ``source``, as strings."""
    height, width = source.input_size
    entries = {
        "labels": json.dumps(list(source.labels)),
        "input_size": f"{width}x{height}",
        "preprocessing": PREPROCESSING,
        "toolkit": f"nsfw-mobile {__version__}",
        "source_model": source.path,
        "source_sha256": source.sha256,
        "target": target,
        "quantization": quantization,
    }
    entries.update({key: str(value) for key, value in extra.items()})
    return entries


def read_metadata(path: str | Path) -> ArtifactMetadata:
    """The metadata of any model file the toolkit reads (empty fields where it has none)."""
    from .formats import file_type_of, resolve

    reader = file_type_of(path).metadata_reader
    return resolve(reader)(Path(path)) if reader else ArtifactMetadata()


def read_tflite(path: Path) -> ArtifactMetadata:
    from .tflite_metadata import read_metadata as read_flatbuffer

    meta = read_flatbuffer(path)
    if meta is None:
        return ArtifactMetadata()
    width_height = meta.image_size
    return ArtifactMetadata(
        labels=tuple(meta.labels),
        input_size=(width_height[1], width_height[0]) if width_height else None,
        info={
            "name": meta.name,
            "description": meta.description,
            "version": meta.version,
            "author": meta.author,
            "license": meta.license,
        },
        properties=dict(meta.properties),
    )


def read_coreml(path: Path, spec=None) -> ArtifactMetadata:
    from .runtime.coreml_spec import class_labels, image_features, load_spec

    spec = spec if spec is not None else load_spec(path)
    images = [feature.type.imageType for feature in image_features(spec)]
    described = spec.description.metadata
    return ArtifactMetadata(
        labels=class_labels(spec),
        input_size=(images[0].height, images[0].width) if len(images) == 1 else None,
        info={
            "name": Path(path).stem,
            "description": described.shortDescription,
            "version": described.versionString,
            "author": described.author,
            "license": described.license,
        },
        properties=dict(described.userDefined),
    )
