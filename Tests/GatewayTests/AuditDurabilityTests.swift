import Foundation
import GatewayHTTP
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import ServiceKit
import TEModels
import TERedis
import TestSupport
import Testing

@testable import GatewayEngine

/// AUDIT_DURABILITY, the audit group and trimming, and `/readyz`, against real Redis and Triton
/// (private Redis servers where a test stops one).
@Suite(.serialized, .timeLimit(.minutes(5))) struct AuditDurabilityTests {
    let features = GatewayTestEnv.sampleFeatures

    static func decode(_ entries: [StreamEntry]) throws -> [AuditRecord] {
        try entries.map { try StreamFieldDecoder.decode(AuditRecord.self, from: $0.fields) }
    }

    static func json(_ buffer: ByteBuffer) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(buffer: buffer)) as? [String: Any])
    }

    static func scoreRequest(_ features: [Double], requestID: String) -> (HTTPFields, ByteBuffer) {
        let headers: HTTPFields = [.contentType: "application/json", HTTPField.Name("X-Request-Id")!: requestID]
        return (headers, GatewayTestEnv.body(ScoreRequest(symbol: "BTCUSDT", features: features)))
    }

    /// Sync: every 200 (32 concurrent requests) finds its record already in te:audit when it arrives,
    /// keyed by its decision_id; without X-Request-Id, request_id = decision_id. Redis killed: 503
    /// `audit_unavailable` after the wait, the record withdrawn (it never appears later); /readyz 503
    /// saying why. Redis back: ready again without any request, then 200s.
    @Test func syncAnswersOnlyAuditedDecisionsAndRefusesWhileRedisIsDown() async throws {
        let server = try await PrivateRedisServer()
        let config = try GatewayTestEnv.config("sync") {
            $0.redisURL = server.url
            $0.auditDurability = .sync
            $0.auditSyncWaitMs = 200
        }
        try await GatewayTestEnv.withGateway(config) { deps, client in
            let check = RedisClient(configuration: try RedisConfiguration(url: config.redisURL), name: "check")
            defer { check.close() }
            let features = self.features
            let answered = try await withThrowingTaskGroup(of: (ScoreResponse, [AuditRecord]).self) { group in
                for i in 0..<32 {
                    group.addTask {
                        let (r, _) = try await client.score(
                            ScoreRequest(symbol: "BTCUSDT", features: features),
                            requestID: i % 2 == 0 ? "sync-\(i)" : nil)
                        // Read at once: no waiting for the record to show up.
                        return (r, try Self.decode(try await check.xrange(config.auditStream)))
                    }
                }
                var out: [(ScoreResponse, [AuditRecord])] = []
                for try await pair in group { out.append(pair) }
                return out
            }
            #expect(answered.count == 32)
            for (response, seen) in answered {
                let record = seen.first { $0.decisionId == response.decisionId }
                #expect(record != nil, "decision \(response.decisionId) answered before its record was in Redis")
                #expect(record?.requestId == response.requestId)
                #expect(record?.score == response.score)
            }
            let withoutID = answered.map(\.0).filter { !$0.requestId.hasPrefix("sync-") }
            #expect(withoutID.count == 16)
            #expect(withoutID.allSatisfy { $0.requestId == $0.decisionId && $0.decisionId.count == 36 })
            #expect(Set(answered.map(\.0.decisionId)).count == 32)
            // The gateway made audit-writer's group, from the stream's first entry.
            let groups = try await check.xinfoGroups(config.auditStream)
            #expect(groups.map(\.name) == ["audit-writer"])
            #expect(groups.first?.lastDeliveredID == "0-0")

            try await server.kill()
            let (headers, body) = Self.scoreRequest(features, requestID: "refused-1")
            let refused = try await client.execute(uri: "/v1/score", method: .post, headers: headers, body: body)
            #expect(refused.status == .serviceUnavailable)
            let error = try Self.json(refused.body)["error"] as? [String: Any]
            #expect(error?["code"] as? String == "audit_unavailable")
            #expect(deps.engine.audit.withdrawn == 1)
            let t0 = ContinuousClock.now
            let ready = try await client.execute(uri: "/readyz", method: .get)
            let readyTime = ContinuousClock.now - t0
            print("readyz with Redis killed answered in \(readyTime)")
            #expect(ready.status == .serviceUnavailable)
            let readyBody = try Self.json(ready.body)
            #expect(readyBody["redis"] as? Bool == false)
            #expect((readyBody["redis_error"] as? String)?.isEmpty == false)

            let restarted = try await PrivateRedisServer(port: server.port)
            // Ready again with no traffic at all (an unready replica gets none on Kubernetes).
            #expect(
                await TestEnv.eventually(timeout: .seconds(20)) {
                    (try? await client.execute(uri: "/readyz", method: .get).status) == .ok
                })
            let back = await TestEnv.eventually(timeout: .seconds(20)) {
                (try? await client.score(ScoreRequest(symbol: "BTCUSDT", features: features), requestID: "back-1"))
                    != nil
            }
            #expect(back)
            let fresh = RedisClient(configuration: try RedisConfiguration(url: config.redisURL), name: "check-after")
            defer { fresh.close() }
            let after = try Self.decode(try await fresh.xrange(config.auditStream))
            #expect(after.contains { $0.requestId == "back-1" })
            #expect(!after.contains { $0.requestId == "refused-1" })
            try await restarted.kill()
        }
    }

    /// A Redis that accepts and never answers (SIGSTOP): /readyz still answers at once, 503, naming Redis.
    @Test func readyzAnswersWhileRedisHangs() async throws {
        let server = try await PrivateRedisServer()
        let config = try GatewayTestEnv.config("hung-redis") {
            $0.redisURL = server.url
            $0.auditDurability = .async
        }
        try await GatewayTestEnv.withGateway(config) { _, client in
            #expect(try await client.execute(uri: "/readyz", method: .get).status == .ok)
            server.pause()
            var times: [Duration] = []
            for _ in 0..<3 {
                let t0 = ContinuousClock.now
                let ready = try await client.execute(uri: "/readyz", method: .get)
                times.append(ContinuousClock.now - t0)
                #expect(ready.status == .serviceUnavailable)
                let body = try Self.json(ready.body)
                #expect(body["redis"] as? Bool == false)
                #expect((body["redis_error"] as? String)?.hasPrefix("no answer within") == true)
            }
            print("readyz with Redis stopped (SIGSTOP) answered in \(times)")
            server.resume()
            #expect(
                await TestEnv.eventually(timeout: .seconds(10)) {
                    (try? await client.execute(uri: "/readyz", method: .get).status) == .ok
                })
        }
        try await server.kill()
    }

    /// Triton gone (primary and secondary): /readyz stays 200 — answers still come from the fallback
    /// chain — and its body says both are down and how the breakers stand.
    @Test func readyzStaysReadyWithTritonGoneAndSaysSo() async throws {
        let config = try GatewayTestEnv.config("no-triton", triton: try closedPortURL()) {
            $0.tritonSecondaryURL = try? closedPortURL()
        }
        try await GatewayTestEnv.withGateway(config, waitForIdentity: false) { _, client in
            let (answer, _) = try await client.score(ScoreRequest(symbol: "BTCUSDT", features: features))
            #expect(answer.source == .rules)
            let t0 = ContinuousClock.now
            let ready = try await client.execute(uri: "/readyz", method: .get)
            print("readyz with Triton gone answered in \(ContinuousClock.now - t0)")
            #expect(ready.status == .ok)
            let body = try Self.json(ready.body)
            #expect(body["ready"] as? Bool == true)
            #expect(body["redis"] as? Bool == true)
            #expect(body["triton_primary"] as? Bool == false)
            #expect(body["triton_secondary"] as? Bool == false)
            let breakers = body["breakers"] as? [String: Any]
            #expect(breakers?["primary"] is String)
            #expect(breakers?["secondary"] is String)
        }
    }

    /// Records written before any group existed are not trimmed, STREAM_MAXLEN or not; once a group has
    /// acknowledged some, trimming stops at its oldest unacknowledged entry; once it has all, at MAXLEN.
    @Test func nothingIsTrimmedBeforeEveryGroupHasIt() async throws {
        let config = try GatewayTestEnv.config("trim") {
            $0.streamMaxLen = 10
            $0.auditDurability = .sync
        }
        let redis = RedisClient(configuration: try TestEnv.redisConfiguration(), name: "trim-test")
        defer { redis.close() }
        let stream = config.auditStream
        let early = (0..<50).map { i in
            AuditRecord(
                decisionId: RequestID.random(), requestId: "early-\(i)", tsNs: Int64(i), symbol: "BTCUSDT",
                decision: .abstain,
                score: nil, source: .abstain, modelName: nil, modelVersion: nil, modelHash: nil, features: nil,
                featureAgeMs: nil, latencyUs: 0)
        }
        _ = try await redis.pipeline(try early.map { .xadd(stream, maxLen: nil, fields: try $0.streamFields()) })
        // no group yet: nobody has read them
        #expect(try await StreamTrim.trim(redis, stream: stream, maxLen: 10) == 0)

        try await GatewayTestEnv.withGateway(config) { _, client in
            for i in 0..<5 {
                _ = try await client.score(ScoreRequest(symbol: "BTCUSDT", features: features), requestID: "late-\(i)")
            }
        }
        // The gateway created the group from the start and trimmed after its writes: nothing went.
        #expect(try await redis.xlen(stream) == 55)
        #expect(try await redis.xinfoGroups(stream).map(\.name) == ["audit-writer"])

        // audit-writer reads 40 and acknowledges 30: the 10 pending and the 5 unread stay.
        let read = try await redis.xreadgroup(group: "audit-writer", consumer: "c", streams: [(stream, ">")], count: 40)
        let ids = read.flatMap(\.entries).map(\.id)
        #expect(ids.count == 40)
        try await redis.xack(stream, group: "audit-writer", ids: Array(ids.prefix(30)))
        #expect(try await StreamTrim.trim(redis, stream: stream, maxLen: 10) == 30)
        #expect(try await redis.xlen(stream) == 25)
        #expect(try await redis.xrange(stream, count: 1).first?.id == ids[30])

        // A second group that has read nothing holds everything.
        try await redis.xgroupCreate(stream: stream, group: "other", startID: "0")
        try await redis.xack(stream, group: "audit-writer", ids: Array(ids.suffix(10)))
        #expect(try await StreamTrim.trim(redis, stream: stream, maxLen: 10) == 0)
        _ = try await redis.xgroupDestroy(stream: stream, group: "other")

        // Everything acknowledged: MAXLEN is the bound.
        let rest = try await redis.xreadgroup(
            group: "audit-writer", consumer: "c", streams: [(stream, ">")], count: 100)
        try await redis.xack(stream, group: "audit-writer", ids: rest.flatMap(\.entries).map(\.id))
        #expect(try await StreamTrim.trim(redis, stream: stream, maxLen: 10) == 15)
        #expect(try await redis.xlen(stream) == 10)
        _ = try await redis.del([stream])
    }
}
