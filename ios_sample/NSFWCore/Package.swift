// swift-tools-version:5.9
import PackageDescription

// The sample's logic that needs no device: label mapping, thresholds, score
// smoothing and the model contract. `swift test` runs its tests on macOS or Linux.
let package = Package(
    name: "NSFWCore",
    platforms: [.iOS(.v16), .macOS(.v13)],
    products: [
        .library(name: "NSFWCore", targets: ["NSFWCore"]),
    ],
    targets: [
        .target(name: "NSFWCore"),
        .testTarget(name: "NSFWCoreTests", dependencies: ["NSFWCore"]),
    ]
)
