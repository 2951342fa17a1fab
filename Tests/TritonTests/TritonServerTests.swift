import Foundation
import Testing
import TritonClient

/// The repository root (tests read the committed model weights and run scripts/dev-triton.sh).
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()
let modelName = "trade_eligibility"

func tritonURL() throws -> String {
    try #require(
        ProcessInfo.processInfo.environment["TRITON_URL"],
        "TRITON_URL is not set: run `make dev-up` and source .dev/env (tests need a real Triton)")
}

/// The committed artefact of one version (its manifest weights.json) and what it should score, computed outside
/// Triton: a logistic version with model.py's formula in Double, a LightGBM version by
/// deploy/triton/score_reference.py (lightgbm's own predict + the isotonic map, in the train venv).
struct ModelWeights: Decodable {
    let kind: String
    /// Training means and standard deviations of the features (every kind), for sampling rows.
    let mean: [Double]
    let std: [Double]
    let coef: [Double]?
    let intercept: Double?
    var directory = URL(fileURLWithPath: "/")

    enum CodingKeys: String, CodingKey { case kind, mean, std, coef, intercept }

    static func directory(version: String) -> URL {
        repositoryRoot.appendingPathComponent("deploy/triton/model_repository/\(modelName)/\(version)")
    }

    static func load(version: String) throws -> ModelWeights {
        let dir = directory(version: version)
        var weights = try JSONDecoder().decode(
            ModelWeights.self, from: Data(contentsOf: dir.appendingPathComponent("weights.json")))
        weights.directory = dir
        return weights
    }

    /// The expected score of each row (rows: 8 features each).
    func scores(_ rows: [Float]) throws -> [Double] {
        switch kind {
        case "logistic_regression":
            let coef = try #require(coef)
            let intercept = try #require(intercept)
            return stride(from: 0, to: rows.count, by: 8).map { start in
                var z = intercept
                for i in 0..<8 { z += coef[i] * (Double(rows[start + i]) - mean[i]) / std[i] }
                return 1 / (1 + exp(-z))
            }
        case "lightgbm":
            return try referenceScores(rows, versionDirectory: directory)
        default:
            throw ReferenceScoreError(description: "unknown model kind \(kind)")
        }
    }
}

struct ReferenceScoreError: Error, CustomStringConvertible { let description: String }

/// Runs deploy/triton/score_reference.py on `rows` with the train venv's Python (`TE_PYTHON`, else
/// .dev/venv-train, which `make test` installs). The FP32 features go over as the exact Doubles they are.
func referenceScores(_ rows: [Float], versionDirectory: URL) throws -> [Double] {
    let python =
        ProcessInfo.processInfo.environment["TE_PYTHON"].flatMap { $0.isEmpty ? nil : $0 }
        ?? repositoryRoot.appendingPathComponent(".dev/venv-train/bin/python").path
    let input = FileManager.default.temporaryDirectory.appendingPathComponent("rows-\(UUID().uuidString).csv")
    defer { try? FileManager.default.removeItem(at: input) }
    let text = stride(from: 0, to: rows.count, by: 8).map { start in
        rows[start..<start + 8].map { "\(Double($0))" }.joined(separator: ",")
    }.joined(separator: "\n")
    try Data((text + "\n").utf8).write(to: input)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: python)
    process.arguments = [
        repositoryRoot.appendingPathComponent("deploy/triton/score_reference.py").path, versionDirectory.path,
        input.path
    ]
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    let errors = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw ReferenceScoreError(
            description:
                "score_reference.py (\(python)) exited \(process.terminationStatus): \(String(decoding: errors, as: UTF8.self))"
        )
    }
    let scores = String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap { Double($0) }
    guard scores.count * 8 == rows.count else {
        throw ReferenceScoreError(
            description: "score_reference.py gave \(scores.count) scores for \(rows.count / 8) rows")
    }
    return scores
}

