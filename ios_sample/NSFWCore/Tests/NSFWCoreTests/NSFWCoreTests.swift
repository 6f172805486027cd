import XCTest
@testable import NSFWCore

final class NSFWCoreTests: XCTestCase {
    /// What `nsfw-mobile convert` writes for the pretrained model.
    private let metadata = ["nsfw_labels": "[\"Porn\", \"Sexy\"]"]

    private func pretrainedLabels() throws -> ModelLabels {
        try ModelLabels(classLabels: ["Neutral", "Porn", "Sexy"], userDefined: metadata)
    }

    private func classification(_ neutral: Double, _ porn: Double, _ sexy: Double) throws -> Classification {
        try Classification(pairs: [("Neutral", neutral), ("Porn", porn), ("Sexy", sexy)], labels: pretrainedLabels())
    }

    func testScoreIsTheSumOfTheNSFWLabelsFromTheMetadata() throws {
        let result = try classification(0.2, 0.5, 0.3)
        XCTAssertEqual(result.label, "Porn")
        XCTAssertEqual(result.nsfwScore, 0.8, accuracy: 1e-9)
        XCTAssertEqual(result.ordered.map(\.label), ["Neutral", "Porn", "Sexy"])
    }

    func testAnotherModelsLabelsComeFromItsMetadata() throws {
        let guardLabels = try ModelLabels(classLabels: ["safe", "unsafe"], userDefined: ["nsfw_labels": "[\"unsafe\"]"])
        let result = try Classification(pairs: [("safe", 0.3), ("unsafe", 0.7)], labels: guardLabels)
        XCTAssertEqual(result.nsfwScore, 0.7, accuracy: 1e-9)
    }

    func testMissingOrInconsistentMetadataIsAnError() {
        XCTAssertThrowsError(try ModelLabels(classLabels: ["a", "b"], userDefined: [:])) { error in
            XCTAssertEqual(error as? ModelLabelsError, .missingMetadata("nsfw_labels"))
        }
        XCTAssertThrowsError(try ModelLabels(classLabels: ["a"], userDefined: ["nsfw_labels": "[\"b\"]"])) { error in
            XCTAssertEqual(error as? ModelLabelsError, .unknownNSFWLabels(["b"]))
        }
    }

    func testUnknownAndMissingLabelsAreErrors() throws {
        let labels = try pretrainedLabels()
        XCTAssertThrowsError(try Classification(pairs: [("Drawing", 1.0)], labels: labels)) { error in
            XCTAssertEqual(error as? ClassificationError, .unknownLabel("Drawing"))
        }
        XCTAssertThrowsError(try Classification(pairs: [("Neutral", 1.0)], labels: labels)) { error in
            XCTAssertEqual(error as? ClassificationError, .missingLabels(["Porn", "Sexy"]))
        }
    }

    func testThresholdBlursAboveAndClamps() throws {
        var threshold = Threshold(0.5)
        XCTAssertTrue(threshold.shouldBlur(try classification(0.3, 0.4, 0.3)))
        XCTAssertFalse(threshold.shouldBlur(try classification(0.6, 0.2, 0.2)))
        threshold.set(7)
        XCTAssertEqual(threshold.value, 1)
        threshold.set(-1)
        XCTAssertEqual(threshold.value, 0)
        threshold.set(.nan)
        XCTAssertEqual(threshold.value, Threshold.defaultValue)
    }

    func testSmootherAveragesTheLastFrames() throws {
        var smoother = ScoreSmoother(window: 2)
        _ = smoother.add(try classification(1, 0, 0), at: 0.0)
        _ = smoother.add(try classification(0, 1, 0), at: 0.1)
        let smoothed = smoother.add(try classification(0, 1, 0), at: 0.2)
        XCTAssertEqual(smoothed.label, "Porn")
        XCTAssertEqual(smoothed.probabilities["Porn"]!, 1, accuracy: 1e-9)
        XCTAssertEqual(smoother.framesPerSecond!, 10, accuracy: 1e-6)
        smoother.reset()
        XCTAssertNil(smoother.smoothed)
        XCTAssertNil(smoother.framesPerSecond)
    }
}
