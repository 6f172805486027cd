"""SIGINT and SIGTERM at named phases of convert, validate, bench and release: exit 130 /
143, never 0, no partial file, nothing of the user's removed or changed.

No race: the command stops at the phase the test names (NSFW_MOBILE_TEST_PAUSE_AT, see
nsfw_mobile/pause.py), writes the marker file and waits; the signal lands exactly there.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_synthetic_images

from nsfw_mobile.atomic import MARKER, is_temporary
from nsfw_mobile.cli import EXIT_INTERRUPTED, EXIT_TERMINATED
from nsfw_mobile.pause import PAUSE_AT, PAUSE_MARKER

CODES = {signal.SIGINT: EXIT_INTERRUPTED, signal.SIGTERM: EXIT_TERMINATED}
USER_FILES = {
    "mine.txt": b"the user's notes\n",
    ".partial-draft.txt": b"a draft\n",
    f"{MARKER}partial-notes.txt": b"a name like the toolkit's, but the user's\n",
}
CANDIDATE = "acme_float32.tflite"
LAST = "tflite-float32"  # the last format of each run (convert and release)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_model_path, tiny_artifacts):
    """The tiny model, a few images and a TFLite candidate made from it (for validate and
    bench), outside the folders the commands write to."""
    folder = tmp_path_factory.mktemp("interrupt_inputs")
    (folder / "images").mkdir()
    images = write_synthetic_images(folder / "images", 6, seed=11)
    candidate = folder / CANDIDATE
    shutil.copy(tiny_artifacts[LAST].path, candidate)
    return {"model": tiny_model_path, "images": images, "candidate": candidate}


def _commands(inputs, out: Path) -> dict[str, list[str]]:
    model, images, candidate = map(str, (inputs["model"], inputs["images"], inputs["candidate"]))
    return {
        "convert": ["convert", model, "--name", "acme", "--to", "tfjs-float32", "--to", LAST,
                    "--out", str(out)],
        "validate": ["validate", candidate, "--reference", model, "--images", images,
                     "--report", str(out / "report.md")],
        "bench": ["bench", candidate, "--runs", "2", "--seconds", "0",
                  "--report", str(out / "bench.md")],
        "release": ["release", model, "--name", "acme", "--to", LAST, "--images", images,
                    "--runs", "2", "--seconds", "0", "--out", str(out)],
    }  # fmt: skip


def _pause_and_signal(command: list[str], phase: str, sent: int, folder: Path):
    """Run the CLI until it stops at ``phase``, send ``sent``; (exit code, stderr)."""
    marker = folder / "paused"
    env = {**os.environ, PAUSE_AT: phase, PAUSE_MARKER: str(marker)}
    process = subprocess.Popen(
        [sys.executable, "-m", "nsfw_mobile.cli", *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=folder,
        env=env,
    )
    deadline = time.monotonic() + 600
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if not marker.exists():
        process.kill()
        _, stderr = process.communicate()
        pytest.fail(f"never paused at {phase} (exit {process.returncode}): {stderr[-2000:]}")
    assert marker.read_text().strip() == phase or "*" in phase
    process.send_signal(sent)
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr


CASES = [
    # convert: during its last format (the partial file on disk) and after its final rename
    ("convert", "write:acme_float32.tflite", signal.SIGINT),
    ("convert", "renamed:README.md", signal.SIGTERM),
    ("validate", f"validating:{CANDIDATE}", signal.SIGTERM),
    ("validate", "write:report.md", signal.SIGINT),
    ("bench", f"benchmarking:{CANDIDATE}", signal.SIGINT),  # its timing process running
    ("bench", "exit", signal.SIGTERM),
    # release: its last format, the manifest, the model card (its last file), after the
    # model card's rename (the final one) and when the process ends
    ("release", f"write:{CANDIDATE}", signal.SIGTERM),
    ("release", "write:manifest.json", signal.SIGINT),
    ("release", "write:MODEL_CARD.md", signal.SIGTERM),
    ("release", "renamed:MODEL_CARD.md", signal.SIGINT),
    ("release", "renamed:MODEL_CARD.md", signal.SIGTERM),
    ("release", "exit", signal.SIGINT),
]
QUICK = {("bench", f"benchmarking:{CANDIDATE}", signal.SIGINT)}
"""The quick loop's case (seconds, no TensorFlow in the child); the slow tier runs them all
(each of the others loads the model in Keras, a release also converts, validates and times
its file)."""


@pytest.mark.parametrize(
    ("command", "phase", "sent"),
    [pytest.param(*case, marks=() if case in QUICK else pytest.mark.slow) for case in CASES],
    ids=lambda value: value.name if isinstance(value, signal.Signals) else str(value),
)
def test_a_signal_at_a_named_phase_exits_with_its_code(inputs, tmp_path, command, phase, sent):
    out = tmp_path / "out"
    out.mkdir()
    for name, content in USER_FILES.items():
        (out / name).write_bytes(content)
    code, stderr = _pause_and_signal(_commands(inputs, out)[command], phase, sent, tmp_path)
    assert code == CODES[sent], stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] in ("Interrupted", "Terminated"), stderr
    left = [p for p in out.rglob("*") if is_temporary(p)]
    assert left == [], "a partial file survived the signal"
    for name, content in USER_FILES.items():
        assert (out / name).read_bytes() == content, f"the user's {name} changed"
    if phase.startswith("write:"):  # stopped before the rename: not under its final name
        assert not (out / phase.removeprefix("write:")).exists()