/// Deterministic feature rows spread around the training distribution (mean ± 2 std).
func sampleRows(_ count: Int, seed: UInt64, weights: ModelWeights) -> [Float] {
    var state = seed
    var rows: [Float] = []
    rows.reserveCapacity(count * 8)
    for _ in 0..<count {
        for f in 0..<8 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            let u = Double(state >> 11) / Double(1 << 53) * 4 - 2
            rows.append(Float(weights.mean[f] + u * weights.std[f]))
        }
    }
    return rows
}

/// Served FP32 scores against the expected Double ones: equal up to the FP32 rounding of the answer.
func expectScores(
    _ scores: [Float], rows: [Float], weights: ModelWeights, sourceLocation: SourceLocation = #_sourceLocation
) throws {
    #expect(scores.count * 8 == rows.count, sourceLocation: sourceLocation)
    let expected = try weights.scores(rows)
    for (i, score) in scores.enumerated() where i < expected.count {
        #expect(
            abs(Double(score) - expected[i]) < 1e-6, "row \(i): \(score) vs \(expected[i])",
            sourceLocation: sourceLocation)
    }
}

func deadline(_ d: Duration) -> ContinuousClock.Instant { .now + d }

@Suite(.timeLimit(.minutes(2)))
struct TritonServerTests {
    @Test func healthAndMetadata() async throws {
        let client = try TritonClient(url: try tritonURL())
        #expect(try await client.serverLive())
        #expect(try await client.serverReady())
        #expect(try await client.modelReady(model: modelName, version: "1"))
        #expect(try await client.modelReady(model: modelName, version: "2"))
        let metadata = try await client.modelMetadata(model: modelName, version: "1")
        #expect(metadata.name == modelName)
        #expect(metadata.inputs == [TensorMetadata(name: "features", datatype: "FP32", shape: [-1, 8])])
        #expect(metadata.outputs == [TensorMetadata(name: "score", datatype: "FP32", shape: [-1, 1])])
        let config = try await client.modelConfig(model: modelName)
        #expect(config.versionPolicy == .specific([1, 2]))
        #expect(config.maxBatchSize == 256)
    }

    @Test(arguments: ["1", "2"])
    func artefactHashIsTheSha256OfTheServedWeights(version: String) async throws {
        let client = try TritonClient(url: try tritonURL())
        let hash = try await client.artefactHash(model: modelName, version: version)
        let path = repositoryRoot.appendingPathComponent(
            "deploy/triton/model_repository/\(modelName)/\(version)/weights.json")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
        process.arguments = [path.path]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        process.waitUntilExit()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(hash == String(output.prefix(64)))
        #expect(hash.count == 64)
    }

    @Test(arguments: ["1", "2"])
    func singleRowsMatchTheModelsMath(version: String) async throws {
        let client = try TritonClient(url: try tritonURL())
        let weights = try ModelWeights.load(version: version)
        let rows = sampleRows(10, seed: 7, weights: weights)
        for i in 0..<10 {
            let row = Array(rows[(i * 8)..<(i * 8 + 8)])
            let scores = try await client.infer(
                model: modelName, version: version, rows: row, rowCount: 1, deadline: deadline(.seconds(10)))
            try expectScores(scores, rows: row, weights: weights)
        }
    }

    @Test(arguments: [("1", 2), ("1", 64), ("2", 256)])
    func batchesMatchTheModelsMath(version: String, rowCount: Int) async throws {
        let client = try TritonClient(url: try tritonURL())
        let weights = try ModelWeights.load(version: version)
        let rows = sampleRows(rowCount, seed: UInt64(rowCount), weights: weights)
        let scores = try await client.infer(
            model: modelName, version: version, rows: rows, rowCount: rowCount, deadline: deadline(.seconds(10)))
        try expectScores(scores, rows: rows, weights: weights)
    }

