import Foundation
import TERedis
import TestSupport
import Testing

@testable import Ingest

/// ingest's real scripts on real servers: as ingest's ACL user (this checkout's deploy/redis/users.acl
/// rendered onto a private server), and on the shared Redis Cluster, where each must touch one slot.
@Suite("ingest scripts: ACL grants and one slot each", .timeLimit(.minutes(2)))
struct IngestScriptTests {
    /// Every group's fenced batch writes once and skips a repeat, the restore reads fence and books back,
    /// and a spread never goes back in time.
    /// `admin` reads what `redis` (as ingest) wrote.
    func exercise(
        _ redis: RedisClient, admin: RedisClient, ticks: [String], dlq: String, spreadKey: String, base: String
    ) async throws {
        for stream in ticks + [dlq] {
            let fence = FencedBatch.groupKey(base + ":offsets", stream: stream)
            let books = FencedBatch.groupKey(base + ":books", stream: stream)
            for attempt in 0..<2 {
                var batch = FencedBatch(offsetsKey: fence, booksKey: books, capacity: 0)
                batch.beginMessage(partition: 0, offset: 7)
                batch.xadd(stream, maxLen: 1000, fields: [("symbol", "BTCUSDT")])
                batch.book(partition: 0, offset: 7, symbol: "BTCUSDT", checkpoint: "checkpoint")
                let outcome = try FencedBatch.outcome(try await redis.send(batch.command))
                #expect(
                    outcome == FencedBatch.Outcome(applied: attempt == 0 ? 1 : 0, skipped: attempt, errors: []),
                    "\(stream)")
            }
            #expect(try await admin.xlen(stream) == 1, "\(stream)")
            let restored = try await redis.send(RedisCommand("EVAL", FencedBatch.restoreScript, "2", fence, books, "0"))
                .throwingError()
            #expect(restored.array?.first?.string == "7", "\(stream): \(restored)")
            #expect(
                restored.array?.last?.array?.compactMap(\.string) == ["BTCUSDT", "0 checkpoint"],
                "\(stream): \(restored)")
            let forgot = try await redis.send(
                RedisCommand("EVAL", FencedBatch.forgetScript, "2", fence, books, "0", "7")
            ).throwingError()
            #expect(forgot.int == 1, "\(stream)")
        }
        let newer = try await redis.send(
            FencedBatch.spread(key: spreadKey, bps: 2.5, tsNs: 1_723_161_254_000_000_002, expireSeconds: 60))
        let older = try await redis.send(
            FencedBatch.spread(key: spreadKey, bps: 9, tsNs: 1_723_161_254_000_000_001, expireSeconds: 60))
        #expect(try newer.throwingError().int == 1)
        #expect(try older.throwingError().int == 0)
        #expect(try await admin.get(spreadKey) == "2.5")
    }

    @Test(
        "as ingest's ACL user: the fences and books of te:ticks, te:ticks:{k} and te:dlq, and the spread guard are granted"
    )
    func grantedToIngest() async throws {
        let server = try await PrivateRedisServer(aclFile: try await StoreUsers.renderStrictACL())
        let redis = RedisClient(
            configuration: try RedisConfiguration(url: StoreUsers.redisURL(for: "ingest", on: server.url)),
            name: "ingest")
        defer { redis.close() }
        // The strict file keeps the default user on for the test harness.
        let admin = RedisClient(configuration: try RedisConfiguration(url: server.url), name: "admin")
        defer { admin.close() }
        try await exercise(
            redis, admin: admin, ticks: ["te:ticks", "te:ticks:{0}", "te:ticks:{3}"], dlq: "te:dlq",
            spreadKey: "te:spread_bps:BTCUSDT",
            base: "te:ingest")
        try await server.kill()
    }

    @Test("on the Redis Cluster every ingest script touches one slot")
    func oneSlotEachOnTheCluster() async throws {
        let redis = RedisClient(
            configuration: try RedisConfiguration(url: TestEnv.redisClusterURL()), name: "ingest-scripts")
        defer { redis.close() }
        let name = TestEnv.uniqueName("ingest-slots")
        let ticks = [name + ":ticks"] + (0..<3).map { "\(name):ticks:{\($0)}" }
        let dlq = name + ":dlq"
        let spreadKey = name + ":spread:BTCUSDT"
        try await exercise(redis, admin: redis, ticks: ticks, dlq: dlq, spreadKey: spreadKey, base: name)
        for stream in ticks + [dlq] {
            for key in [
                stream, FencedBatch.groupKey(name + ":offsets", stream: stream),
                FencedBatch.groupKey(name + ":books", stream: stream)
            ] {
                _ = try await redis.del([key])
            }
        }
        for key in [spreadKey, "te:ingest:spread_ts:{\(spreadKey)}"] { _ = try await redis.del([key]) }
    }
}
