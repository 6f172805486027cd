"""The live rule (nsfw_mobile/live_rule.py, web_sample/live-rule.js) against the shared
vectors in tests/vectors/live_rule.json; the Swift copy's XCTest reads the same file (it
builds on macOS only)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from nsfw_mobile.errors import UsageError
from nsfw_mobile.live_rule import LiveRule, LiveRuleParams, TimeOrderError

ROOT = Path(__file__).resolve().parent.parent
VECTORS = json.loads((ROOT / "tests" / "vectors" / "live_rule.json").read_text())
CASES = {case["name"]: case for case in VECTORS["cases"]}


def params_of(case) -> LiveRuleParams:
    return LiveRuleParams(**case["params"])


def mismatches(case, rule) -> list[str]:
    """Where ``rule`` (anything with reset() and update(t, score)) departs from the case."""
    wrong, tolerance = [], VECTORS["tolerance"]
    for index, step in enumerate(case["steps"]):
        if step.get("reset"):
            rule.reset()
            continue
        got = rule.update(step["t"], step["score"])
        if (
            got.state != step["state"]
            or abs(got.smoothed - step["smoothed"]) > tolerance
            or abs(got.since - step["since"]) > tolerance
        ):
            wrong.append(f"step {index} t={step['t']}: {got} != {step}")
    return wrong


@pytest.mark.parametrize("name", list(CASES))
def test_python_rule_gives_the_vectors_states(name):
    case = CASES[name]
    assert mismatches(case, LiveRule(params_of(case))) == []


def test_the_vectors_cover_what_the_specification_promises():
    names = " ".join(CASES)
    for topic in ("exactly at the thresholds", "gap", "shorter than the minimum", "reset", "fps"):
        assert topic in names
    exact = CASES["scores exactly at the thresholds, no smoothing"]
    scores = {step["score"] for step in exact["steps"]}
    assert {exact["params"]["on"], exact["params"]["off"]} <= scores
    assert any(step.get("reset") for step in CASES["reset"]["steps"])


def test_frame_rates_give_the_same_states_at_the_times_they_share():
    by_rate = {}
    for fps in (1, 10, 30):
        steps = CASES[f"a 4 s stretch at {fps} fps"]["steps"]
        by_rate[fps] = {round(s["t"], 6): s for s in steps if abs(s["t"] - round(s["t"])) < 1e-9}
    assert by_rate[1].keys() == by_rate[10].keys() == by_rate[30].keys()
    for t, one in by_rate[1].items():
        for fps in (10, 30):
            other = by_rate[fps][t]
            assert other["state"] == one["state"], (t, fps)
            assert abs(other["smoothed"] - one["smoothed"]) < 1e-9
    assert {s["state"] for s in by_rate[1].values()} == {"off", "pending", "on"}


class PerFrameAverage:
    """A broken rule: smoothing by frame count (weight 0.5 a frame), not by time."""

    def __init__(self, params):
        self.params = params
        self.reset()

    def reset(self):
        self.inner = LiveRule(LiveRuleParams(**{**self.params.__dict__, "tau_s": 0.0}))
        self.average = None

    def update(self, t, score):
        self.average = score if self.average is None else 0.5 * (self.average + score)
        return self.inner.update(t, self.average)


class StatesOnlyAtSamples(LiveRule):
    """A broken rule: the minimum duration counted from the sample that first saw the
    smoothed score above ``on``, not from when it crossed."""

    def _crossing(self, level, before, t_before, t):
        return t


def test_broken_rules_fail_the_vectors():
    assert mismatches(
        CASES["a 4 s stretch at 10 fps"],
        PerFrameAverage(params_of(CASES["a 4 s stretch at 10 fps"])),
    )
    case = CASES["a 4 s stretch at 1 fps"]
    assert mismatches(case, StatesOnlyAtSamples(params_of(case)))


def test_node_rule_gives_the_vectors_states():
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail("the JavaScript live rule test needs Node.js (CI must have it)")
        pytest.skip("the JavaScript live rule test needs Node.js")
    run = subprocess.run(
        [node, "--test", str(ROOT / "tests" / "js" / "live_rule.test.mjs")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert f"# pass {len(CASES) + 1}" in run.stdout and "# fail 0" in run.stdout


def test_swift_test_reads_the_same_vectors():
    swift = (ROOT / "ios_sample/NSFWCore/Tests/NSFWCoreTests/LiveRuleTests.swift").read_text()
    assert "tests/vectors/live_rule.json" in swift
    target = ROOT / "ios_sample/NSFWCore/Tests/NSFWCoreTests"
    assert (target / "../../../../tests/vectors/live_rule.json").resolve().is_file()


def test_latency_is_the_rise_to_on_plus_the_minimum_duration():
    params = LiveRuleParams(on=0.5, tau_s=1.0, min_duration_s=2.0)
    assert params.latency_s(1.0) == pytest.approx(math.log(2) + 2.0)
    assert params.latency_s(0.5) == math.inf
    rule, t = LiveRule(params), 0.0
    rule.update(0.0, 0.0)
    while not rule.update(t := round(t + 0.01, 6), 1.0).flagged:
        pass
    assert t == pytest.approx(params.latency_s(1.0) + 0.01, abs=0.011)  # the 1 counts from 0.01 s


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"on": 1.5}, "outside 0..1"),
        ({"on": 0.5, "off": 0.6}, "must be in 0..on"),
        ({"tau_s": -1}, "tau_s must be 0 or more"),
        ({"max_gap_s": 0}, "max_gap_s must be above 0"),
    ],
)
def test_bad_parameters_are_refused_in_one_line(kwargs, message):
    with pytest.raises(UsageError, match=message):
        LiveRuleParams(**kwargs)


def test_time_must_increase_and_the_end_of_a_clip_holds_the_last_score():
    rule = LiveRule(tau_s=1.0)
    rule.update(0.0, 0.0)
    rule.update(1.0, 1.0)
    with pytest.raises(TimeOrderError, match="not after"):
        rule.update(1.0, 0.5)
    end = rule.at_end(3.0)
    assert end.flagged and end.smoothed == pytest.approx(1 - math.exp(-2))
