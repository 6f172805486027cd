import Foundation

/// The live rule (docs/live-rule.md): per-frame NSFW scores -> a smoothed score and an
/// off / pending / on state, with parameters in seconds so that the same scores give the
/// same states at any frame rate. The same rule as the toolkit's `live_rule.py` (video
/// files) and the web sample's `live-rule.js`; `LiveRuleTests` runs the shared vectors in
/// tests/vectors/live_rule.json.
public struct LiveRuleParameters: Sendable, Equatable {
    /// The state turns on above this smoothed score.
    public var on: Double
    /// The state turns off below this smoothed score (default 0.8 x on).
    public var off: Double
    /// Time constant of the smoothing, seconds (0: none).
    public var tauS: Double
    /// The smoothed score stays above `on` this long before the state turns on.
    public var minDurationS: Double
    /// A longer gap between two samples restarts the rule; nil: no limit.
    public var maxGapS: Double?

    public init(on: Double = 0.5, off: Double? = nil, tauS: Double = 0.5, minDurationS: Double = 0, maxGapS: Double? = nil) {
        precondition((0...1).contains(on), "on must be in 0...1")
        precondition(off.map { (0...on).contains($0) } ?? true, "off must be in 0...on")
        precondition(tauS >= 0 && minDurationS >= 0, "tauS and minDurationS must be 0 or more")
        precondition(maxGapS.map { $0 > 0 } ?? true, "maxGapS must be above 0 or nil")
        self.on = on
        self.off = off ?? on * 0.8
        self.tauS = tauS
        self.minDurationS = minDurationS
        self.maxGapS = maxGapS
    }
}

public enum LiveRuleState: String, Sendable {
    case off, pending, on
}

public struct LiveRuleOutput: Sendable, Equatable {
    public let t: Double
    public let smoothed: Double
    public let state: LiveRuleState
    /// When the smoothed score crossed into this state's side of the thresholds, seconds.
    public let since: Double
    public var flagged: Bool { state == .on }
}

public struct LiveRule: Sendable {
    public let parameters: LiveRuleParameters
    private static let timeEpsilon = 1e-6 // times within a microsecond are equal
    private var last: Double?
    private var smoothed = 0.0
    private var score = 0.0 // the score on screen since the last sample
    private var state = LiveRuleState.off
    private var since = 0.0

    public init(_ parameters: LiveRuleParameters = LiveRuleParameters()) {
        self.parameters = parameters
    }

    /// Forget everything: the next sample starts afresh (a new feed).
    public mutating func reset() {
        last = nil
        smoothed = 0
        score = 0
        state = .off
        since = 0
    }

    private func crossing(_ level: Double, from before: Double, at tBefore: Double, to t: Double) -> Double {
        let tau = parameters.tauS
        if tau == 0 || before == score || (level - score) * (before - score) <= 0 { return t }
        let crossed = tBefore + tau * log((before - score) / (level - score))
        return min(max(crossed, tBefore), t)
    }

    /// One sample: `t` in seconds, strictly after the previous one (earlier samples are ignored
    /// and return the current state), `nsfwScore` in 0...1.
    public mutating func update(at t: Double, nsfwScore newScore: Double) -> LiveRuleOutput {
        let p = parameters
        if let previous = last, t <= previous {
            return LiveRuleOutput(t: previous, smoothed: smoothed, state: state, since: since)
        }
        if let previous = last, let gap = p.maxGapS, t - previous > gap { reset() }
        let before: Double
        let tBefore: Double
        if let previous = last {
            before = smoothed
            tBefore = previous
            smoothed = p.tauS == 0 ? newScore : score + (smoothed - score) * exp(-(t - previous) / p.tauS)
        } else {
            before = newScore
            tBefore = t
            smoothed = newScore
            score = newScore
            state = .off
            since = t
        }
        if state == .off && smoothed > p.on {
            state = .pending
            since = crossing(p.on, from: before, at: tBefore, to: t)
        }
        if state == .pending {
            if smoothed <= p.on {
                state = .off
                since = crossing(p.on, from: before, at: tBefore, to: t)
            } else if t - since >= p.minDurationS - Self.timeEpsilon {
                state = .on
            }
        } else if state == .on && smoothed < p.off {
            state = .off
            since = crossing(p.off, from: before, at: tBefore, to: t)
        }
        last = t
        score = newScore
        return LiveRuleOutput(t: t, smoothed: smoothed, state: state, since: since)
    }
}
