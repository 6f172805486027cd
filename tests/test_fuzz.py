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
CI_RUNS, CI_SEED = 300, 1
"""The short run each target gets in CI: 300 inputs from libFuzzer seed 1, with no time limit,
so it explores the same inputs on any machine (a finding here is a bug anyone reproduces with
the same command); benchmarks/fuzz.py runs them for minutes, outside CI."""


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


def _fixed_run(name: str, folder: Path) -> dict:
    """benchmarks/fuzz.py's fixed run of target ``name``; corpus and findings in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        [
            sys.executable,
            ROOT / "benchmarks" / "fuzz.py",
            "--runs",
            str(CI_RUNS),
            "--seed",
            str(CI_SEED),
            "--target",
            name,
            "--work",
            folder / "work",
            "--findings",
            folder / "findings",
            "--json",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        cwd=folder,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["inputs"] = sorted(p.name for p in (folder / "work" / name).iterdir())
    return result


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
@pytest.mark.slow
def test_short_fuzzing_run_finds_nothing(name, tmp_path):
    result = _fixed_run(name, tmp_path)
    assert result["exit_code"] == 0 and not result["findings"], result["log_tail"]
    assert result["executions"] == CI_RUNS
    assert Path(result["findings_folder"]).is_relative_to(tmp_path)


@pytest.mark.slow
def test_a_fixed_run_explores_the_same_inputs_on_every_run(tmp_path):
    """Seed and number of inputs fix the run: the same coverage, the same corpus."""
    first, second = (_fixed_run("image", tmp_path / str(n)) for n in (1, 2))
    for key in ("executions", "coverage", "features", "inputs"):
        assert first[key] == second[key], key
    assert first["inputs"], "the run added no input to the corpus"
