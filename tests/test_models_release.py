"""models/: the committed release matches its README table and validates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nsfw_mobile.convert import README_MARKER
from nsfw_mobile.models import sha256_file, size_bytes

MODELS = Path(__file__).resolve().parent.parent / "models"
ROW = re.compile(
    r"^\| `(?P<name>[^`]+)` \| (?P<format>[^|]+) \| (?P<size>\d+) \| `(?P<sha>[0-9a-f]{64})` \|"
)


def table():
    text = (MODELS / "README.md").read_text()
    assert text.startswith(README_MARKER)
    rows = [ROW.match(line) for line in text.splitlines()]
    return {m["name"]: m for m in rows if m}


def test_release_files_are_listed():
    assert set(table()) == {
        "NSFW.mlmodel",
        "NSFW.mlpackage",
        "nsfw_float16.tflite",
        "nsfw_int8.tflite",
        "labels.txt",
    }


@pytest.mark.parametrize(
    "name",
    ["NSFW.mlmodel", "NSFW.mlpackage", "nsfw_float16.tflite", "nsfw_int8.tflite", "labels.txt"],
)
def test_committed_artefact_matches_its_checksum(name):
    row = table()[name]
    path = MODELS / name
    assert sha256_file(path) == row["sha"], f"{name} changed since models/README.md was written"
    assert size_bytes(path) == int(row["size"])


def test_committed_release_validates():
    from nsfw_mobile.validate import validate

    names = ["NSFW.mlmodel", "NSFW.mlpackage", "nsfw_float16.tflite", "nsfw_int8.tflite"]
    report = validate([MODELS / name for name in names])
    assert report.passed, [(c.format, c.failures) for c in report.candidates]
