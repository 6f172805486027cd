// The live rule (docs/live-rule.md): per-frame NSFW scores -> a smoothed score and an
// off / pending / on state, with parameters in seconds so that the same scores give the
// same states at any frame rate. The same rule as nsfw_mobile/live_rule.py (video files)
// and NSFWCore's LiveRule.swift (iOS), checked by tests/vectors/live_rule.json.
//
//   import { LiveRule } from "./live-rule.js";
//   const rule = new LiveRule({ on: 0.5, tauS: 0.5, maxGapS: 1 });
//   const { state, smoothed, since } = rule.update(seconds, nsfwScore);  // state: "off" | "pending" | "on"

export const OFF = "off";
export const PENDING = "pending";
export const ON = "on";
const TIME_EPSILON_S = 1e-6; // times within a microsecond are equal

export const DEFAULTS = Object.freeze({ on: 0.5, off: null, tauS: 0.5, minDurationS: 0, maxGapS: null });

export class LiveRule {
  constructor(params = {}) {
    const p = { ...DEFAULTS, ...params };
    if (!(p.on >= 0 && p.on <= 1)) throw new RangeError(`live rule: on threshold ${p.on} is outside 0..1`);
    if (p.off !== null && !(p.off >= 0 && p.off <= p.on)) throw new RangeError(`live rule: off threshold ${p.off} must be in 0..on (${p.on})`);
    if (!(p.tauS >= 0) || !(p.minDurationS >= 0)) throw new RangeError("live rule: tauS and minDurationS must be 0 or more seconds");
    if (p.maxGapS !== null && !(p.maxGapS > 0)) throw new RangeError("live rule: maxGapS must be above 0 seconds (or null)");
    this.params = Object.freeze({ ...p, off: p.off === null ? p.on * 0.8 : p.off });
    this.reset();
  }

  // Forget everything: the next sample starts afresh (a new feed or clip).
  reset() {
    this.t = null;
    this.smoothed = 0;
    this.score = 0; // the score on screen since the last sample
    this.state = OFF;
    this.since = 0;
  }

  // Seconds from a step of the score from 0 to `score` to the state turning on (continuous time).
  latencyS(score = 1) {
    const { on, tauS, minDurationS } = this.params;
    if (score <= on) return Infinity;
    return (tauS === 0 ? 0 : tauS * Math.log(score / (score - on))) + minDurationS;
  }

  crossing(level, before, tBefore, t) {
    const target = this.score;
    const tau = this.params.tauS;
    if (tau === 0 || before === target || (level - target) * (before - target) <= 0) return t;
    const crossed = tBefore + tau * Math.log((before - target) / (level - target));
    return Math.min(Math.max(crossed, tBefore), t);
  }

  update(t, score) {
    const p = this.params;
    if (this.t !== null && !(t > this.t)) throw new RangeError(`live rule: time ${t} s is not after the previous sample's ${this.t} s`);
    if (this.t !== null && p.maxGapS !== null && t - this.t > p.maxGapS) this.reset();
    let before;
    let tBefore;
    if (this.t === null) {
      before = score;
      tBefore = t;
      this.smoothed = score;
      this.score = score;
      this.state = OFF;
      this.since = t;
    } else {
      before = this.smoothed;
      tBefore = this.t;
      if (p.tauS === 0) this.smoothed = score;
      else this.smoothed = this.score + (this.smoothed - this.score) * Math.exp(-(t - this.t) / p.tauS);
    }
    const smoothed = this.smoothed;
    if (this.state === OFF && smoothed > p.on) {
      this.state = PENDING;
      this.since = this.crossing(p.on, before, tBefore, t);
    }
    if (this.state === PENDING) {
      if (smoothed <= p.on) {
        this.state = OFF;
        this.since = this.crossing(p.on, before, tBefore, t);
      } else if (t - this.since >= p.minDurationS - TIME_EPSILON_S) {
        this.state = ON;
      }
    } else if (this.state === ON && smoothed < p.off) {
      this.state = OFF;
      this.since = this.crossing(p.off, before, tBefore, t);
    }
    this.t = t;
    this.score = score;
    return { t, smoothed, state: this.state, since: this.since };
  }
}
