import Foundation
import Testing
import TritonClient

/// The versions whose manifest serves a LightGBM booster (train.py writes the LightGBM candidate as one of them).
func lightGBMVersions() throws -> [String] {
    try ["1", "2"].filter { try ModelWeights.load(version: $0).kind == "lightgbm" }
}

/// The LightGBM serving path on the real Triton (the shared one, serving this checkout's model repository): scores
/// equal an independent computation of the same artefact, and a tampered artefact never loads.
@Suite(.timeLimit(.minutes(4)))
struct LightGBMServingTests {
    @Test func servedScoresEqualLightGBMPredictThroughTheCalibrationMap() async throws {
        let versions = try lightGBMVersions()
        try #require(!versions.isEmpty, "no version of the model repository serves LightGBM")
        let client = try TritonClient(url: try tritonURL())
        for version in versions {
            let weights = try ModelWeights.load(version: version)
            // One batch at the model's max_batch_size and single rows, spread over the training distribution.
            let rows = sampleRows(256, seed: 17, weights: weights)
            let batch = try await client.infer(
                model: modelName, version: version, rows: rows, rowCount: 256, deadline: deadline(.seconds(20)))
            let expected = try referenceScores(rows, versionDirectory: weights.directory)
            #expect(batch.count == 256)
            for (i, score) in batch.enumerated() {
                #expect(
                    abs(Double(score) - expected[i]) < 1e-6,
                    "v\(version) row \(i): served \(score), lightgbm \(expected[i])")
            }
            // Not one constant: the booster's trees put these rows on different levels of the (stepwise) map.
            #expect(Set(batch).count > 1, "v\(version) gave one score for 256 rows")
            for i in 0..<8 {
                let row = Array(rows[(i * 8)..<(i * 8 + 8)])
                let single = try await client.infer(
                    model: modelName, version: version, rows: row, rowCount: 1, deadline: deadline(.seconds(10)))
                #expect(single == [batch[i]], "v\(version) row \(i) alone \(single) vs in a batch \(batch[i])")
            }
        }
    }

    /// A private Triton on a copy of the model repository with one byte of a LightGBM version's file changed:
    /// the version never becomes READY and the server log names the file whose sha256 differs.
    @Test(arguments: ["booster", "calibration"])
    func tamperedFileIsRefusedAtLoad(file: String) async throws {
        _ = try tritonURL()  // the shared dev server must exist too: its venv is the one dev-triton.sh reuses
        let version = try #require(try lightGBMVersions().first, "no version of the model repository serves LightGBM")
        let copy = FileManager.default.temporaryDirectory.appendingPathComponent("triton-tampered-\(UUID().uuidString)")
        try FileManager.default.copyItem(
            at: repositoryRoot.appendingPathComponent("deploy/triton/model_repository"), to: copy)
        defer { try? FileManager.default.removeItem(at: copy) }
        let vdir = copy.appendingPathComponent("\(modelName)/\(version)")
        let manifest = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: vdir.appendingPathComponent("weights.json")))
                as? [String: Any])
        let name = try #require(manifest[file] as? String)
        // A digit of a number in the file (a leaf value or a breakpoint): still a valid file, another model.
        var bytes = try Data(contentsOf: vdir.appendingPathComponent(name))
        let at = try #require(bytes.lastIndex { $0 >= UInt8(ascii: "1") && $0 <= UInt8(ascii: "8") })
        bytes[at] += 1
        try bytes.write(to: vdir.appendingPathComponent(name))

        let server = try PrivateTriton(modelRepository: copy)
        defer {
            try? server.stop()
            try? FileManager.default.removeItem(at: server.state)
        }
        let status = try await server.runScript()
        #expect(status != 0, "dev-triton.sh reported the tampered repository ready")
        let log = server.log()
        #expect(
            log.contains("\(name): sha256") && log.contains("does not match weights.json files"), "\(log.suffix(3000))")
    }
}
