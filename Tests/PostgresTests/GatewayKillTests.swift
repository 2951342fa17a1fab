import Foundation
import Synchronization
import TEModels
import TEPostgres
import TERedis
import TestSupport
import Testing

/// The built `gateway` (AUDIT_DURABILITY=sync, the default) SIGKILLed while clients keep sending
/// requests, then the built `audit-writer` drains te:audit: every decision a client got a 200 for has
/// its row in `decisions`, with its request_id as sent. Real Redis, Triton and PostgreSQL.
@Suite("gateway SIGKILL under load", .serialized, .timeLimit(.minutes(5)))
struct GatewayKillTests {
    /// decision_id → request_id of every 200.
    final class Answers: Sendable {
        let map = Mutex<[String: String]>([:])
        let killed = Mutex(false)
        var count: Int { map.withLock { $0.count } }
    }

    @Test func everyAnsweredDecisionIsStoredAfterAGatewaySIGKILL() async throws {
        try await PostgresTestServer.withDatabase { db, configuration in
            let harness = try AuditWriterHarness()
            let redis = try AuditWriterTests.redis()
            let postgresURL = try PostgresConfiguration.url(
                try PostgresTestServer.url(), database: try #require(configuration.database))
            guard let triton = ProcessInfo.processInfo.environment["TRITON_URL"], !triton.isEmpty else {
                throw TestSetupError("TRITON_URL is not set: source .dev/env (make dev-up starts Triton)")
            }
            let port = try TestEnv.freePort()
            let gateway = try ChildProcess.built(
                "gateway",
                environment: [
                    "REDIS_URL": try TestEnv.redisURL(), "TRITON_URL": triton, "HTTP_PORT": String(port),
                    "AUDIT_STREAM": harness.stream, "SCORE_TIMEOUT_MS": "300", "LOG_LEVEL": "warning"
                ])
            let up = await TestEnv.eventually(timeout: .seconds(30)) {
                (try? await GatewayHTTP.score(port: port, requestID: "warm-up"))?.status == 200
            }
            #expect(up, "gateway output:\n\(gateway.output())")

            let answers = Answers()
            let load = Task {
                await withTaskGroup(of: Void.self) { group in
                    for worker in 0..<8 {
                        group.addTask {
                            var i = 0
                            while true {
                                // Client ids of both kinds: a UUID-free one and one repeated across requests.
                                let id = i % 3 == 0 ? "repeated-id" : "load-\(worker)-\(i)"
                                i += 1
                                do {
                                    let (status, body) = try await GatewayHTTP.score(port: port, requestID: id)
                                    if status == 200, let decision = body["decision_id"] as? String {
                                        answers.map.withLock { $0[decision] = body["request_id"] as? String }
                                    }
                                } catch {
                                    // Connection refused/reset once the gateway is dead: this client is done.
                                    if answers.killed.withLock({ $0 }) { return }
                                }
                            }
                        }
                    }
                }
            }
            _ = await TestEnv.eventually(timeout: .seconds(30)) { answers.count >= 400 }
            gateway.kill9()
            answers.killed.withLock { $0 = true }
            #expect(try await gateway.waitForExit(timeout: .seconds(10)) == SIGKILL)
            await load.value
            let answered = answers.map.withLock { $0 }
            #expect(answered.count >= 400)

            let writer = try harness.start(postgresURL: postgresURL)
            let drained = await TestEnv.eventually(timeout: .seconds(60)) {
                let length = (try? await redis.xlen(harness.stream)) ?? -1
                return await rowCountIfReady(db) == length
            }
            #expect(drained, "writer output:\n\(writer.output())")
            let rows = try await db.query("SELECT decision_id::text AS d, request_id FROM decisions").rows
            let stored = Dictionary(
                rows.map { ($0["d"] ?? "", $0["request_id"] ?? "") }, uniquingKeysWith: { a, _ in a })
            let missing = answered.keys.filter { stored[$0] == nil }
            #expect(missing.isEmpty, "\(missing.count) of \(answered.count) answered decisions have no row")
            #expect(answered.allSatisfy { stored[$0.key] == $0.value })
            #expect(stored.values.contains("repeated-id"))
            print(
                "gateway SIGKILL: \(answered.count) answered, \(stored.count) rows (records of requests cut off by the kill included)"
            )
            writer.terminate()
            #expect(try await writer.waitForExit(timeout: .seconds(20)) == 0)
            await harness.cleanUp(redis: redis)
        }
    }
}
