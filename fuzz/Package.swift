// swift-tools-version: 6.1
import Foundation
import PackageDescription

// A path dependency is known by its directory's name (the clone's, the worktree's), not by its
// manifest's `name`: derive it so the products resolve wherever the repository is checked out.
let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .lastPathComponent.lowercased()

// libFuzzer targets, separate from the main package (../Package.swift) because everything they link is
// built with `-sanitize=fuzzer,address` (scripts/fuzz.sh): the code under test must be instrumented for
// coverage to guide. Each target runs libFuzzer's driver over an entry point of FuzzTargets, the
// same one the main suite's FuzzRegressionTests replays.
let package = Package(
    name: "trade-eligibility-fuzz",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "fuzz-normalizer", targets: ["NormalizerFuzz"]),
        .executable(name: "fuzz-stream-codec", targets: ["StreamCodecFuzz"]),
        .executable(name: "fuzz-score-request", targets: ["ScoreRequestFuzz"]),
        .executable(name: "fuzz-http-framing", targets: ["HTTPFramingFuzz"])
    ],
    dependencies: [.package(path: "..")],
    targets: [
        .target(name: "CLibFuzzer", path: "Sources/CLibFuzzer"),
        .executableTarget(
            name: "NormalizerFuzz", dependencies: ["CLibFuzzer", .product(name: "FuzzTargets", package: root)],
            path: "Sources/NormalizerFuzz", swiftSettings: [.swiftLanguageMode(.v6)]),
        .executableTarget(
            name: "StreamCodecFuzz", dependencies: ["CLibFuzzer", .product(name: "FuzzTargets", package: root)],
            path: "Sources/StreamCodecFuzz", swiftSettings: [.swiftLanguageMode(.v6)]),
        // GatewayHTTP pulls Hummingbird and NIO into the sanitized build (about 3 min more, once).
        .executableTarget(
            name: "ScoreRequestFuzz", dependencies: ["CLibFuzzer", .product(name: "GatewayFuzzTargets", package: root)],
            path: "Sources/ScoreRequestFuzz", swiftSettings: [.swiftLanguageMode(.v6)]),
        .executableTarget(
            name: "HTTPFramingFuzz", dependencies: ["CLibFuzzer", .product(name: "GatewayFuzzTargets", package: root)],
            path: "Sources/HTTPFramingFuzz", swiftSettings: [.swiftLanguageMode(.v6)])
    ]
)
