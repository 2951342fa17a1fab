import Foundation
import FuzzTargets
import GatewayFuzzTargets
import Testing

/// fuzz/ beside this package: its committed seeds and the inputs `make fuzz` found crashing.
let fuzzDirectory = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("fuzz")

/// The entry point of each fuzz target, by its directory name.
let fuzzTargets: [String: @Sendable ([UInt8]) throws(FuzzViolation) -> Void] = [
    FuzzTarget.normalizer.rawValue: { bytes throws(FuzzViolation) in try FuzzTarget.normalizer.run(bytes) },
    FuzzTarget.streamCodec.rawValue: { bytes throws(FuzzViolation) in try FuzzTarget.streamCodec.run(bytes) },
    ScoreRequestFuzz.name: { bytes throws(FuzzViolation) in try ScoreRequestFuzz.run(bytes) },
    HTTPFramingFuzz.name: { bytes throws(FuzzViolation) in try HTTPFramingFuzz.run(bytes) }
]

/// Every file under fuzz/<kind>/<target>/ (dot files aside), by target name.
func fuzzInputs(_ kind: String) throws -> [(String, URL)] {
    let root = fuzzDirectory.appendingPathComponent(kind)
    var out: [(String, URL)] = []
    for target in try FileManager.default.contentsOfDirectory(atPath: root.path).sorted() where !target.hasPrefix(".") {
        #expect(fuzzTargets[target] != nil, "fuzz/\(kind)/\(target) names no fuzz target")
        let directory = root.appendingPathComponent(target)
        for file in try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
        where !file.hasPrefix(".") {
            out.append((target, directory.appendingPathComponent(file)))
        }
    }
    return out
}

func replay(_ inputs: [(String, URL)]) throws {
    for (target, file) in inputs {
        let bytes = try [UInt8](Data(contentsOf: file))
        let run = try #require(fuzzTargets[target])
        #expect(throws: Never.self, "\(target) \(file.lastPathComponent)") { try run(bytes) }
    }
}

/// The fuzz targets' entry points without the sanitizer: a crash `make fuzz` found stays fixed, and the
/// seeds keep holding the invariants.
@Suite struct FuzzRegressionTests {
    @Test func everyFoundCrashStaysFixed() throws {
        try replay(try fuzzInputs("regressions"))
    }

    @Test func everySeedHoldsTheInvariants() throws {
        let seeds = try fuzzInputs("corpus")
        #expect(Set(seeds.map(\.0)) == Set(fuzzTargets.keys), "each target has seeds")
        try replay(seeds)
    }
}
