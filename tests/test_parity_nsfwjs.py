"""Parity with the real NSFWJS 4.3.0 running under Node (tfjs pure-JS CPU backend).

Installs nsfwjs@4.3.0 and @tensorflow/tfjs with npm into a temporary folder,
runs NSFWJS on the shipped sample images, decoded once by images.py, and
compares with pretrained(classes=5) on the same pixels.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from nsfw_mobile.images import load_images
from nsfw_mobile.models import pretrained

SCRIPT = Path(__file__).parent / "js" / "nsfwjs_infer.cjs"
MAX_ABS_DIFF = 1e-3


@pytest.fixture(scope="module")
def node_modules(tmp_path_factory):
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        reason = f"NSFWJS parity needs {' and '.join(missing)} on PATH"
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI must have them)")
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("nsfwjs")
    subprocess.run(
        [
            "npm",
            "install",
            "--no-audit",
            "--no-fund",
            "--silent",
            "nsfwjs@4.3.0",
            "@tensorflow/tfjs@4",
        ],
        cwd=folder,
        check=True,
        capture_output=True,
        timeout=600,
    )
    return folder / "node_modules"


def test_keras_import_matches_nsfwjs(node_modules, samples, tmp_path):
    batch = load_images(samples, 224)
    assert len(batch.paths) >= 20
    pixels_file, out_file = tmp_path / "pixels.bin", tmp_path / "nsfwjs.json"
    batch.pixels.tofile(pixels_file)
    subprocess.run(
        [
            "node",
            str(SCRIPT),
            str(node_modules),
            str(pixels_file),
            str(len(batch.pixels)),
            "224",
            "224",
            str(out_file),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    result = json.loads(out_file.read_text())
    nsfwjs = np.array(result["probabilities"])
    ours = pretrained(classes=5).predict(batch.pixels / np.float32(255), verbose=0)
    difference = np.abs(nsfwjs - ours)
    print(
        f"\nNSFWJS 4.3.0 (tfjs {result['tfjs']}, {result['backend']} backend) vs "
        f"pretrained(classes=5) on {len(ours)} images: max abs diff {difference.max():.2e}, "
        f"mean {difference.mean():.2e}"
    )
    assert difference.max() < MAX_ABS_DIFF
    assert (nsfwjs.argmax(axis=1) == ours.argmax(axis=1)).all()
