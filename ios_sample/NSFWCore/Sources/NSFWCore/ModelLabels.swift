import Foundation

/// The model's classes in output order, and which of them add up to the NSFW
/// score, as the model's own metadata states them.
public struct ModelLabels: Equatable, Sendable {
    public let labels: [String]
    public let nsfwLabels: [String]

    public init(labels: [String], nsfwLabels: [String]) throws {
        guard !labels.isEmpty else { throw ModelLabelsError.noLabels }
        let unknown = nsfwLabels.filter { !labels.contains($0) }
        guard unknown.isEmpty else { throw ModelLabelsError.unknownNSFWLabels(unknown) }
        self.labels = labels
        self.nsfwLabels = nsfwLabels
    }

    /// Reads the classifier's labels and the `nsfw_labels` entry (a JSON array) of the
    /// model's user-defined metadata, which `nsfw-mobile convert` writes.
    public init(classLabels: [String], userDefined: [String: String]) throws {
        guard let text = userDefined[ModelContract.nsfwLabelsKey] else {
            throw ModelLabelsError.missingMetadata(ModelContract.nsfwLabelsKey)
        }
        guard let data = text.data(using: .utf8),
              let nsfw = try? JSONDecoder().decode([String].self, from: data) else {
            throw ModelLabelsError.unreadableMetadata(ModelContract.nsfwLabelsKey)
        }
        try self.init(labels: classLabels, nsfwLabels: nsfw)
    }
}

public enum ModelLabelsError: Error, Equatable, CustomStringConvertible {
    case noLabels
    case unknownNSFWLabels([String])
    case missingMetadata(String)
    case unreadableMetadata(String)

    public var description: String {
        switch self {
        case .noLabels:
            return "The model is not a classifier: it has no class labels."
        case .unknownNSFWLabels(let labels):
            return "The model's NSFW labels \(labels) are not among its classes."
        case .missingMetadata(let key):
            return "The model has no \"\(key)\" metadata: convert it with nsfw-mobile."
        case .unreadableMetadata(let key):
            return "The model's \"\(key)\" metadata is not a JSON array of labels."
        }
    }
}
