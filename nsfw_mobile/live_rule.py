"""The live rule: per-frame NSFW scores -> a smoothed score and an off / pending / on state.

One rule for video files (``video.py``), the web sample's camera (``web_sample/live-rule.js``)
and the iOS sample (``NSFWCore/LiveRule.swift``), specified in docs/live-rule.md and checked
in every language by the same vectors (tests/vectors/live_rule.json). Its parameters are in
seconds, so the same scores give the same states at one sample a second or at 30 fps.

- Each score holds from its own time to the next sample's (the frame on screen).
- The smoothed score follows it as an exponential moving average with time constant
  ``tau_s``: over ``dt`` seconds it moves ``1 - exp(-dt / tau_s)`` of the way towards the
  score that was on screen. ``tau_s`` 0: no smoothing, the state follows each score.
- Hysteresis: the state turns on once the smoothed score is above ``on`` (strictly) and has
  stayed above it for ``min_duration_s``; it is ``pending`` meanwhile; it turns off when the
  smoothed score is below ``off`` (strictly). Crossing times are computed exactly between
  samples, so they do not depend on the frame rate.
- ``max_gap_s``: two samples further apart than this restart the rule (a stalled camera);
  None (the default, and what video files use): the last score holds over any gap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import NsfwMobileError, UsageError

OFF, PENDING, ON = "off", "pending", "on"
TIME_EPSILON_S = 1e-6
"""Times within a microsecond are equal (sums of 0.1 s steps are not exact in binary)."""


class TimeOrderError(NsfwMobileError, ValueError):
    """A sample at or before the previous one: the rule takes samples in increasing time."""


@dataclass(frozen=True)
class LiveRuleParams:
    on: float = 0.5
    """The state turns on above this smoothed score."""
    off: float | None = None
    """The state turns off below this smoothed score; default 0.8 x ``on``."""
    tau_s: float = 0.5
    """Time constant of the smoothing, seconds (0: none)."""
    min_duration_s: float = 0.0
    """The smoothed score stays above ``on`` this long before the state turns on."""
    max_gap_s: float | None = None
    """A longer gap between two samples restarts the rule; None: no limit."""

    def __post_init__(self):
        if not 0 <= self.on <= 1:
            raise UsageError(f"live rule: on threshold {self.on} is outside 0..1")
        if self.off is not None and not 0 <= self.off <= self.on:
            raise UsageError(f"live rule: off threshold {self.off} must be in 0..on ({self.on})")
        for name in ("tau_s", "min_duration_s"):
            if not getattr(self, name) >= 0:
                raise UsageError(f"live rule: {name} must be 0 or more seconds")
        if self.max_gap_s is not None and not self.max_gap_s > 0:
            raise UsageError("live rule: max_gap_s must be above 0 seconds (or None)")

    @property
    def off_threshold(self) -> float:
        return self.on * 0.8 if self.off is None else self.off

    def latency_s(self, score: float = 1.0) -> float:
        """Seconds from a step of the score from 0 to ``score`` to the state turning on, in
        continuous time (a sampled feed adds up to one sample); inf if it never does."""
        if score <= self.on:
            return math.inf
        rise = 0.0 if self.tau_s == 0 else self.tau_s * math.log(score / (score - self.on))
        return rise + self.min_duration_s


@dataclass(frozen=True)
class LiveState:
    t: float
    """Seconds, the sample's time."""
    smoothed: float
    state: str
    """off, pending or on."""
    since: float
    """When the smoothed score crossed into this state's side of the thresholds (the
    start of a pending or on stretch; the end of the last one for off), in seconds."""

    @property
    def flagged(self) -> bool:
        return self.state == ON


class LiveRule:
    """Feed ``update(t, score)`` one sample at a time, in increasing time."""

    def __init__(self, params: LiveRuleParams | None = None, **overrides):
        self.params = params or LiveRuleParams(**overrides)
        self.reset()

    def reset(self) -> None:
        """Forget everything: the next sample starts afresh (a new feed or clip)."""
        self._t: float | None = None
        self._smoothed = 0.0
        self._score = 0.0  # the score on screen since the last sample
        self._state, self._since = OFF, 0.0

    def _crossing(self, level: float, before: float, t_before: float, t: float) -> float:
        """When the smoothed score, moving from ``before`` at ``t_before`` towards the score
        on screen, reached ``level``; ``t`` with no smoothing (it jumped at the sample)."""
        target, tau = self._score, self.params.tau_s
        if tau == 0 or before == target or (level - target) * (before - target) <= 0:
            return t
        crossed = t_before + tau * math.log((before - target) / (level - target))
        return min(max(crossed, t_before), t)

    def update(self, t: float, score: float) -> LiveState:
        p = self.params
        if self._t is not None and t <= self._t:
            raise TimeOrderError(
                f"live rule: time {t} s is not after the previous sample's {self._t} s"
            )
        if self._t is not None and p.max_gap_s is not None and t - self._t > p.max_gap_s:
            self.reset()
        score = float(score)
        if self._t is None:  # the first sample: nothing before it
            before, t_before = score, t
            self._smoothed, self._score, self._state, self._since = score, score, OFF, t
        else:
            before, t_before = self._smoothed, self._t
            if p.tau_s == 0:
                self._smoothed = score
            else:
                decay = math.exp(-(t - self._t) / p.tau_s)
                self._smoothed = self._score + (self._smoothed - self._score) * decay
        smoothed = self._smoothed
        if self._state == OFF and smoothed > p.on:
            self._state, self._since = PENDING, self._crossing(p.on, before, t_before, t)
        if self._state == PENDING:
            if smoothed <= p.on:
                self._state, self._since = OFF, self._crossing(p.on, before, t_before, t)
            elif t - self._since >= p.min_duration_s - TIME_EPSILON_S:
                self._state = ON
        elif self._state == ON and smoothed < p.off_threshold:
            self._state = OFF
            self._since = self._crossing(p.off_threshold, before, t_before, t)
        self._t, self._score = t, score
        return LiveState(t=t, smoothed=smoothed, state=self._state, since=self._since)

    def at_end(self, t: float) -> LiveState:
        """The state at ``t`` (the end of a clip) with no new sample: the last score has
        stayed on screen until then."""
        if self._t is None or t <= self._t:
            return LiveState(t, self._smoothed, self._state, self._since)
        return self.update(t, self._score)
