/// One classified image: the top label, the probability of every class and
/// the NSFW score (the sum of the model's NSFW labels' probabilities, such as
/// P(Porn) + P(Sexy)) that the UI acts on.
public struct Classification: Equatable, Sendable {
    public let label: String
    public let probabilities: [String: Double]
    public let labels: ModelLabels

    public init(label: String, probabilities: [String: Double], labels: ModelLabels) {
        self.label = label
        self.probabilities = probabilities
        self.labels = labels
    }

    /// Builds a classification from raw (label, probability) pairs, as Vision
    /// reports them. A label the model's metadata does not list is an error.
    public init(pairs: [(String, Double)], labels: ModelLabels) throws {
        var probabilities: [String: Double] = [:]
        for (label, probability) in pairs {
            guard labels.labels.contains(label) else {
                throw ClassificationError.unknownLabel(label)
            }
            probabilities[label] = probability
        }
        let missing = labels.labels.filter { probabilities[$0] == nil }
        guard missing.isEmpty else {
            throw ClassificationError.missingLabels(missing)
        }
        let top = probabilities.max { $0.value < $1.value }!
        self.init(label: top.key, probabilities: probabilities, labels: labels)
    }

    public var nsfwScore: Double {
        labels.nsfwLabels.reduce(0) { $0 + (probabilities[$1] ?? 0) }
    }

    /// Probabilities in the model's label order, for display.
    public var ordered: [(label: String, probability: Double)] {
        labels.labels.map { ($0, probabilities[$0] ?? 0) }
    }
}

public enum ClassificationError: Error, Equatable, CustomStringConvertible {
    case unknownLabel(String)
    case missingLabels([String])
    case noResults

    public var description: String {
        switch self {
        case .unknownLabel(let label):
            return "The model returned the label \"\(label)\", which this app does not know."
        case .missingLabels(let labels):
            return "The model returned no probability for \(labels.joined(separator: ", "))."
        case .noResults:
            return "The model returned no classification."
        }
    }
}
