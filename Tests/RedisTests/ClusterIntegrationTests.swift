import Foundation
import TERedis
import TestSupport
import Testing

/// TERedis against the real local Redis Cluster of `make dev-up` (3 masters, 1 replica each;
/// `REDIS_CLUSTER_URL`). Serialized: one test moves a slot and back. The failover test kills a master of
/// a private cluster (`PrivateRedisCluster`), never of the shared one.
@Suite("RedisClient against a real Redis Cluster", .serialized, .timeLimit(.minutes(3)))
struct ClusterIntegrationTests {
    static func clusterURL() throws -> String {
        guard let url = ProcessInfo.processInfo.environment["REDIS_CLUSTER_URL"], !url.isEmpty else {
            throw MissingCluster()
        }
        return url
    }

    struct MissingCluster: Error, CustomStringConvertible {
        var description: String {
            "REDIS_CLUSTER_URL is not set: run the tests through `make test` (or `DEV_REDIS_CLUSTER=1 make dev-up` and source .dev/env)"
        }
    }

    static func client(_ name: String) throws -> RedisClient {
        RedisClient(configuration: try RedisConfiguration(url: clusterURL()), name: name)
    }

    /// A plain connection to one node, for the administration a test does behind the client's back.
    static func admin(_ node: RedisNodeAddress) throws -> RedisClient {
        RedisClient(configuration: try RedisConfiguration(url: "redis://\(node)/0"), name: "admin-\(node.port)")
    }

    /// A hash tag per master: `prefix{n}` for the first n whose slot each master serves.
    static func tagsPerMaster(_ map: RedisClusterSlotMap, prefix: String) -> [(master: RedisNodeAddress, tag: String)] {
        map.masters.map { master in
            let n = (0...).first { map.master(forSlot: RedisClusterSlot.slot(of: "\(prefix)\($0)")) == master }!
            return (master, "{\(prefix)\(n)}")
        }
    }

    @Test func streamsOnHashTaggedKeysWorkOnEveryMaster() async throws {
        let redis = try Self.client("streams")
        defer { redis.close() }
        let map = try #require(try await redis.clusterSlotMap())
        #expect(map.coversAllSlots)
        #expect(map.masters.count == 3)
        let prefix = TestEnv.uniqueName("cs")
        for (master, tag) in Self.tagsPerMaster(map, prefix: prefix) {
            let stream = "te:ticks:\(tag)"
            let output = "te:features:\(tag)"
            try await redis.xgroupCreate(stream: stream, group: "g", startID: "0")
            let ids = [
                try await redis.xadd(stream, fields: [("n", "1")]), try await redis.xadd(stream, fields: [("n", "2")])
            ]
            let read = try await redis.xreadgroup(
                group: "g", consumer: "c", streams: [(stream, ">")], count: 10, block: .milliseconds(100))
            #expect(read.first?.entries.map(\.id) == ids)
            // Output and acknowledgement in one MULTI/EXEC: both keys carry the shard's tag.
            let replies = try await redis.transaction([
                .xadd(output, maxLen: nil, fields: [("from", ids[1])]), .xack(stream, group: "g", ids: ids)
            ])
            #expect(replies.count == 2 && replies[1] == .integer(2))
            #expect(try await redis.xpending(stream, group: "g").count == 0)
            // The keys really live on that master.
            let admin = try Self.admin(master)
            defer { admin.close() }
            #expect(try await admin.send(RedisCommand("EXISTS", stream, output)) == .integer(2))
            try await redis.del([stream])
            try await redis.del([output])
        }
    }

    @Test func pipelinesSpanningNodesReturnRepliesInOrder() async throws {
        let redis = try Self.client("pipeline")
        defer { redis.close() }
        let prefix = TestEnv.uniqueName("cp")
        let keys = (0..<300).map { "{\(prefix):\($0)}" }
        let map = try #require(try await redis.clusterSlotMap())
        #expect(Set(keys.map { map.master(forSlot: RedisClusterSlot.slot(of: $0))! }).count == 3)
        var commands = keys.enumerated().map { RedisCommand.set($1, "v\($0)") }
        // A command over two slots fails alone, in its place.
        commands.insert(RedisCommand("DEL", keys[0], keys[1]), at: 150)
        let setReplies = try await redis.pipeline(commands)
        #expect(setReplies.count == 301)
        #expect(setReplies.enumerated().allSatisfy { $0.offset == 150 || $0.element == .status("OK") })
        #expect(setReplies[150].string?.hasPrefix("CROSSSLOT") == true)
        let values = try await redis.pipeline(keys.map { RedisCommand.get($0) })
        #expect(values.map(\.string) == (0..<300).map { "v\($0)" })
        // Keyspace-wide commands reach every master.
        #expect(Set(try await redis.keys("{\(prefix):*")) == Set(keys))
        #expect(Set(try await redis.scan(match: "{\(prefix):*")) == Set(keys))
        _ = try await redis.pipeline(keys.map { RedisCommand.del([$0]) })
    }

