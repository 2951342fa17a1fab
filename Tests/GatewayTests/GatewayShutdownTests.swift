import Foundation
import Synchronization
import TEModels
import TERedis
import TestSupport
import Testing

/// The built `gateway` with shadow scoring and AUDIT_DURABILITY=async (the comparison runs after the
/// answer) gets SIGTERM while clients keep sending: it exits 0, and every decision a client got a 200
/// for has its AuditRecord in the stream, its shadow comparison included. Real Redis and Triton.
@Suite("gateway SIGTERM during shadow traffic", .serialized, .timeLimit(.minutes(3)))
struct GatewayShutdownTests {
    /// What the clients saw: the decision ids of every 200, and whether the gateway was told to stop.
    final class Clients: Sendable {
        let answered = Mutex<Set<String>>([])
        let stopping = Mutex(false)
    }

    @Test func everyAnsweredDecisionIsAuditedAfterASIGTERMDuringShadowTraffic() async throws {
        let triton = try GatewayTestEnv.tritonURL()
        let redis = RedisClient(configuration: try TestEnv.redisConfiguration(), name: "shutdown-test")
        defer { redis.close() }
        let stream = TestEnv.uniqueName("test:audit:sigterm")
        // A rollout state of the test's own (keyed by the stream): the shared one may be rolled back.
        let rollout = TestEnv.uniqueName("test:rollout:sigterm")
        let port = try TestEnv.freePort()
        let gateway = try ChildProcess.built(
            "gateway",
            environment: [
                "REDIS_URL": try TestEnv.redisURL(), "TRITON_URL": triton, "HTTP_PORT": String(port),
                "AUDIT_STREAM": stream, "ROLLOUT_STREAM": rollout, "AUDIT_DURABILITY": "async",
                "SHADOW_ENABLED": "true",
                "SCORE_TIMEOUT_MS": "300", "LOG_LEVEL": "warning",
                // A debug build under load breaches the canary's latency limit; a rollback would end shadowing.
                "CANARY_MAX_P99_MS": "60000", "CANARY_MAX_ERROR_RATE": "1", "CANARY_MAX_DISAGREE_RATE": "1"
            ])
        let up = await TestEnv.eventually(timeout: .seconds(30)) {
            (try? await GatewayHTTP.score(port: port, requestID: "warm-up"))?.status == 200
        }
        #expect(up, "gateway output:\n\(gateway.output())")
        // Shadowing starts once the gateway has read its rollout state: wait for a compared record.
        let shadowing = await TestEnv.eventually(timeout: .seconds(30)) {
            _ = try? await GatewayHTTP.score(port: port, requestID: "warm-up")
            let entries = (try? await redis.xrange(stream)) ?? []
            return entries.contains {
                (try? StreamFieldDecoder.decode(AuditRecord.self, from: $0.fields))?.canary != nil
            }
        }
        #expect(shadowing, "gateway output:\n\(gateway.output())")

        let clients = Clients()
        let load = Task {
            await withTaskGroup(of: Void.self) { group in
                for client in 0..<8 {
                    group.addTask {
                        for i in 0... {
                            let reply = try? await GatewayHTTP.score(port: port, requestID: "sigterm-\(client)-\(i)")
                            if let reply, reply.status == 200, let id = reply.body["decision_id"] as? String {
                                _ = clients.answered.withLock { $0.insert(id) }
                            } else if clients.stopping.withLock({ $0 }) {
                                return
                            }
                        }
                    }
                }
            }
        }
        _ = await TestEnv.eventually(timeout: .seconds(30)) { clients.answered.withLock { $0.count } >= 300 }
        gateway.terminate()
        clients.stopping.withLock { $0 = true }
        #expect(try await gateway.waitForExit(timeout: .seconds(30)) == 0, "gateway output:\n\(gateway.output())")
        await load.value

        let records = try await redis.xrange(stream).map {
            try StreamFieldDecoder.decode(AuditRecord.self, from: $0.fields)
        }
        let audited = Set(records.map(\.decisionId))
        let decisions = clients.answered.withLock { $0 }
        let missing = decisions.subtracting(audited)
        #expect(decisions.count >= 300)
        #expect(missing.isEmpty, "\(missing.count) of \(decisions.count) answered decisions have no audit record")
        // Answered by the model, so each record waited for its shadow comparison.
        let modelRecords = records.filter { $0.source == .model && $0.requestId.hasPrefix("sigterm-") }
        #expect(!modelRecords.isEmpty)
        let uncompared = modelRecords.filter { $0.canary?.mode != "shadow" }
        #expect(
            uncompared.isEmpty,
            "\(uncompared.count) of \(modelRecords.count) model answers without their shadow comparison")
        _ = try? await redis.send("DEL", stream, rollout, RolloutState.key(model: "trade_eligibility", stream: rollout))
    }
}
