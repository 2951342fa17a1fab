import Foundation
import GatewayCore
import TestSupport
import Testing

@Suite("te score and te triton", .serialized, .timeLimit(.minutes(3)))
struct GatewayCLITests {
    static let features = GatewayTestEnv.sampleFeatures.map { "\($0)" }.joined(separator: ",")

    @Test("te score: the gateway's answer printed as JSON; a 4xx exits 1 with the error JSON; a gateway down is one line")
    func score() async throws {
        let config = try GatewayTestEnv.config("cli-score") { $0.apiKeys = try! APIKeyTable.parse("cli-key", separator: ",", source: "test") }
        try await GatewayTestEnv.withGateway(config) { _, client in
            let url = "http://127.0.0.1:\(try #require(client.port))"
            let ok = try await runTe(
                ["score", "BTCUSDT", "--features", Self.features, "--url", url, "--api-key", "cli-key", "--request-id", "cli-1"])
            #expect(ok.status == 0, "\(ok.output)")
            let answer = try #require(jsonOutput(ok.output) as? [String: Any], "\(ok.output)")
            #expect(answer["request_id"] as? String == "cli-1")
            #expect(answer["symbol"] as? String == "BTCUSDT")
            #expect(answer["source"] as? String == "model")
            #expect((answer["model"] as? [String: Any])?["version"] as? String == "1")

            let unauthorized = try await runTe(["score", "BTCUSDT", "--features", Self.features, "--url", url, "--api-key", "wrong"])
            #expect(unauthorized.status == 1)
            #expect(unauthorized.output.contains("\"error\""), "\(unauthorized.output)")
            #expect(unauthorized.output.contains("te score: HTTP 401"), "\(unauthorized.output)")

            let bad = try await runTe(["score", "BTCUSDT", "--features", "1,2", "--url", url, "--api-key", "cli-key"])
            #expect(bad.status == 1)
            #expect(bad.output.contains("te score: HTTP 400"), "\(bad.output)")
        }
        let closed = "http://127.0.0.1:\(try TestEnv.freePort())"
        let down = try await runTe(["score", "BTCUSDT", "--url", closed])
        #expect(down.status == 1)
        #expect(down.output == "te: cannot reach \(closed)/v1/score: connection refused\n", "\(down.output)")
    }

    @Test("te triton health, metadata and infer against the real Triton; an unreachable Triton is one clean line")
    func triton() async throws {
        let environment = ["TRITON_URL": try GatewayTestEnv.tritonURL()]
        let health = try await runTe(["triton", "health"], environment: environment)
        #expect(health.status == 0, "\(health.output)")
        #expect(health.output.contains("server live=true ready=true"), "\(health.output)")
        #expect(health.output.contains("version 1 ready=true") && health.output.contains("version 2 ready=true"), "\(health.output)")

        let metadata = try await runTe(["triton", "metadata"], environment: environment)
        #expect(metadata.status == 0, "\(metadata.output)")
        #expect(metadata.output.contains("input  features FP32 [-1, 8]"), "\(metadata.output)")
        for version in ["1", "2"] {
            let line = metadata.output.split(separator: "\n").first { $0.hasPrefix("version \(version) artefact_sha256 ") }
            let hash = try #require(line?.split(separator: " ").last, "\(metadata.output)")
            #expect(hash.count == 64 && hash.allSatisfy(\.isHexDigit), "\(metadata.output)")
        }

        let infer = try await runTe(["triton", "infer", "--features", Self.features], environment: environment)
        #expect(infer.status == 0, "\(infer.output)")
        let score = try #require(infer.output.split(separator: " ").dropFirst().first.flatMap { Double($0) }, "\(infer.output)")
        #expect(score >= 0 && score <= 1)

        let missing = try await runTe(["triton", "infer", "--version", "99", "--features", Self.features], environment: environment)
        #expect(missing.status == 1)
        #expect(missing.output.hasPrefix("te: Triton "), "\(missing.output)")

        let closed = "127.0.0.1:\(try TestEnv.freePort())"
        let down = try await runTe(["triton", "health"], environment: ["TRITON_URL": closed])
        #expect(down.status == 1)
        #expect(down.output == "te: Triton connection: connect to \(closed) failed: Connection refused\n", "\(down.output)")
    }
}
