import Foundation
import TEModels
import TERedis
import TestSupport
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// W3C trace context and OTLP spans of the built `gateway` binary, on the real Redis and Triton, with an
/// OTLP/HTTP receiver in this process (`OTLPReceiver`).
@Suite("gateway traces", .serialized, .timeLimit(.minutes(3)))
struct GatewayTraceTests {
    static let body = #"{"symbol":"BTCUSDT","features":[0.5,0.3,0.2,1,2,0.1,10,0.05]}"#

    static func score(port: Int, headers: [String: String]) async throws -> (
        status: Int, body: [String: Any], traceparent: String?
    ) {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)/v1/score")!)
        request.httpMethod = "POST"
        request.timeoutInterval = 5
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        for (k, v) in headers { request.setValue(v, forHTTPHeaderField: k) }
        request.httpBody = Data(body.utf8)
        let (data, response) = try await URLSession.shared.data(for: request)
        let http = response as? HTTPURLResponse
        return (
            http?.statusCode ?? 0, (try? JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:],
            http?.value(forHTTPHeaderField: "traceparent")
        )
    }

    /// The gateway binary with its audit stream of its own; `extra` on top.
    static func startGateway(_ extra: [String: String]) async throws -> (ChildProcess, port: Int, audit: String) {
        let port = try TestEnv.freePort()
        let prefix = TestEnv.uniqueName("gateway-trace")
        let gateway = try ChildProcess.built(
            "gateway",
            environment: [
                "TRITON_URL": try GatewayTestEnv.tritonURL(), "HTTP_PORT": String(port),
                "AUDIT_STREAM": "\(prefix):audit",
                "ROLLOUT_STREAM": "\(prefix):rollout", "SCORE_TIMEOUT_MS": "300", "LOG_LEVEL": "debug"
            ].merging(extra) { $1 })
        let up = await TestEnv.eventually(timeout: .seconds(30), every: .milliseconds(100)) {
            (try? await Self.score(port: port, headers: ["X-Request-Id": "warm-up"]))?.status == 200
        }
        guard up else {
            throw GatewayTestError(description: "gateway did not answer:\n\(gateway.output().suffix(3000))")
        }
        return (gateway, port, "\(prefix):audit")
    }

    /// The audit record of `decisionID` on `stream`.
    static func auditRecord(_ decisionID: String, stream: String) async throws -> AuditRecord? {
        let redis = RedisClient(configuration: try RedisConfiguration(url: try TestEnv.redisURL()), name: "trace-test")
        defer { redis.close() }
        for entry in try await redis.xrange(stream, start: "-", end: "+", count: 10_000) {
            let record = try StreamFieldDecoder.decode(AuditRecord.self, from: entry.fields)
            if record.decisionId == decisionID { return record }
        }
        return nil
    }

    /// The gateway's JSON log lines that name `decisionID`.
    static func logLines(_ gateway: ChildProcess, naming decisionID: String) -> [[String: Any]] {
        gateway.output().split(separator: "\n").compactMap { line in
            guard line.contains(decisionID) else { return nil }
            return try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
        }
    }

    @Test(
        "a traceparent's trace: spans under the given parent, returned in traceparent, in the audit entry and the log line"
    )
    func spansUnderTheGivenParent() async throws {
        let receiver = try await OTLPReceiver()
        defer { receiver.stop() }
        let (gateway, port, audit) = try await Self.startGateway([
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
            "OTEL_SERVICE_NAME": "gateway-trace-test", "OTEL_BSP_SCHEDULE_DELAY": "100"
        ])
        defer { gateway.kill9() }

        let traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
        let parentID = "00f067aa0ba902b7"
        let answer = try await Self.score(
            port: port,
            headers: ["traceparent": "00-\(traceID)-\(parentID)-01", "tracestate": "desk=a", "X-Request-Id": "traced-1"]
        )
        #expect(answer.status == 200, "\(answer.body)")
        #expect(answer.body["source"] as? String == "model", "\(answer.body)")
        let decisionID = try #require(answer.body["decision_id"] as? String)

        // The answer continues the caller's trace from the gateway's own server span.
        let returned = try #require(answer.traceparent, "no traceparent in the response")
        let parts = returned.split(separator: "-").map(String.init)
        #expect(parts.count == 4 && parts[0] == "00" && parts[1] == traceID && parts[3] == "01", "\(returned)")
        let serverSpanID = parts[2]
        #expect(serverSpanID != parentID && serverSpanID.count == 16)

        let exported = await TestEnv.eventually(timeout: .seconds(20), every: .milliseconds(100)) {
            let names = Set(receiver.spans.filter { $0.traceID == traceID }.map(\.name))
            return names.isSuperset(of: [
                "POST /v1/score", "feature lookup", "model primary", "triton infer", "audit write"
            ])
        }
        let spans = receiver.spans.filter { $0.traceID == traceID }
        #expect(exported, "spans received: \(receiver.spans)\ngateway:\n\(gateway.output().suffix(3000))")
        let server = try #require(spans.first { $0.name == "POST /v1/score" })
        #expect(server.parentSpanID == parentID)
        #expect(server.spanID == serverSpanID)
        #expect(server.service == "gateway-trace-test")
        #expect(server.attributes["te.decision_id"] == decisionID)
        #expect(server.attributes["te.source"] == "model")
        #expect(server.attributes["http.response.status_code"] == "200")
        for name in ["feature lookup", "model primary", "audit write"] {
            #expect(spans.first { $0.name == name }?.parentSpanID == server.spanID, "\(name): \(spans)")
        }
        #expect(spans.first { $0.name == "feature lookup" }?.attributes["te.features.source"] == "request")
        let leg = try #require(spans.first { $0.name == "model primary" })
        let triton = try #require(spans.first { $0.name == "triton infer" })
        #expect(triton.parentSpanID == leg.spanID)
        #expect(triton.attributes["triton.endpoint"] == "primary")
        #expect(triton.attributes["model.version"] == "1")
        #expect(Int(triton.attributes["triton.batch_size"] ?? "") ?? 0 >= 1, "\(triton)")
        #expect(spans.first { $0.name == "audit write" }?.attributes["te.audit.durability"] == "sync")

        // The audit entry and the request's log line carry the trace id.
        let record = try #require(try await Self.auditRecord(decisionID, stream: audit))
        #expect(record.traceId == traceID)
        let lines = Self.logLines(gateway, naming: decisionID)
        #expect(!lines.isEmpty, "\(gateway.output().suffix(3000))")
        for line in lines { #expect(line["trace_id"] as? String == traceID, "\(line)") }

        // Without a traceparent the request starts a trace of its own: a root server span, answered and audited.
        let fresh = try await Self.score(port: port, headers: ["X-Request-Id": "traced-2"])
        let freshParent = try #require(fresh.traceparent)
        let freshTrace = freshParent.split(separator: "-").map(String.init)[1]
        #expect(freshTrace != traceID)
        let freshID = try #require(fresh.body["decision_id"] as? String)
        #expect(try await Self.auditRecord(freshID, stream: audit)?.traceId == freshTrace)
        let root = await TestEnv.eventually(timeout: .seconds(20), every: .milliseconds(100)) {
            receiver.spans.contains {
                $0.traceID == freshTrace && $0.name == "POST /v1/score" && $0.parentSpanID == nil
            }
        }
        #expect(root, "\(receiver.spans.filter { $0.traceID == freshTrace })")

        // A malformed traceparent is ignored: a new trace, not an error.
        let malformed = try await Self.score(port: port, headers: ["traceparent": "00-zz-\(parentID)-01"])
        #expect(malformed.status == 200)
        #expect(malformed.traceparent.map { !$0.contains("zz") } == true)

        gateway.terminate()
        #expect(try await gateway.waitForExit(timeout: .seconds(20)) == 0, "\(gateway.output().suffix(2000))")
    }

    @Test("tracing off: no spans made, a given traceparent still reaches the audit entry, the log line and the answer")
    func offStillCarriesTheGivenTrace() async throws {
        let (gateway, port, audit) = try await Self.startGateway([:])
        defer { gateway.kill9() }
        let traceID = "0af7651916cd43dd8448eb211c80319c"
        let traceparent = "00-\(traceID)-b7ad6b7169203331-01"
        let answer = try await Self.score(port: port, headers: ["traceparent": traceparent])
        #expect(answer.status == 200)
        #expect(answer.traceparent == traceparent)
        let decisionID = try #require(answer.body["decision_id"] as? String)
        #expect(try await Self.auditRecord(decisionID, stream: audit)?.traceId == traceID)
        let lines = Self.logLines(gateway, naming: decisionID)
        #expect(!lines.isEmpty && lines.allSatisfy { $0["trace_id"] as? String == traceID }, "\(lines)")

        // No traceparent, tracing off: no trace id anywhere, no header.
        let plain = try await Self.score(port: port, headers: [:])
        #expect(plain.traceparent == nil)
        let plainID = try #require(plain.body["decision_id"] as? String)
        let record = try #require(try await Self.auditRecord(plainID, stream: audit))
        #expect(record.traceId == nil)
        #expect(Self.logLines(gateway, naming: plainID).allSatisfy { $0["trace_id"] == nil })
        #expect(!gateway.output().contains("traces exported over OTLP"))
    }
}
