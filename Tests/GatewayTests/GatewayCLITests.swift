import Foundation
import GatewayHTTP
import TestSupport
import Testing

@testable import GatewayEngine

@Suite("te score and te triton", .serialized, .timeLimit(.minutes(3)))
struct GatewayCLITests {
    static let features = GatewayTestEnv.sampleFeatures.map { "\($0)" }.joined(separator: ",")

    @Test(
        "te score: the gateway's answer printed as JSON; a 4xx exits 1 with the error JSON; a gateway down is one line")
    func score() async throws {
        let config = try GatewayTestEnv.config("cli-score") {
            $0.apiKeys = try! APIKeyTable.parse("cli-key", separator: ",", source: "test")
        }
        try await GatewayTestEnv.withGateway(config) { _, client in
            let url = "http://127.0.0.1:\(try #require(client.port))"
            let ok = try await runTe(
                [
                    "score", "BTCUSDT", "--features", Self.features, "--url", url, "--api-key", "cli-key",
                    "--request-id", "cli-1"
                ])
            #expect(ok.status == 0, "\(ok.output)")
            let answer = try #require(jsonOutput(ok.output) as? [String: Any], "\(ok.output)")
            #expect(answer["request_id"] as? String == "cli-1")
            #expect(answer["symbol"] as? String == "BTCUSDT")
            #expect(answer["source"] as? String == "model")
            #expect((answer["model"] as? [String: Any])?["version"] as? String == "1")

            let unauthorized = try await runTe([
                "score", "BTCUSDT", "--features", Self.features, "--url", url, "--api-key", "wrong"
            ])
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

    @Test(
        "te triton health, metadata and infer against the real Triton, as tables and -o json; an unreachable Triton is one clean line"
    )
    func triton() async throws {
        let environment = ["TRITON_URL": try GatewayTestEnv.tritonURL()]
        let health = try await runTe(["triton", "health"], environment: environment)
        #expect(health.status == 0, "\(health.output)")
        #expect(health.output.hasPrefix("server live=true ready=true\n"), "\(health.output)")
        let rows = health.output.split(separator: "\n").map {
            $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        }
        #expect(rows.contains(["MODEL", "VERSION", "READY", "ERROR"]), "\(health.output)")
        #expect(
            rows.contains(["trade_eligibility", "1", "true"]) && rows.contains(["trade_eligibility", "2", "true"]),
            "\(health.output)")
        let healthJSON = try await runTe(["triton", "health", "-o", "json"], environment: environment)
        #expect(healthJSON.status == 0, "\(healthJSON.output)")
        let healthDoc = try #require(jsonOutput(healthJSON.output) as? [String: Any], "\(healthJSON.output)")
        #expect(healthDoc["healthy"] as? Bool == true)
        #expect((healthDoc["server"] as? [String: Any])?["ready"] as? Bool == true)
        let versions = try #require(healthDoc["versions"] as? [[String: Any]])
        #expect(versions.map { $0["version"] as? String } == ["1", "2"])
        #expect(versions.allSatisfy { $0["ready"] as? Bool == true && $0["error"] is NSNull })
        let missingVersion = try await runTe(
            ["triton", "health", "--versions", "99", "-o", "json"], environment: environment)
        #expect(missingVersion.status == 1, "an unready version fails the check: \(missingVersion.output)")
        let missingDoc = try #require(jsonOutput(missingVersion.output) as? [String: Any], "\(missingVersion.output)")
        #expect(missingDoc["healthy"] as? Bool == false)
        #expect(
            (missingDoc["versions"] as? [[String: Any]])?.first?["ready"] as? Bool == false, "\(missingVersion.output)")

        let metadata = try await runTe(["triton", "metadata"], environment: environment)
        #expect(metadata.status == 0, "\(metadata.output)")
        #expect(metadata.output.contains("input  features FP32 [-1, 8]"), "\(metadata.output)")
        for version in ["1", "2"] {
            let line = metadata.output.split(separator: "\n").first {
                $0.hasPrefix("version \(version) artefact_sha256 ")
            }
            let hash = try #require(line?.split(separator: " ").last, "\(metadata.output)")
            #expect(hash.count == 64 && hash.allSatisfy(\.isHexDigit), "\(metadata.output)")
        }

        let metadataJSON = try await runTe(["triton", "metadata", "-o", "json"], environment: environment)
        #expect(metadataJSON.status == 0, "\(metadataJSON.output)")
        let metadataDoc = try #require(jsonOutput(metadataJSON.output) as? [String: Any], "\(metadataJSON.output)")
        #expect(metadataDoc["name"] as? String == "trade_eligibility")
        let inputs = try #require(metadataDoc["inputs"] as? [[String: Any]])
        #expect(inputs.first?["name"] as? String == "features" && inputs.first?["datatype"] as? String == "FP32")
        #expect(inputs.first?["shape"] as? [Int] == [-1, 8])
        let hashes = try #require(metadataDoc["artefact_sha256"] as? [String: String], "\(metadataJSON.output)")
        #expect(hashes.keys.sorted() == ["1", "2"])
        #expect(hashes.values.allSatisfy { $0.count == 64 && $0.allSatisfy(\.isHexDigit) })

        let inferJSON = try await runTe(
            ["triton", "infer", "--features", Self.features, "-o", "json"], environment: environment)
        #expect(inferJSON.status == 0, "\(inferJSON.output)")
        let inferDoc = try #require(jsonOutput(inferJSON.output) as? [String: Any], "\(inferJSON.output)")
        #expect(inferDoc["version"] as? String == "1")
        let jsonScore = try #require(inferDoc["score"] as? Double)
        #expect(jsonScore >= 0 && jsonScore <= 1)
        #expect((inferDoc["latency_us"] as? Int ?? 0) > 0)

        let infer = try await runTe(["triton", "infer", "--features", Self.features], environment: environment)
        #expect(infer.status == 0, "\(infer.output)")
        let score = try #require(
            infer.output.split(separator: " ").dropFirst().first.flatMap { Double($0) }, "\(infer.output)")
        #expect(score >= 0 && score <= 1)

        let missing = try await runTe(
            ["triton", "infer", "--version", "99", "--features", Self.features], environment: environment)
        #expect(missing.status == 1)
        #expect(missing.output.hasPrefix("te: Triton "), "\(missing.output)")

        let closed = "127.0.0.1:\(try TestEnv.freePort())"
        let down = try await runTe(["triton", "health"], environment: ["TRITON_URL": closed])
        #expect(down.status == 1)
        #expect(
            down.output == "te: Triton connection: connect to \(closed) failed: Connection refused\n", "\(down.output)")
    }
}
