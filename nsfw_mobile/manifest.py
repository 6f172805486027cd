"""A release folder's manifest, read back: the files it promises, each inside the folder.

``release`` writes ``manifest.json`` (``schema_version`` 2); this module reads it for
every command that takes a release folder as a model (``resolve``), for the engine
choice and for ``release --check``. It sits under the resolver and imports neither
the converters nor the validator, so naming a release folder stays cheap.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import ModelFileError
from .formats import file_type_of

MANIFEST = "manifest.json"
SCHEMA_VERSION = 2


def read_manifest(release_dir: str | Path) -> dict:
    """A release folder's manifest, with every file it names checked to stay inside the folder."""
    release_dir = Path(release_dir)
    path = release_dir / MANIFEST
    if not path.is_file():
        raise ModelFileError(f"{release_dir}: no {MANIFEST}: not a release folder")
    try:
        manifest = json.loads(path.read_bytes())
        if not isinstance(manifest, dict):
            raise TypeError(f"a JSON {type(manifest).__name__}, not an object")
        version = manifest.get("schema_version", 1)
        if version == SCHEMA_VERSION:
            _check_fields(manifest)
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise ModelFileError(
            f"{path}: not a release manifest ({type(exc).__name__}: {exc})"
        ) from None
    if version != SCHEMA_VERSION:
        raise ModelFileError(
            f"{path}: manifest schema {version!r}, this toolkit reads "
            f"{SCHEMA_VERSION}: make the release again with `nsfw-mobile release`"
        )
    for entry in [*manifest["files"], manifest["labels_file"]]:
        inside_folder(release_dir, entry["file"])
    return manifest


def _check_fields(manifest: dict) -> None:
    """Raise TypeError naming the first field the toolkit reads back that has the wrong type."""

    def need(value, kinds: tuple, where: str):
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
            raise TypeError(f"{where} is {json.dumps(value)[:60]}, expected {names}")
        return value

    optional_text = (str, type(None))
    for index, entry in enumerate(need(manifest.get("files"), (list,), "files")):
        where = f"files[{index}]"
        need(entry, (dict,), where)
        need(entry.get("file"), (str,), f"{where}.file")
        need(entry.get("format"), (str,), f"{where}.format")
        need(entry.get("sha256"), optional_text, f"{where}.sha256")
        need(entry.get("releasable"), (bool,), f"{where}.releasable")
        _check_latency(need, entry.get("latency", {}), f"{where}.latency")
        for key, checked in need(entry.get("engines", {}), (dict,), f"{where}.engines").items():
            need(checked, (dict,), f"{where}.engines.{key}")
            need(checked.get("releasable"), (bool,), f"{where}.engines.{key}.releasable")
            _check_latency(need, checked.get("latency", {}), f"{where}.engines.{key}.latency")
    labels = need(manifest.get("labels_file"), (dict,), "labels_file")
    need(labels.get("file"), (str,), "labels_file.file")
    need(labels.get("sha256"), optional_text, "labels_file.sha256")
    need(need(manifest.get("source"), (dict,), "source").get("sha256"), (str,), "source.sha256")
    images = need(manifest.get("validation_images", {}), (dict,), "validation_images")
    for index, image in enumerate(
        need(images.get("files", []), (list,), "validation_images.files")
    ):
        need(image, (dict,), f"validation_images.files[{index}]")
        need(image.get("name"), (str,), f"validation_images.files[{index}].name")
        need(image.get("sha256"), (str,), f"validation_images.files[{index}].sha256")


def _check_latency(need, latency, where: str) -> None:
    for threads, figures in need(latency, (dict,), where).items():
        need(figures, (dict,), f"{where}.{threads}")
        need(figures.get("median_ms"), (int, float), f"{where}.{threads}.median_ms")


def inside_folder(release_dir: Path, name) -> Path:
    """``release_dir / name``, refused when ``name`` is absolute or leaves the folder."""
    if not isinstance(name, str) or not name or "\x00" in name or Path(name).is_absolute():
        raise ModelFileError(f"{release_dir / MANIFEST}: file name {name!r} is not relative")
    root = release_dir.resolve()
    target = (root / name).resolve()
    if target != root and root not in target.parents:
        raise ModelFileError(
            f"{release_dir / MANIFEST}: {name!r} leaves the release folder; refused"
        )
    return release_dir / name


def fastest_artifact(release_dir: str | Path) -> Path:
    """The releasable artefact this machine runs at speed with the lowest 1-thread latency."""
    release_dir = Path(release_dir)
    manifest = read_manifest(release_dir)
    timed = [
        (entry["latency"]["threads_1"]["median_ms"], entry["file"])
        for entry in manifest["files"]
        if entry["releasable"]
        and "threads_1" in entry.get("latency", {})
        and file_type_of(inside_folder(release_dir, entry["file"])).runs_at_speed_here
    ]
    if not timed:
        raise ModelFileError(
            f"{release_dir}: the manifest has no validated, benchmarked artefact this machine runs"
        )
    return inside_folder(release_dir, min(timed)[1])


def is_release_folder(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def releasable_files(release_dir: str | Path) -> tuple[list[Path], list[str]]:
    """The files a release folder promises (made and validated), by its manifest, and the
    names of the entries it marks not releasable."""
    release_dir = Path(release_dir)
    manifest = read_manifest(release_dir)
    files = [inside_folder(release_dir, e["file"]) for e in manifest["files"] if e["releasable"]]
    return files, [e["file"] for e in manifest["files"] if not e["releasable"]]
