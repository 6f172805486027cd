"""models/: the committed release of the pretrained model, as `nsfw-mobile release` wrote it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from nsfw_mobile.cli import EXIT_VALIDATION_FAILED, main
from nsfw_mobile.convert import README_MARKER
from nsfw_mobile.files import sha256_file, size_bytes
from nsfw_mobile.formats import FORMATS, PRETRAINED_TFLITE
from nsfw_mobile.images import sample_images

MODELS = Path(__file__).resolve().parent.parent / "models"
ROW = re.compile(
    r"^\| `(?P<name>[^`]+)` \| (?P<format>[^|]+) \| (?P<size>\d+) \| `(?P<sha>[0-9a-f]{64})` \|"
)
RELEASE_FILES = sorted([f.filename for f in FORMATS] + ["labels.txt"])


def readme_table():
    text = (MODELS / "README.md").read_text()
    assert text.startswith(README_MARKER)
    rows = [ROW.match(line) for line in text.splitlines()]
    return {m["name"]: m for m in rows if m}


def manifest():
    return json.loads((MODELS / "manifest.json").read_text())


def test_release_files_are_listed():
    assert sorted(readme_table()) == RELEASE_FILES
    document = manifest()
    assert sorted([f["file"] for f in document["files"]] + ["labels.txt"]) == RELEASE_FILES
    assert document["passed"] and all(f["releasable"] for f in document["files"])
    for name in ("MODEL_CARD.md", "REPORT.md"):
        assert (MODELS / name).is_file()


@pytest.mark.parametrize("name", RELEASE_FILES)
def test_committed_artefact_matches_its_checksum(name):
    row = readme_table()[name]
    path = MODELS / name
    assert sha256_file(path) == row["sha"], f"{name} changed since models/README.md was written"
    assert size_bytes(path) == int(row["size"])


def test_package_ships_the_released_float32_tflite():
    """predict's default model is the validated float32 TFLite of models/, byte for byte."""
    assert sha256_file(PRETRAINED_TFLITE) == readme_table()["nsfw_float32.tflite"]["sha"]


@pytest.mark.slow
def test_release_check_passes_on_models():
    result = CliRunner().invoke(main, ["release", "--check", str(MODELS)])
    assert result.exit_code == 0, result.output
    assert "every file matches its checksum and passes validation" in result.stdout


@pytest.mark.slow
def test_release_check_names_a_tampered_file(tmp_path):
    copy = tmp_path / "models"
    shutil.copytree(MODELS, copy)
    target = copy / "nsfw_int8.tflite"
    data = bytearray(target.read_bytes())
    data[100_000] ^= 0x01
    target.write_bytes(bytes(data))
    # five samples outside the calibration set: the checksum is what this test is about
    images = [str(path) for path in sample_images()[-5:]]
    result = CliRunner().invoke(
        main,
        ["release", "--check", str(copy), "--json", *[a for p in images for a in ("--images", p)]],
    )
    assert result.exit_code == EXIT_VALIDATION_FAILED
    document = json.loads(result.stdout)
    assert document["passed"] is False
    (problem,) = document["problems"]
    assert problem.startswith("nsfw_int8.tflite: SHA-256")
