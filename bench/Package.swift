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
        .executable(name: "strategies-bench", targets: ["StrategiesBench"]),
        .executable(name: "feature-bench", targets: ["FeatureBench"]),
        .executable(name: "triton-bench", targets: ["TritonBench"]),
        .executable(name: "audit-bench", targets: ["AuditBench"]),
        .executable(name: "gateway-bench", targets: ["GatewayBench"]),
        .executable(name: "pipeline-bench", targets: ["PipelineBench"]),
        .executable(name: "ingest-bench", targets: ["IngestBench"]),
        .executable(name: "codec-bench", targets: ["CodecBench"]),
        .executable(name: "stage-bench", targets: ["StageBench"])
    ],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/ordo-one/malloc-interposer", from: "1.6.1")
    ],
    targets: [
        .executableTarget(
            name: "RedisBench",
            dependencies: [
                .product(name: "TERedis", package: root),
                .product(name: "Histogram", package: "hdrhistogram-swift")
            ],
            path: "Sources/RedisBench",
            swiftSettings: [.swiftLanguageMode(.v6)]),
        // Drives the real strategy-engine and opportunity-aggregator binaries (built by run-strategies.sh).
        .executableTarget(
            name: "StrategiesBench",
            dependencies: [
                .product(name: "TERedis", package: root),
                .product(name: "TEModels", package: root),
                .product(name: "Histogram", package: "hdrhistogram-swift")
            ],
            path: "Sources/StrategiesBench",
            swiftSettings: [.swiftLanguageMode(.v6)]),
        // Per-quote cost of FeatureEngine (ns/quote, allocations/quote) on a recording, and the
        // throughput of feature-pipeline (quotes/s from te:ticks to te:features).
        .executableTarget(
            name: "FeatureBench",
            dependencies: [
                .product(name: "FeatureEngine", package: root),
                .product(name: "TEModels", package: root),
                .product(name: "MarketData", package: root),
                .product(name: "TERedis", package: root),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "MallocInterposerSwift", package: "malloc-interposer")
            ],
            path: "Sources/FeatureBench", swiftSettings: [.swiftLanguageMode(.v6)]),
        .executableTarget(
            name: "TritonBench",
            dependencies: [
                .product(name: "TritonClient", package: root),
                .product(name: "Histogram", package: "hdrhistogram-swift")
            ],
            path: "Sources/triton-bench",
            swiftSettings: [.swiftLanguageMode(.v6)]),
        // Rows/s through audit-writer next to a raw psql COPY of the same rows (bench/run-audit.sh).
        .executableTarget(
            name: "AuditBench",
            dependencies: [
                .product(name: "TERedis", package: root),
                .product(name: "TEModels", package: root),
                .product(name: "Histogram", package: "hdrhistogram-swift")
            ],
            path: "Sources/AuditBench", swiftSettings: [.swiftLanguageMode(.v6)]),
        // End-to-end latency Kafka produce → te:features / te:opportunities through the real services, and
        // each stage's sustained throughput (bench/run-pipeline.sh starts the services).
        .executableTarget(
            name: "PipelineBench",
            dependencies: [
                .product(name: "TEKafka", package: root),
                .product(name: "TERedis", package: root),
                .product(name: "MarketData", package: root),
                .product(name: "Histogram", package: "hdrhistogram-swift")
            ],
            path: "Sources/PipelineBench", swiftSettings: [.swiftLanguageMode(.v6)]),
        // Open-loop produce → ingest → Redis latency of a running ingest (bench/run-ingest.sh).
        .executableTarget(
            name: "IngestBench",
            dependencies: [
                .product(name: "TEKafka", package: root),
                .product(name: "TERedis", package: root),
                .product(name: "MarketData", package: root),
                .product(name: "Histogram", package: "hdrhistogram-swift")
            ],
            path: "Sources/IngestBench", swiftSettings: [.swiftLanguageMode(.v6)]),
        // ns and allocations per entry of each stream codec against the Codable encoding (bench/run-codecs.sh).
        .executableTarget(
            name: "CodecBench",
            dependencies: [
                .product(name: "TECore", package: root),
                .product(name: "TEModels", package: root),
                .product(name: "TERedis", package: root),
                .product(name: "MarketData", package: root),
                .product(name: "FeatureEngine", package: root),
                .product(name: "MallocInterposerSwift", package: "malloc-interposer")
            ],
            path: "Sources/CodecBench", swiftSettings: [.swiftLanguageMode(.v6)]),
        // Per-stage drain of a preloaded input, paced entry → output latency, and the Redis / PostgreSQL
        // references in the same run (bench/run-stages.sh starts the servers and hands over the binaries).
        .executableTarget(
            name: "StageBench",
            dependencies: [
                .product(name: "TEModels", package: root),
                .product(name: "TERedis", package: root),
                .product(name: "TEPostgres", package: root),
                .product(name: "Histogram", package: "hdrhistogram-swift")
            ],
            path: "Sources/StageBench", swiftSettings: [.swiftLanguageMode(.v6)]),
        .executableTarget(
            name: "GatewayBench",
            dependencies: [.product(name: "Histogram", package: "hdrhistogram-swift")],
            path: "Sources/GatewayBench",
            swiftSettings: [.swiftLanguageMode(.v6)])
    ]
)