    @Test func thousandConcurrentCallsOnOneConnection() async throws {
        let client = try TritonClient(url: try tritonURL(), connections: 1)
        let weights = try ModelWeights.load(version: "1")
        let rows = sampleRows(1000, seed: 42, weights: weights)
        let results = try await withThrowingTaskGroup(of: (Int, Float).self) { group in
            for i in 0..<1000 {
                group.addTask {
                    let row = Array(rows[(i * 8)..<(i * 8 + 8)])
                    let s = try await client.infer(
                        model: modelName, version: "1", rows: row, rowCount: 1, deadline: deadline(.seconds(60)))
                    return (i, s[0])
                }
            }
            var scores = [Float](repeating: .nan, count: 1000)
            for try await (i, s) in group { scores[i] = s }
            return scores
        }
        try expectScores(results, rows: rows, weights: weights)
    }

    @Test func deadlineShorterThanTheModelReturnsOnTimeAndTheConnectionStaysUsable() async throws {
        let client = try TritonClient(url: try tritonURL(), connections: 1)
        let weights = try ModelWeights.load(version: "1")
        let row = sampleRows(1, seed: 3, weights: weights)
        do {
            _ = try await client.infer(
                model: modelName, version: "1", rows: row, rowCount: 1, deadline: deadline(.milliseconds(200)),
                parameters: [("delay_ms", .int64(8000))])
            Issue.record("an 8 s model call finished within a 200 ms deadline")
        } catch let error as TritonError {
            #expect(error.code == .deadlineExceeded)
        }
        let scores = try await client.infer(
            model: modelName, version: "1", rows: row, rowCount: 1, deadline: deadline(.seconds(10)))
        try expectScores(scores, rows: row, weights: weights)
    }

    @Test func taskCancellationEndsTheCall() async throws {
        let client = try TritonClient(url: try tritonURL())
        let row = [Float](repeating: 0, count: 8)
        let task = Task {
            try await client.infer(
                model: modelName, version: "1", rows: row, rowCount: 1, deadline: deadline(.seconds(30)),
                parameters: [("delay_ms", .int64(1000))])
        }
        try await Task.sleep(for: .milliseconds(100))
        task.cancel()
        let result = await task.result
        #expect(throws: TritonError.self) { try result.get() }
        if case .failure(let error as TritonError) = result { #expect(error.code == .cancelled) }
    }

    @Test func unknownModelSurfacesTheServersError() async throws {
        let client = try TritonClient(url: try tritonURL())
        do {
            _ = try await client.infer(
                model: "no_such_model", version: "", rows: [Float](repeating: 0, count: 8), rowCount: 1,
                deadline: deadline(.seconds(5)))
            Issue.record("inference on an unknown model succeeded")
        } catch let error as TritonError {
            #expect(error.grpcStatus != nil && error.grpcStatus != 0)
            #expect(error.message.contains("no_such_model"), "message: \(error.message)")
            #expect(!error.isRetriable || error.code == .unavailable)
        }
    }

    @Test func wrongShapeSurfacesTheServersError() async throws {
        let client = try TritonClient(url: try tritonURL())
        do {
            _ = try await client.infer(
                model: modelName, version: "1", rows: [Float](repeating: 0, count: 14), rowCount: 2, featureCount: 7,
                deadline: deadline(.seconds(5)))
            Issue.record("inference with 7 features succeeded")
        } catch let error as TritonError {
            #expect(error.code == .invalidArgument, "got \(error)")
            #expect(!error.message.isEmpty)
            #expect(error.file.hasSuffix("TritonServerTests.swift"))
        }
    }

    @Test func unreachableEndpointFailsFastWithAConnectionError() async throws {
        let port = try freePort()
        let client = try TritonClient(url: "127.0.0.1:\(port)")
        do {
            _ = try await client.serverLive(deadline: deadline(.seconds(10)))
            Issue.record("serverLive on a closed port succeeded")
        } catch let error as TritonError {
            // A connection error, not deadlineExceeded: it failed on the refused connect, not by waiting out 10 s.
            #expect(error.code == .connection)
        }
    }
}

/// A TCP port nobody listens on right now.
func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    let rc = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    try #require(rc == 0)
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}
