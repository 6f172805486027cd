/// Averages the last few classifications of a live camera feed, so the label
/// does not flicker from frame to frame, and measures frames per second.
public struct ScoreSmoother: Sendable {
    public let window: Int
    private var recent: [Classification] = []
    private var frameTimes: [Double] = []

    public init(window: Int = 5) {
        precondition(window > 0, "window must be positive")
        self.window = window
    }

    /// Adds one frame's classification taken at `time` (seconds) and returns
    /// the average over the last `window` frames.
    public mutating func add(_ classification: Classification, at time: Double) -> Classification {
        recent.append(classification)
        if recent.count > window { recent.removeFirst(recent.count - window) }
        frameTimes.append(time)
        if frameTimes.count > window + 1 { frameTimes.removeFirst(frameTimes.count - window - 1) }
        return smoothed!
    }

    /// The average of the recent classifications, or nil before the first frame.
    public var smoothed: Classification? {
        guard !recent.isEmpty else { return nil }
        var sums: [String: Double] = [:]
        for item in recent {
            for (label, probability) in item.probabilities {
                sums[label, default: 0] += probability
            }
        }
        let averages = sums.mapValues { $0 / Double(recent.count) }
        let top = averages.max { $0.value < $1.value }!
        return Classification(label: top.key, probabilities: averages, labels: recent[0].labels)
    }

    /// Frames per second over the recent frames, or nil with fewer than two.
    public var framesPerSecond: Double? {
        guard frameTimes.count >= 2, let first = frameTimes.first, let last = frameTimes.last,
              last > first else { return nil }
        return Double(frameTimes.count - 1) / (last - first)
    }

    public mutating func reset() {
        recent.removeAll()
        frameTimes.removeAll()
    }
}
