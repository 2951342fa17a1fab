// swift-tools-version: 6.1
// Benchmarks, separate from the main package (COMMON.md): release builds, results in bench/results/.
import PackageDescription

let package = Package(
    name: "te-bench",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "feature-bench", targets: ["FeatureBench"])
    ],
    dependencies: [
        .package(name: "trade-eligibility", path: ".."),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/ordo-one/malloc-interposer", from: "1.6.1"),
    ],
    targets: [
        // Per-quote cost of FeatureEngine (ns/quote, allocations/quote) on a recording.
        .executableTarget(
            name: "FeatureBench",
            dependencies: [
                .product(name: "FeatureEngine", package: "trade-eligibility"),
                .product(name: "TEModels", package: "trade-eligibility"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "MallocInterposerSwift", package: "malloc-interposer"),
            ],
            path: "Sources/FeatureBench", swiftSettings: [.swiftLanguageMode(.v6)]),
    ]
)
