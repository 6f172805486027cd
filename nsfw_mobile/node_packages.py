"""Pinned npm packages for running TF.js models under Node, installed once into a cache.

Each pinned set ships with its ``package.json`` and ``package-lock.json``
(``runtime/js/locks/<set>/``): every package of the tree has a fixed version
and an integrity hash. The first use copies both into a fresh folder beside
the cache entry, runs ``npm ci --ignore-scripts`` there (no package's install
scripts run; none of these needs one) and renames the folder into place when
complete, so an interrupted install never leaves a half-filled cache; later
uses find the folder and need no network. An install that fails or cannot
reach the registry ends within ``INSTALL_TIMEOUT`` seconds with one line that
says how to install by hand.

The cache lives in ``$NSFW_MOBILE_CACHE``, else ``$XDG_CACHE_HOME/nsfw-mobile``,
else ``~/.cache/nsfw-mobile``; an entry is named after its set and the hash of
its lockfile, so a changed lockfile installs anew.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

from .atomic import atomic_path
from .errors import NsfwMobileError
from .files import cache_root

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

TFJS_VERSION = "4.22.0"
NSFWJS_VERSION = "4.3.0"
TFJS = {"@tensorflow/tfjs": TFJS_VERSION, "@tensorflow/tfjs-backend-wasm": TFJS_VERSION}
"""TensorFlow.js in pure JavaScript (CPU backend) and its WebAssembly backend, whose
package ships its .wasm files; no tfjs-node native binary."""
NSFWJS = {**TFJS, "nsfwjs": NSFWJS_VERSION}
"""NSFWJS beside the same tfjs, so that a single copy of tfjs is installed."""
PACKAGE_SETS = {"tfjs": TFJS, "nsfwjs": NSFWJS}
"""Each set's lockfile is in ``LOCKS/<name>/``; tests/test_node_packages.py keeps them equal."""
LOCKS = Path(__file__).parent / "runtime" / "js" / "locks"
NPM_CI = ["ci", "--ignore-scripts", "--no-audit", "--no-fund"]
NETWORK_OPTIONS = ["--fetch-timeout=30000", "--fetch-retries=1", "--loglevel=error"]
"""npm waits 30 s per request and retries once (its defaults: 5 min, twice)."""
INSTALL_TIMEOUT = 180
"""Seconds for the whole install; the packages are 20 MB."""


class NodeMissingError(NsfwMobileError):
    """Node.js or npm is not installed, or the packages cannot be installed."""


def node_executable() -> str:
    node = shutil.which("node")
    if node is None:
        raise NodeMissingError(
            "TF.js models run in TensorFlow.js under Node.js, and `node` is not on PATH: "
            "install Node.js 18 or newer (https://nodejs.org)"
        )
    return node


def set_name(packages: dict[str, str]) -> str:
    for name, pinned in PACKAGE_SETS.items():
        if pinned == packages:
            return name
    raise ValueError(f"no lockfile for {packages}; the pinned sets are {sorted(PACKAGE_SETS)}")


def lock_folder(packages: dict[str, str]) -> Path:
    return LOCKS / set_name(packages)


def install_folder(packages: dict[str, str]) -> Path:
    """The cache entry of a set: its name carries the lockfile's hash."""
    lock = (lock_folder(packages) / "package-lock.json").read_bytes()
    return cache_root() / f"npm-{set_name(packages)}-{hashlib.sha256(lock).hexdigest()[:12]}"


def _installed(folder: Path, packages: dict[str, str]) -> bool:
    for name, version in packages.items():
        manifest = folder / "node_modules" / name / "package.json"
        try:
            if json.loads(manifest.read_text()).get("version") != version:
                return False
        except (OSError, ValueError):
            return False
    return True


@contextlib.contextmanager
def _install_lock(path: Path):
    """One process installs a set at a time (advisory lock; where fcntl is missing, none:
    two first uses then install twice, and the atomic rename keeps the cache whole)."""
    with open(path, "a") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def node_modules(packages: dict[str, str] = TFJS, *, log=None) -> Path:
    """The ``node_modules`` folder holding ``packages`` at their pinned versions."""
    node_executable()
    folder = install_folder(packages)
    if _installed(folder, packages):
        return folder / "node_modules"
    npm = shutil.which("npm")
    if npm is None:
        raise NodeMissingError(
            "installing the TF.js packages needs `npm`, which is not on PATH: install Node.js "
            "18 or newer (https://nodejs.org), which comes with npm"
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _install_lock(folder.parent / f"{folder.name}.lock"):
        if not _installed(folder, packages):
            _install(npm, folder, packages, log)
    return folder / "node_modules"


def manual_install_command(packages: dict[str, str]) -> str:
    """The shell commands that install a set by hand into its cache entry."""
    folder, locks = install_folder(packages), lock_folder(packages)
    return (
        f'mkdir -p "{folder}" && cp "{locks}/package.json" "{locks}/package-lock.json" '
        f'"{folder}/" && npm {" ".join(NPM_CI)} --prefix "{folder}"'
    )


def _npm_reason(output: str) -> str:
    """The line of npm's error output that says what went wrong."""
    lines = [
        re.sub(r"^npm (error|ERR!)\s*", "", line).strip()
        for line in output.splitlines()
        if line.startswith(("npm error", "npm ERR!"))
    ]
    lines = [line for line in lines if line]
    for line in lines:
        if "reason:" in line or line.startswith(("FetchError", "request to")):
            return line
    skip = ("code ", "syscall ", "errno ", "A complete log", "at ", "If you are behind")
    rest = [line for line in lines if not line.startswith(skip)]
    if rest or lines:
        return (rest or lines)[0]
    tail = output.strip().splitlines()
    return tail[-1] if tail else "npm printed nothing"


def _install(npm: str, folder: Path, packages: dict[str, str], log) -> None:
    names = ", ".join(f"{n}@{v}" for n, v in packages.items())
    if log:
        log(f"installing {names} into {folder}")
    locks = lock_folder(packages)
    with atomic_path(folder) as partial:
        partial.mkdir()
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(locks / name, partial / name)
        try:
            result = subprocess.run(
                [npm, *NPM_CI, *NETWORK_OPTIONS],
                cwd=partial,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT,
            )
            reason = None if result.returncode == 0 else _npm_reason(result.stderr + result.stdout)
        except subprocess.TimeoutExpired:
            reason = f"npm did not finish within {INSTALL_TIMEOUT} s"
        except OSError as exc:
            reason = f"npm could not run: {exc}"
        if reason is None and not _installed(partial, packages):
            reason = "npm ci ended without installing them"
        if reason is not None:
            raise NodeMissingError(
                f"could not install the TF.js packages ({names}), which the first use needs "
                f"from the npm registry: {reason}. Install them by hand where the registry is "
                f"reachable: {manual_install_command(packages)} (cache: {cache_root()}; "
                "NSFW_MOBILE_CACHE moves it)"
            )
