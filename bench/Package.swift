// swift-tools-version: 6.1
// Benchmarks: a separate package that depends on the root package by path (see ../README / COMMON brief).
import PackageDescription

let package = Package(
    name: "te-bench",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "trade-eligibility", path: ".."),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
    ],
    targets: [
        .executableTarget(
            name: "triton-bench",
            dependencies: [
                .product(name: "TritonClient", package: "trade-eligibility"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            path: "Sources/triton-bench",
            swiftSettings: [.swiftLanguageMode(.v6)]),
    ]
)
