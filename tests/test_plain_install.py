"""The built wheel in a fresh virtual environment without extras predicts out of the box.

Slow (about 10 s with pip's cache): it builds the wheel, installs it with its base
dependencies from the package index into a new venv (no TensorFlow, no coremltools),
then runs the installed ``nsfw-mobile predict`` on the shipped samples.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("tensorflow", "keras", "coremltools")

RUN_AND_REPORT = f"""
import json, sys
from click.testing import CliRunner
import nsfw_mobile
from nsfw_mobile.cli import main
result = CliRunner().invoke(main, ["predict", sys.argv[1], "--json"])
print(json.dumps({{"exit_code": result.exit_code, "stdout": result.stdout,
                  "package": nsfw_mobile.__file__,
                  "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_predicts_without_tensorflow(tmp_path, samples):
    wheels, source = tmp_path / "wheels", tmp_path / "source"
    # built from a copy of what the package is made of: a build in the checkout would leave
    # build/ and *.egg-info there
    shutil.copytree(ROOT / "nsfw_mobile", source / "nsfw_mobile",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            wheels,
            source,
        ],  # fmt: skip
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("nsfw_mobile-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, f"pip install of the wheel failed:\n{install.stderr}"
    missing = subprocess.run([python, "-c", "import tensorflow"], capture_output=True)
    assert missing.returncode != 0, "the fresh venv must not have TensorFlow"

    work = tmp_path / "elsewhere"  # not the source tree, so only the installed wheel is found
    work.mkdir()
    out = subprocess.run(
        [python, "-c", RUN_AND_REPORT, samples[0].parent],
        capture_output=True, text=True, cwd=work, check=True,
    )  # fmt: skip
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["package"].startswith(str(env_dir)), report["package"]
    assert report["heavy"] == []
    assert report["exit_code"] == 0, report["stdout"]
    answers = [json.loads(line) for line in report["stdout"].splitlines()]
    classified = {Path(a["path"]).name: a for a in answers if "label" in a}
    assert sorted(classified) == sorted(s.name for s in samples)
    cli = subprocess.run(
        [env_dir / "bin" / "nsfw-mobile", "predict", samples[0], "--json"],
        capture_output=True, text=True, cwd=work, check=True,
    )  # fmt: skip
    assert json.loads(cli.stdout)["label"] == classified[samples[0].name]["label"]
