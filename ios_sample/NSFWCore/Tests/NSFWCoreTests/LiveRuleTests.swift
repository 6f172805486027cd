import Foundation
import XCTest
@testable import NSFWCore

/// The shared vectors of the live rule, the file the Python and JavaScript tests run:
/// tests/vectors/live_rule.json at the repository root (four folders above this file).
final class LiveRuleTests: XCTestCase {
    private struct Vectors: Decodable {
        let tolerance: Double
        let cases: [Case]
    }

    private struct Case: Decodable {
        let name: String
        let params: Params
        let steps: [Step]
    }

    private struct Params: Decodable {
        let on: Double
        let off: Double?
        let tau_s: Double
        let min_duration_s: Double
        let max_gap_s: Double?
    }

    private struct Step: Decodable {
        let reset: Bool?
        let t: Double?
        let score: Double?
        let state: String?
        let smoothed: Double?
        let since: Double?
    }

    private func vectors() throws -> Vectors {
        let url = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent() // NSFWCoreTests
            .deletingLastPathComponent() // Tests
            .deletingLastPathComponent() // NSFWCore
            .deletingLastPathComponent() // ios_sample
            .deletingLastPathComponent() // the repository
            .appendingPathComponent("tests/vectors/live_rule.json")
        return try JSONDecoder().decode(Vectors.self, from: Data(contentsOf: url))
    }

    func testTheSharedVectors() throws {
        let vectors = try vectors()
        XCTAssertGreaterThan(vectors.cases.count, 5)
        for vector in vectors.cases {
            let p = vector.params
            var rule = LiveRule(LiveRuleParameters(on: p.on, off: p.off, tauS: p.tau_s, minDurationS: p.min_duration_s, maxGapS: p.max_gap_s))
            for (index, step) in vector.steps.enumerated() {
                if step.reset == true {
                    rule.reset()
                    continue
                }
                let got = rule.update(at: step.t!, nsfwScore: step.score!)
                let place = "\(vector.name), step \(index)"
                XCTAssertEqual(got.state.rawValue, step.state!, place)
                XCTAssertEqual(got.smoothed, step.smoothed!, accuracy: vectors.tolerance, place)
                XCTAssertEqual(got.since, step.since!, accuracy: vectors.tolerance, place)
            }
        }
    }
}
