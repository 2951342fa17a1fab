import Foundation
import FuzzTargets
import Testing

/// fuzz/ beside this package: its committed seeds and the inputs `make fuzz` found crashing.
let fuzzDirectory = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("fuzz")

/// Every file under fuzz/<kind>/<target>/ (dot files aside), by target.
func fuzzInputs(_ kind: String) throws -> [(FuzzTarget, URL)] {
    let root = fuzzDirectory.appendingPathComponent(kind)
    var out: [(FuzzTarget, URL)] = []
    for name in try FileManager.default.contentsOfDirectory(atPath: root.path).sorted() where !name.hasPrefix(".") {
        let target = try #require(FuzzTarget(rawValue: name), "fuzz/\(kind)/\(name) names no fuzz target")
        let directory = root.appendingPathComponent(name)
        for file in try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted() where !file.hasPrefix(".") {
            out.append((target, directory.appendingPathComponent(file)))
        }
    }
    return out
}

func replay(_ inputs: [(FuzzTarget, URL)]) throws {
    for (target, file) in inputs {
        let bytes = try [UInt8](Data(contentsOf: file))
        #expect(throws: Never.self, "\(target.rawValue) \(file.lastPathComponent)") { try target.run(bytes) }
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
        #expect(Set(seeds.map(\.0)) == Set(FuzzTarget.allCases), "each target has seeds")
        try replay(seeds)
    }
}
