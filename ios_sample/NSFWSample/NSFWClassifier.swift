import CoreML
import CoreGraphics
import ImageIO
import NSFWCore
import Vision

/// Wraps Vision and the Core ML model that `nsfw-mobile convert` writes.
///
/// Preprocessing matches the toolkit: the whole image is squashed to the
/// model's 224x224 input without cropping (`imageCropAndScaleOption =
/// .scaleFill`, the toolkit's "squash, no crop" bilinear resize), the image's
/// orientation is applied first (the toolkit applies EXIF orientation), and
/// the model itself scales pixels by 1/255, so nothing else happens here.
final class NSFWClassifier: @unchecked Sendable {
    enum Failure: Error, CustomStringConvertible {
        case contract(String)
        case vision(Error)
        case classification(ClassificationError)

        var description: String {
            switch self {
            case .contract(let message): return "Model does not match the app: \(message)"
            case .vision(let error): return "Vision failed: \(error.localizedDescription)"
            case .classification(let error): return error.description
            }
        }
    }

    private let visionModel: VNCoreMLModel
    /// The model's classes and NSFW labels, read from its metadata.
    let labels: ModelLabels

    /// Loads the compiled `NSFW.mlmodelc` that Xcode builds from models/NSFW.mlmodel.
    convenience init(configuration: MLModelConfiguration = MLModelConfiguration()) throws {
        guard let url = Bundle.main.url(forResource: "NSFW", withExtension: "mlmodelc") else {
            throw Failure.contract("NSFW.mlmodelc is missing from the app bundle")
        }
        try self.init(model: MLModel(contentsOf: url, configuration: configuration))
    }

    init(model: MLModel) throws {
        labels = try NSFWClassifier.checkContract(model.modelDescription)
        visionModel = try VNCoreMLModel(for: model)
        visionModel.inputImageFeatureName = ModelContract.inputName
    }

    /// Refuses a model whose input or outputs differ from what the app expects, and
    /// returns its labels and NSFW labels as its metadata states them.
    static func checkContract(_ description: MLModelDescription) throws -> ModelLabels {
        guard description.inputDescriptionsByName[ModelContract.inputName]?.type == .image else {
            throw Failure.contract("no image input named \"\(ModelContract.inputName)\"")
        }
        guard description.predictedFeatureName == ModelContract.labelOutput else {
            throw Failure.contract("label output is not \"\(ModelContract.labelOutput)\"")
        }
        guard description.predictedProbabilitiesName == ModelContract.probabilitiesOutput else {
            throw Failure.contract("probabilities output is not \"\(ModelContract.probabilitiesOutput)\"")
        }
        let classLabels = (description.classLabels as? [String]) ?? []
        let userDefined = description.metadata[.creatorDefinedKey] as? [String: String] ?? [:]
        do {
            return try ModelLabels(classLabels: classLabels, userDefined: userDefined)
        } catch let error as ModelLabelsError {
            throw Failure.contract(error.description)
        }
    }

    /// Classifies one image; `orientation` is how the pixels must be turned to be upright.
    func classify(_ image: CGImage, orientation: CGImagePropertyOrientation = .up) async throws -> Classification {
        try await perform { VNImageRequestHandler(cgImage: image, orientation: orientation) }
    }

    /// Classifies one camera frame.
    func classify(_ pixelBuffer: CVPixelBuffer, orientation: CGImagePropertyOrientation) async throws -> Classification {
        try await perform { VNImageRequestHandler(cvPixelBuffer: pixelBuffer, orientation: orientation) }
    }

    private func perform(_ makeHandler: @escaping () -> VNImageRequestHandler) async throws -> Classification {
        try await withCheckedThrowingContinuation { continuation in
            let request = VNCoreMLRequest(model: visionModel) { request, error in
                if let error {
                    continuation.resume(throwing: Failure.vision(error))
                    return
                }
                let observations = request.results as? [VNClassificationObservation] ?? []
                guard !observations.isEmpty else {
                    continuation.resume(throwing: Failure.classification(.noResults))
                    return
                }
                do {
                    let pairs = observations.map { ($0.identifier, Double($0.confidence)) }
                    let classification = try Classification(pairs: pairs, labels: self.labels)
                    continuation.resume(returning: classification)
                } catch let error as ClassificationError {
                    continuation.resume(throwing: Failure.classification(error))
                } catch {
                    continuation.resume(throwing: Failure.vision(error))
                }
            }
            request.imageCropAndScaleOption = .scaleFill
            do {
                try makeHandler().perform([request])
            } catch {
                continuation.resume(throwing: Failure.vision(error))
            }
        }
    }
}
