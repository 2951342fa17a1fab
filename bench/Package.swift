// swift-tools-version: 6.1
import Foundation
import PackageDescription

// A path dependency is known by its directory's name (the clone's, the worktree's), not by its
// manifest's `name`: derive it so the products resolve wherever the repository is checked out.
let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .lastPathComponent.lowercased()

// Benchmarks, separate from the main package (../Package.swift) so its tests never build them.
let package = Package(
    name: "trade-eligibility-bench",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "redis-bench", targets: ["RedisBench"]),
        .executable(name: "gateway-bench", targets: ["GatewayBench"]),
    ],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
    ],
    targets: [
        .executableTarget(
            name: "RedisBench",
            dependencies: [
                .product(name: "TERedis", package: root),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            path: "Sources/RedisBench",
            swiftSettings: [.swiftLanguageMode(.v6)]),
        .executableTarget(
            name: "GatewayBench",
            dependencies: [.product(name: "Histogram", package: "hdrhistogram-swift")],
            path: "Sources/GatewayBench",
            swiftSettings: [.swiftLanguageMode(.v6)]),
    ]
)
