"""The fuzz targets' contract on their seeds and on every input a fuzzer once crashed,
and a short coverage-guided run of each target (benchmarks/fuzz.py runs them longer)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "fuzz"))

import targets  # noqa: E402  (fuzz/ is not a package)

SEEDS = sorted((ROOT / "fuzz" / "corpus").glob("*/*"))
REGRESSIONS = sorted((ROOT / "fuzz" / "regressions").glob("*/*"))
CI_SECONDS, CI_RUNS, CI_SEED = 15, 600, 1
"""Each target runs 600 inputs from a fixed seed (reproducible), or 15 s if that is less:
a smoke test of the harnesses that keeps CI short; benchmarks/fuzz.py runs them for real."""


def test_every_target_has_seeds():
    assert {p.parent.name for p in SEEDS} == set(targets.TARGETS)


@pytest.mark.parametrize("path", SEEDS + REGRESSIONS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_input_gives_a_result_or_a_typed_error(path):
    targets.run_one(path.parent.name, path.read_bytes())


def test_crash_inputs_now_end_in_a_typed_error_or_a_warning():
    """Each kept crash input still reaches the code that used to fail: it must end in a
    typed error, or (a video with a bad frame) in a result that warns of what was skipped,
    never pass silently. Kept timeouts and out-of-memory inputs only need to finish, as the
    test above checks."""
    from nsfw_mobile.errors import NsfwMobileError

    crashes = [p for p in REGRESSIONS if "crash" in p.name]
    assert crashes
    for path in crashes:
        try:
            result = targets.TARGETS[path.parent.name](path.read_bytes())
        except NsfwMobileError:
            continue
        assert getattr(result, "warnings", None), f"{path} passes without a word"


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
@pytest.mark.slow
def test_short_fuzzing_run_finds_nothing(name, tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            ROOT / "benchmarks" / "fuzz.py",
            "--seconds",
            str(CI_SECONDS),
            "--target",
            name,
            "--json",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["exit_code"] == 0 and not result["findings"], result["log_tail"]
    assert result["executions"] > 0
