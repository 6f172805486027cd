"""Check the wheel and sdist that a release would upload: python .ci/check_dist.py DIST_DIR

DIST_DIR holds what `python -m build --outdir DIST_DIR` made (the wheel is built from the
sdist, so a file the sdist forgets is missing from the wheel too). Every file of the
package in the source tree (git's list; the pretrained model, the sample images, the
JavaScript and its npm lock files) must be in both, and the console script must be the
one pyproject.toml names. Prints one line per archive; exits 1 naming what is missing.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "nsfw_mobile"
REQUIRED = (
    "nsfw_mobile/pretrained/mobilenet_v2/model.json",
    "nsfw_mobile/pretrained/mobilenet_v2/group1-shard1of1.bin",
    "nsfw_mobile/pretrained/nsfw_float32.tflite",
    "nsfw_mobile/samples/calibration",
    "nsfw_mobile/runtime/js/locks/tfjs/package-lock.json",
    "nsfw_mobile/runtime/js/locks/nsfwjs/package-lock.json",
)
"""What the toolkit cannot work without, named even if git's list were empty."""


def package_files() -> set[str]:
    """The package's files in the source tree, as paths from the root."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", PACKAGE], capture_output=True, check=True, cwd=ROOT
        ).stdout.decode()
        files = {name for name in listed.split("\0") if name}
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: walk the folder
        files = {
            p.relative_to(ROOT).as_posix()
            for p in (ROOT / PACKAGE).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }
    return {name for name in files if (ROOT / name).is_file()}


def main() -> None:
    dist = Path(sys.argv[1])
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    expected = package_files()
    problems = []
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = set(archive.namelist())
        (entry_points,) = [n for n in in_wheel if n.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points).decode()
    with tarfile.open(sdist) as archive:
        in_sdist = {name.partition("/")[2] for name in archive.getnames()}
    for label, names in (("wheel", in_wheel), ("sdist", in_sdist)):
        missing = expected - names
        missing |= {r for r in REQUIRED if not any(n.startswith(r) for n in names)}
        if missing:
            problems.append(f"{label} lacks {len(missing)}: {', '.join(sorted(missing)[:10])}")
        print(f"{label}: {len(names)} entries, {len(expected - missing)} of the package's "
              f"{len(expected)} files")  # fmt: skip
    section = (ROOT / "pyproject.toml").read_text().split("[project.scripts]")[1].split("\n[")[0]
    for name, target in re.findall(r'^([\w-]+)\s*=\s*"([^"]+)"', section, re.MULTILINE):
        if f"{name} = {target}" not in scripts:
            problems.append(f"wheel's entry points lack {name} = {target}")
    if problems:
        sys.exit("\n".join(problems))


if __name__ == "__main__":
    main()
