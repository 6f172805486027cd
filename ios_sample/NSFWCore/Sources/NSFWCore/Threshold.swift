/// The user's blur threshold on the NSFW score.
public struct Threshold: Equatable, Sendable {
    public static let defaultValue = 0.5

    public private(set) var value: Double

    public init(_ value: Double = Threshold.defaultValue) {
        self.value = Threshold.clamp(value)
    }

    public mutating func set(_ newValue: Double) {
        value = Threshold.clamp(newValue)
    }

    /// True when the image should be blurred.
    public func shouldBlur(_ classification: Classification) -> Bool {
        classification.nsfwScore > value
    }

    private static func clamp(_ value: Double) -> Double {
        guard value.isFinite else { return defaultValue }
        return min(max(value, 0), 1)
    }
}
