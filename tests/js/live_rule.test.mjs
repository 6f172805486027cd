// The JavaScript live rule (web_sample/live-rule.js) against the shared vectors; run by
// tests/test_live_rule.py with `node --test`.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { LiveRule } from "../../web_sample/live-rule.js";

const vectors = JSON.parse(readFileSync(new URL("../vectors/live_rule.json", import.meta.url), "utf8"));

function near(actual, expected, tolerance, what) {
  assert.ok(Math.abs(actual - expected) <= tolerance, `${what}: ${actual} != ${expected}`);
}

for (const vector of vectors.cases) {
  test(vector.name, () => {
    const p = vector.params;
    const rule = new LiveRule({ on: p.on, off: p.off, tauS: p.tau_s, minDurationS: p.min_duration_s, maxGapS: p.max_gap_s });
    for (const [index, step] of vector.steps.entries()) {
      if (step.reset) {
        rule.reset();
        continue;
      }
      const got = rule.update(step.t, step.score);
      const where = `${vector.name}, step ${index} (t ${step.t})`;
      assert.equal(got.state, step.state, where);
      near(got.smoothed, step.smoothed, vectors.tolerance, `${where} smoothed`);
      near(got.since, step.since, vectors.tolerance, `${where} since`);
    }
  });
}

test("time must increase", () => {
  const rule = new LiveRule();
  rule.update(1, 0.2);
  assert.throws(() => rule.update(1, 0.3), RangeError);
});