    @Test func keysInSeveralSlotsAreRefusedWithACrossSlotError() async throws {
        let redis = try Self.client("crossslot")
        defer { redis.close() }
        await #expect(throws: RedisError.self) {
            try await redis.transaction([RedisCommand("INCR", "foo"), RedisCommand("INCR", "bar")])
        }
        do {
            _ = try await redis.send(RedisCommand("EVAL", "return 1", "2", "foo", "bar"))
            Issue.record("EVAL over two slots must be refused")
        } catch {
            #expect(error.isServerError("CROSSSLOT"))
            #expect(error.message.contains("foo → slot 12182") && error.message.contains("bar → slot 5061"))
        }
        do {
            _ = try await redis.xreadgroup(
                group: "g", consumer: "c", streams: [("te:ticks:{0}", ">"), ("te:ticks:{1}", ">")])
            Issue.record("XREADGROUP over two slots must be refused")
        } catch {
            #expect(error.isServerError("CROSSSLOT"))
        }
        // One slot: the script runs on the master of its keys' slot.
        let tag = "{\(TestEnv.uniqueName("ce"))}"
        let reply = try await redis.send(
            RedisCommand(
                "EVAL", "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('INCR', KEYS[2])", "2", "\(tag)a",
                "\(tag)b", "x"))
        #expect(reply == .integer(1))
        #expect(try await redis.get("\(tag)a") == "x")
        try await redis.del(["\(tag)a", "\(tag)b"])
    }

    // MARK: Slot migration (MOVED, ASK)

    /// Moves `slot` from `source` to `target` as `redis-cli --cluster reshard` does, one step at a time.
    struct SlotMove {
        let slot: Int
        let source: RedisClient
        let target: RedisClient
        let sourceID: String
        let targetID: String
        let targetNode: RedisNodeAddress
        let everyMaster: [RedisClient]

        func begin() async throws {
            try await target.send(RedisCommand("CLUSTER", "SETSLOT", String(slot), "IMPORTING", sourceID))
            try await source.send(RedisCommand("CLUSTER", "SETSLOT", String(slot), "MIGRATING", targetID))
        }

        func finish() async throws {
            while true {
                let keys =
                    (try await source.send(RedisCommand("CLUSTER", "GETKEYSINSLOT", String(slot), "100")).array ?? [])
                    .compactMap(\.string)
                if keys.isEmpty { break }
                try await source.send(
                    RedisCommand(["MIGRATE", targetNode.host, String(targetNode.port), "", "0", "5000", "KEYS"] + keys))
            }
            for master in [target, source] + everyMaster {
                try await master.send(RedisCommand("CLUSTER", "SETSLOT", String(slot), "NODE", targetID))
            }
        }
    }

    @Test func migratedSlotsAreFollowedThroughAskAndMoved() async throws {
        let redis = try Self.client("resharding")
        defer { redis.close() }
        let map = try #require(try await redis.clusterSlotMap())
        let tag = "{\(TestEnv.uniqueName("cm"))}"
        let slot = RedisClusterSlot.slot(of: tag)
        let sourceNode = try #require(map.master(forSlot: slot))
        let targetNode = try #require(map.masters.first { $0 != sourceNode })
        let admins = try map.masters.map { try Self.admin($0) }
        defer { for a in admins { a.close() } }
        let source = admins[map.masters.firstIndex(of: sourceNode)!]
        let target = admins[map.masters.firstIndex(of: targetNode)!]
        let sourceID = try #require(try await source.send("CLUSTER", "MYID").string)
        let targetID = try #require(try await target.send("CLUSTER", "MYID").string)
        let forth = SlotMove(
            slot: slot, source: source, target: target, sourceID: sourceID, targetID: targetID, targetNode: targetNode,
            everyMaster: admins)
        let back = SlotMove(
            slot: slot, source: target, target: source, sourceID: targetID, targetID: sourceID, targetNode: sourceNode,
            everyMaster: admins)

        try await redis.set("\(tag)old", "before")
        try await forth.begin()
        // Mid-migration: a key the source no longer has (a new one) is answered with ASK → the target.
        try await redis.set("\(tag)new", "during")
        #expect(try await redis.get("\(tag)new") == "during")
        do {
            _ = try await target.send(RedisCommand("EXISTS", "\(tag)new"))
            Issue.record("an importing node serves a migrating slot only after ASKING")
        } catch {
            #expect(error.isServerError("MOVED"))
        }
        #expect(
            try await target.pipeline([RedisCommand("ASKING"), RedisCommand("EXISTS", "\(tag)new")])[1] == .integer(1))
        // A key still on the source is served there.
        #expect(try await redis.get("\(tag)old") == "before")
        // A transaction on a new key follows ASK too (ASKING, MULTI … EXEC).
        let tx = try await redis.transaction([RedisCommand("SET", "\(tag)tx", "t"), RedisCommand("GET", "\(tag)tx")])
        #expect(tx.last?.string == "t")
        // The client's map still says source: ASK does not move the slot.
        #expect(try await redis.clusterSlotMap(refresh: false)?.master(forSlot: slot) == sourceNode)

        try await forth.finish()
        // The client learns the new owner from MOVED and updates its map.
        #expect(try await redis.get("\(tag)old") == "before")
        #expect(try await redis.clusterSlotMap(refresh: false)?.master(forSlot: slot) == targetNode)
        #expect(try await redis.pipeline([.get("\(tag)new"), .get("\(tag)tx")]).map(\.string) == ["during", "t"])

        // And back, so the cluster keeps its layout; a second client with the old map follows MOVED at once.
        try await back.begin()
        try await back.finish()
        let replies = try await redis.pipeline([.get("\(tag)old"), .get("\(tag)new")])
        #expect(replies.map(\.string) == ["before", "during"])
        #expect(try await redis.clusterSlotMap()?.master(forSlot: slot) == sourceNode)
        try await redis.del(["\(tag)old", "\(tag)new", "\(tag)tx"])
    }

    // MARK: Failover

    /// SIGKILLs one master of a private cluster (the shared one is never failed over); its replica takes
    /// over (cluster-node-timeout 1 s) and the client, retrying as a service does, writes and reads that
    /// slot again by itself. A replicated write then waits only for the replicas the new map names online.
    @Test func clientRecoversWhenAMasterIsKilledAndItsReplicaTakesOver() async throws {
        let cluster = try await PrivateRedisCluster()
        let redis = RedisClient(configuration: try RedisConfiguration(url: cluster.url), name: "failover")
        let map = try #require(try await redis.clusterSlotMap())
        #expect(map.masters.allSatisfy { map.replicas(of: $0) == 1 })
        let victim = map.masters[1]
        let tag = Self.tagsPerMaster(map, prefix: TestEnv.uniqueName("cf")).first { $0.master == victim }!.tag
        let stream = "te:ticks:\(tag)"
        try await redis.xgroupCreate(stream: stream, group: "g", startID: "0")
        // Acknowledged by the victim's replica before it returns: it survives the kill below.
        let before = try await redis.send(
            RedisCommand("XADD", stream, "*", "n", "before"), replicated: true
        ).string
        try await cluster.kill(port: victim.port)

        var failures = 0
        var written: String?
        let deadline = ContinuousClock.now + .seconds(60)
        while written == nil, ContinuousClock.now < deadline {
            do {
                written = try await redis.send(RedisCommand("XADD", stream, "*", "n", "after"), replicated: true).string
            } catch {
                #expect(error.isRetriable, "\(error)")
                failures += 1
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        let id = try #require(written, "no write succeeded within 60 s of the master's death")
        let read = try await redis.xreadgroup(group: "g", consumer: "c", streams: [(stream, ">")], count: 10)
        #expect(read.first?.entries.map(\.id) == [before, id].compactMap { $0 })
        let newMap = try #require(try await redis.clusterSlotMap())
        #expect(newMap.coversAllSlots)
        #expect(!newMap.masters.contains(victim))
        // The promoted replica has none of its own yet.
        let promoted = try #require(newMap.master(forSlot: RedisClusterSlot.slot(of: stream)))
        #expect(newMap.replicas(of: promoted) == 0)
        redis.close()
        await cluster.shutdown()
    }
}
