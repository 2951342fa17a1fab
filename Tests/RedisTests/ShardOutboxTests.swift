import Foundation
import TEModels
import TERedis
import TestSupport
import Testing

@testable import ServiceKit

/// The outbox relay (`ShardOutbox`) against the real Redis (`REDIS_URL`) and the shared Redis Cluster, on
/// names of the test's own: each committed outbox entry reaches the target once, in order, whoever relays it
/// and however often.
@Suite("ShardOutbox relay (real Redis)", .timeLimit(.minutes(1)))
struct ShardOutboxTests {
    func outbox(_ name: String, shard: Int = 2) -> ShardOutbox {
        ShardOutbox(
            outbox: StreamKey.sharded("\(name):agg", shard: shard, of: 4) + ":outbox", target: "\(name):opps",
            relayed: ShardOutbox.relayedKey(prefix: "\(name):agg", target: "\(name):opps"), maxLen: 1000)
    }

    func entry(version: Int64, index: Int, _ n: Int) -> ShardOutbox.Entry {
        var fields = StreamFieldWriter()
        fields.field("v", "1")
        fields.field("n", String(n))
        return ShardOutbox.Entry(id: ShardOutbox.id(version: version, index: index), fields: fields)
    }

    func numbers(_ redis: RedisClient, _ stream: String) async throws -> [String] {
        try await redis.xrange(stream).map { entry in entry.fields.first { $0.0 == "n" }?.1 ?? "?" }
    }

    @Test func eachEntryReachesTheTargetOnceInOrderWhoeverRelaysIt() async throws {
        let redis = RedisClient(configuration: try TestEnv.redisConfiguration(), name: "outbox-test")
        defer { redis.close() }
        let box = outbox(TestEnv.uniqueName("outbox"))
        defer { Task { _ = try? await redis.del([box.outbox, box.target, box.relayed]) } }

        // Two outputs committed into the outbox (versions 1 and 2), relayed from memory: then the same again
        // (a relay repeated after a crash) and by a second relayer reading the whole outbox: nothing twice.
        for command in [entry(version: 1, index: 0, 1), entry(version: 1, index: 1, 2), entry(version: 2, index: 0, 3)]
            .map(box.add)
        {
            _ = try await redis.send(command).throwingError()
        }
        #expect(
            try await box.relay([entry(version: 1, index: 0, 1), entry(version: 1, index: 1, 2)], on: redis) == "1-1")
        #expect(
            try await box.relay([entry(version: 1, index: 0, 1), entry(version: 1, index: 1, 2)], on: redis) == "1-1")
        #expect(try await box.relayAll(on: redis) == "2-0")
        #expect(try await box.relayAll(on: redis, after: "1-1") == "2-0")
        #expect(try await numbers(redis, box.target) == ["1", "2", "3"])
        #expect(try await redis.send("HGET", box.relayed, box.outbox).string == "2-0")

        // Ten versions further (ids compare as numbers, not text: "12-0" after "9-0"), relayed by two at
        // once, each in chunks of 3: every entry once, in outbox order.
        var expected = ["1", "2", "3"]
        for version in Int64(3)...Int64(12) {
            _ = try await redis.send(box.add(entry(version: version, index: 0, Int(version) + 1))).throwingError()
            expected.append(String(version + 1))
        }
        async let first = box.relayAll(on: redis, chunk: 3)
        async let second = box.relayAll(on: redis, chunk: 3)
        let (a, b) = try await (first, second)
        #expect(a == "12-0" && b == "12-0")
        #expect(try await numbers(redis, box.target) == expected)

        // Trimmed through what was relayed: the outbox keeps only later entries.
        _ = try await redis.send(box.add(entry(version: 13, index: 0, 14))).throwingError()
        _ = try await redis.send(box.trim(through: "12-0")).throwingError()
        #expect(try await redis.xrange(box.outbox).map(\.id) == ["13-0"])
        #expect(try await box.relayAll(on: redis, after: "12-0") == "13-0")
        #expect(try await numbers(redis, box.target) == expected + ["14"])
    }

    /// On the shared Redis Cluster (`REDIS_CLUSTER_URL`): the relay's memory shares the target's slot (one
    /// script), the outbox the shard's.
    @Test func onAClusterTheRelayIsOneSlotAndTheOutboxTheShards() async throws {
        let url = try #require(
            ProcessInfo.processInfo.environment["REDIS_CLUSTER_URL"], "REDIS_CLUSTER_URL is not set (source .dev/env)")
        let cluster = RedisClient(configuration: try RedisConfiguration(url: url), name: "outbox-cluster")
        defer { cluster.close() }
        let box = outbox(TestEnv.uniqueName("outbox"), shard: 3)
        #expect(RedisClusterSlot.slot(of: box.relayed) == RedisClusterSlot.slot(of: box.target))
        #expect(
            RedisClusterSlot.slot(of: box.outbox) == RedisClusterSlot.slot(of: StreamKey.sharded("x", shard: 3, of: 4)))
        _ = try await cluster.send(box.add(entry(version: 1, index: 0, 1))).throwingError()
        #expect(try await box.relayAll(on: cluster) == "1-0")
        #expect(try await box.relayAll(on: cluster) == "1-0")
        #expect(try await numbers(cluster, box.target) == ["1"])
        _ = try await cluster.del([box.outbox])
        _ = try await cluster.del([box.target])
        _ = try await cluster.del([box.relayed])
    }
}
