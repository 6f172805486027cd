"""The pinned npm sets (nsfw_mobile/node_packages.py): lockfiles that match the pins, an
install that runs no package scripts, and a first use without the registry that ends
in one line, in bounded time."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nsfw_mobile.images import SAMPLES_DIR
from nsfw_mobile.node_packages import (
    LOCKS,
    NPM_CI,
    PACKAGE_SETS,
    TFJS,
    TFJS_VERSION,
    install_folder,
)

ROOT = Path(__file__).resolve().parent.parent
NEEDS_NPM = pytest.mark.skipif(
    not (shutil.which("node") and shutil.which("npm")) and not os.environ.get("CI"),
    reason="needs Node.js and npm",
)
SCRIPTS_NOT_RUN = {"node_modules/core-js"}
"""Packages of the tree with install scripts, which ``npm ci --ignore-scripts`` skips:
core-js's postinstall only prints a funding banner."""


@pytest.mark.parametrize("name", sorted(PACKAGE_SETS))
def test_lockfiles_match_the_pinned_versions(name):
    pinned = PACKAGE_SETS[name]
    package = json.loads((LOCKS / name / "package.json").read_text())
    lock = json.loads((LOCKS / name / "package-lock.json").read_text())
    assert package["dependencies"] == pinned
    assert lock["lockfileVersion"] >= 2 and lock["packages"][""]["dependencies"] == pinned
    entries = lock["packages"]
    for package_name, version in pinned.items():
        assert entries[f"node_modules/{package_name}"]["version"] == version
    assert all(entry.get("integrity") for key, entry in entries.items() if key)
    # a single copy of tfjs: nothing nests its own @tensorflow packages
    assert not [key for key in entries if "/node_modules/@tensorflow/" in key]
    assert entries["node_modules/@tensorflow/tfjs-core"]["version"] == TFJS_VERSION
    with_scripts = {key for key, entry in entries.items() if entry.get("hasInstallScript")}
    assert with_scripts <= SCRIPTS_NOT_RUN


def test_every_lockfile_is_a_pinned_set_and_ships_in_the_wheel():
    assert sorted(p.name for p in LOCKS.iterdir() if p.is_dir()) == sorted(PACKAGE_SETS)
    pyproject = (ROOT / "pyproject.toml").read_text()
    package_data = pyproject.split("[tool.setuptools.package-data]")[1].split("\n[")[0]
    globs = re.findall(r'"([^"]+)"', package_data)
    for lock_file in LOCKS.glob("*/*.json"):
        relative = lock_file.relative_to(ROOT / "nsfw_mobile").as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in globs), relative
    assert "--ignore-scripts" in NPM_CI and NPM_CI[0] == "ci"


@NEEDS_NPM
def test_first_use_without_the_registry_is_one_line_and_exit_1(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    env = {
        **os.environ,
        "NSFW_MOBILE_CACHE": str(cache),
        "npm_config_registry": "http://127.0.0.1:9/",  # nothing listens there
        "npm_config_cache": str(tmp_path / "npm-cache"),  # no tarball from an earlier install
        "PYTHONPATH": str(ROOT),
    }
    photo = SAMPLES_DIR / "coffee.jpg"
    command = [sys.executable, "-m", "nsfw_mobile.cli", "predict", str(photo)]
    command += ["--model", str(ROOT / "models" / "nsfw_tfjs_uint8")]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    seconds = time.monotonic() - started
    print(f"\noffline first use ended in {seconds:.1f} s")
    assert result.returncode == 1, result.stderr
    assert seconds < 120  # a hang guard, not a speed target
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    message = lines[0]
    assert message.startswith("Error: could not install the TF.js packages")
    assert "ECONNREFUSED" in message or "127.0.0.1:9" in message
    monkeypatch.setenv("NSFW_MOBILE_CACHE", str(cache))
    folder = install_folder(TFJS)
    assert f'npm {" ".join(NPM_CI)} --prefix "{folder}"' in message
    assert f"cache: {cache}" in message
    # nothing half-installed is left: at most the lock file of the install
    assert [p.name for p in cache.iterdir()] in ([], [f"{folder.name}.lock"])


@NEEDS_NPM
def test_the_package_works_where_fcntl_is_missing(tmp_path):
    """Windows has no fcntl: the module imports, takes its install lock and finds the set."""
    code = (
        "import sys; sys.modules['fcntl'] = None\n"
        "from nsfw_mobile import node_packages as n\n"
        "assert n.fcntl is None\n"
        f"with n._install_lock(__import__('pathlib').Path({str(tmp_path / 'x.lock')!r})):\n"
        "    pass\n"
        "print(n.node_modules(n.TFJS))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    assert result.returncode == 0, result.stderr
    modules = Path(result.stdout.strip())
    wasm = modules / "@tensorflow" / "tfjs-backend-wasm" / "dist" / "tfjs-backend-wasm.wasm"
    assert wasm.is_file()  # the package ships its .wasm: no install script needed
