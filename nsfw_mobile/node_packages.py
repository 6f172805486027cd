"""Pinned npm packages for running TF.js models under Node, installed once into a cache.

The first use runs ``npm install`` into a fresh folder beside the cache entry
and renames it into place when complete, so an interrupted install never
leaves a half-filled cache; later uses find the folder and need no network.
The cache lives in ``$NSFW_MOBILE_CACHE``, else ``$XDG_CACHE_HOME/nsfw-mobile``,
else ``~/.cache/nsfw-mobile``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from pathlib import Path

from .atomic import atomic_path
from .errors import NsfwMobileError

TFJS_VERSION = "4.22.0"
NSFWJS_VERSION = "4.3.0"
TFJS = {"@tensorflow/tfjs": TFJS_VERSION, "@tensorflow/tfjs-backend-wasm": TFJS_VERSION}
"""TensorFlow.js in pure JavaScript (CPU backend) and its WebAssembly backend, whose
package ships its .wasm files; no tfjs-node native binary."""
NSFWJS = {**TFJS, "nsfwjs": NSFWJS_VERSION}
"""NSFWJS beside the same tfjs, so that a single copy of tfjs is installed."""


class NodeMissingError(NsfwMobileError):
    """Node.js or npm is not installed, or the packages cannot be installed."""


def cache_root() -> Path:
    if os.environ.get("NSFW_MOBILE_CACHE"):
        return Path(os.environ["NSFW_MOBILE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nsfw-mobile"


def node_executable() -> str:
    node = shutil.which("node")
    if node is None:
        raise NodeMissingError(
            "TF.js models run in TensorFlow.js under Node.js, and `node` is not on PATH: "
            "install Node.js 18 or newer (https://nodejs.org)"
        )
    return node


def _folder_name(packages: dict[str, str]) -> str:
    return "npm-" + "-".join(
        f"{name.split('/')[-1]}{version}" for name, version in sorted(packages.items())
    )


def _installed(folder: Path, packages: dict[str, str]) -> bool:
    for name, version in packages.items():
        manifest = folder / "node_modules" / name / "package.json"
        try:
            if json.loads(manifest.read_text()).get("version") != version:
                return False
        except (OSError, ValueError):
            return False
    return True


def node_modules(packages: dict[str, str] = TFJS, *, log=None) -> Path:
    """The ``node_modules`` folder holding ``packages`` at their pinned versions."""
    node_executable()
    folder = cache_root() / _folder_name(packages)
    if _installed(folder, packages):
        return folder / "node_modules"
    npm = shutil.which("npm")
    if npm is None:
        raise NodeMissingError("installing the TF.js packages needs `npm`, which is not on PATH")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two processes on first use: one installs
        if not _installed(folder, packages):
            _install(npm, folder, packages, log)
    return folder / "node_modules"


def _install(npm: str, folder: Path, packages: dict[str, str], log) -> None:
    if log:
        log(f"installing {', '.join(f'{n}@{v}' for n, v in packages.items())} into {folder}")
    with atomic_path(folder) as partial:
        partial.mkdir()
        (partial / "package.json").write_text(
            json.dumps({"private": True, "dependencies": packages}, indent=2)
        )
        result = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=partial,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise NodeMissingError(
                f"npm install of {', '.join(packages)} failed (offline? first use needs the npm "
                f"registry): {' / '.join(tail)}"
            )
