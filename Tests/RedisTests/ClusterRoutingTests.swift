import ServiceKit
import TECore
import TERedis
import Testing

/// Cluster routing without I/O: slots, the slot map, redirections and per-node batches.
@Suite struct ClusterRoutingTests {
    let a = RedisNodeAddress(host: "10.0.0.1", port: 7000)
    let b = RedisNodeAddress(host: "10.0.0.2", port: 7001)
    let c = RedisNodeAddress(host: "10.0.0.3", port: 7002)

    var threeMasters: RedisClusterSlotMap {
        RedisClusterSlotMap(ranges: [(0...5460, a), (5461...10922, b), (10923...16383, c)])
    }

    /// The cluster specification's examples, and slots a real server reported (CLUSTER KEYSLOT).
    @Test func slotsFollowTheSpecificationIncludingHashTags() {
        var check = Array("123456789".utf8)
        #expect(check.withUnsafeMutableBufferPointer { RedisClusterSlot.crc16(UnsafeBufferPointer($0)) } == 0x31C3)
        #expect(RedisClusterSlot.slot(of: "123456789") == 12739)
        #expect(RedisClusterSlot.slot(of: "foo") == 12182)
        #expect(RedisClusterSlot.slot(of: "bar") == 5061)
        #expect(RedisClusterSlot.slot(of: "hello") == 866)
        #expect(RedisClusterSlot.slot(of: "") == 0)
        // {user1000}.following and {user1000}.followers hash only "user1000": the same slot.
        #expect(RedisClusterSlot.slot(of: "{user1000}.following") == 3443)
        #expect(RedisClusterSlot.slot(of: "{user1000}.followers") == 3443)
        #expect(RedisClusterSlot.slot(of: "user1000") == 3443)
        // An empty tag hashes the whole key.
        #expect(RedisClusterSlot.slot(of: "foo{}{bar}") == 8363)
        // The tag ends at the first } after the first {: "{bar".
        #expect(RedisClusterSlot.slot(of: "foo{{bar}}zap") == RedisClusterSlot.slot(of: "{bar"))
        #expect(RedisClusterSlot.slot(of: "foo{{bar}}zap") == 4015)
        // Only the first tag counts.
        #expect(RedisClusterSlot.slot(of: "foo{bar}{zap}") == 5061)
        // An unclosed brace is no tag.
        #expect(RedisClusterSlot.slot(of: "foo{bar") != RedisClusterSlot.slot(of: "bar"))
        // A shard's streams share the slot of the shard number.
        #expect(RedisClusterSlot.slot(of: "te:ticks:{0}") == 13907)
        #expect(RedisClusterSlot.slot(of: "te:features:{0}") == RedisClusterSlot.slot(of: "0"))
        #expect(RedisClusterSlot.slot(of: Array("{user1000}.x".utf8)) == 3443)
    }

    @Test func commandsAreRoutedByTheirKeys() throws {
        #expect(try RedisClusterRouting.target(of: RedisCommand("GET", "foo")) == .slot(12182))
        #expect(
            try RedisClusterRouting.target(of: .xadd("{user1000}.s", maxLen: 10, fields: [("f", "v")])) == .slot(3443))
        #expect(try RedisClusterRouting.target(of: RedisCommand("XGROUP", "CREATE", "bar", "g", "$")) == .slot(5061))
        #expect(try RedisClusterRouting.target(of: RedisCommand("XINFO", "GROUPS", "hello")) == .slot(866))
        let read = RedisCommand(
            "XREADGROUP", "GROUP", "g", "c", "COUNT", "10", "BLOCK", "5", "STREAMS", "{a}1", "{a}2", ">", ">")
        #expect(try RedisClusterRouting.target(of: read) == RedisClusterTarget.slot(RedisClusterSlot.slot(of: "a")))
        #expect(
            try RedisClusterRouting.target(of: RedisCommand("EVAL", "return 1", "2", "{x}a", "{x}b", "arg"))
                == .slot(RedisClusterSlot.slot(of: "x")))
        #expect(try RedisClusterRouting.target(of: RedisCommand("EVAL", "return 1", "0")) == .anyNode)
        #expect(try RedisClusterRouting.target(of: RedisCommand("PING")) == .anyNode)
        #expect(try RedisClusterRouting.target(of: RedisCommand("FLUSHALL")) == .allMasters)
        #expect(try RedisClusterRouting.target(of: RedisCommand("KEYS", "te:*")) == .allMasters)
    }

    @Test func keysInSeveralSlotsAreRefusedWithCrossSlot() throws {
        #expect(throws: RedisError.self) { try RedisClusterRouting.target(of: RedisCommand("DEL", "foo", "bar")) }
        do {
            _ = try RedisClusterRouting.target(of: RedisCommand("EVAL", "return 1", "2", "foo", "bar"))
            Issue.record("EVAL over two slots must be refused")
        } catch {
            #expect(error.isServerError("CROSSSLOT"))
            #expect(error.message.contains("foo → slot 12182"))
            #expect(error.message.contains("bar → slot 5061"))
        }
        let sameSlot = [
            RedisCommand("INCR", "{t}a"), .xadd("{t}b", maxLen: nil, fields: [("f", "1")]), RedisCommand("PING")
        ]
        #expect(try RedisClusterRouting.transactionSlot(of: sameSlot) == RedisClusterSlot.slot(of: "t"))
        #expect(try RedisClusterRouting.transactionSlot(of: [RedisCommand("PING")]) == nil)
        do {
            _ = try RedisClusterRouting.transactionSlot(of: [RedisCommand("INCR", "foo"), RedisCommand("INCR", "bar")])
            Issue.record("a transaction over two slots must be refused")
        } catch {
            #expect(error.isServerError("CROSSSLOT"))
        }
    }

    @Test func slotMapAnswersTheMasterOfEachSlotAndDropsMastersWithoutSlots() {
        var map = threeMasters
        #expect(map.coversAllSlots)
        #expect(map.master(forSlot: 0) == a && map.master(forSlot: 5460) == a)
        #expect(map.master(forSlot: 5461) == b && map.master(forSlot: 16383) == c)
        #expect(map.masters == [a, b, c])
        map.assign(5461...10922, to: c)
        #expect(map.masters == [a, c])
        #expect(map.master(forSlot: 6000) == c)
        #expect(!RedisClusterSlotMap(ranges: [(0...100, a)]).coversAllSlots)
        #expect(RedisClusterSlotMap().master(forSlot: 5) == nil)
    }

    /// Replies shaped as Redis 7.0 sends them (RESP2).
    @Test func slotMapParsesClusterShardsAndClusterSlots() throws {
        func node(_ port: Int, _ role: String, health: String = "online", endpoint: String = "127.0.0.1") -> RedisReply
        {
            .array([
                .bulk(Array("id".utf8)), .bulk(Array("abc".utf8)), .bulk(Array("port".utf8)), .integer(Int64(port)),
                .bulk(Array("ip".utf8)), .bulk(Array("127.0.0.1".utf8)), .bulk(Array("endpoint".utf8)),
                .bulk(Array(endpoint.utf8)), .bulk(Array("role".utf8)), .bulk(Array(role.utf8)),
                .bulk(Array("health".utf8)), .bulk(Array(health.utf8))
            ])
        }
        func shard(_ ranges: [Int], _ nodes: [RedisReply]) -> RedisReply {
            .array([
                .bulk(Array("slots".utf8)), .array(ranges.map { .integer(Int64($0)) }), .bulk(Array("nodes".utf8)),
                .array(nodes)
            ])
        }
        let seed = RedisNodeAddress(host: "127.0.0.1", port: 1)
        let shards = RedisReply.array([
            shard([0, 5460], [node(7000, "master"), node(7003, "replica"), node(7005, "replica", health: "loading")]),
            // A failed master still listed next to the replica that took over: the live one wins.
            shard([5461, 10922], [node(7001, "master", health: "fail"), node(7004, "master")]),
            // An unknown endpoint ("?") falls back to the ip.
            shard([10923, 12000, 12001, 16383], [node(7002, "master", endpoint: "?")])
        ])
        let map = try RedisClusterSlotMap.fromShards(shards, repliedBy: seed)
        #expect(map.coversAllSlots)
        #expect(map.masters.map(\.port) == [7000, 7004, 7002])
        #expect(map.master(forSlot: 12001)?.port == 7002)
        // Only online replicas count: a write waits for them before it survives a failover.
        #expect(map.masters.map { map.replicas(of: $0) } == [1, 0, 0])

        func range(_ start: Int, _ end: Int, _ host: String, _ port: Int) -> RedisReply {
            .array([
                .integer(Int64(start)), .integer(Int64(end)),
                .array([.bulk(Array(host.utf8)), .integer(Int64(port)), .bulk(Array("id".utf8))]),
                .array([.bulk(Array(host.utf8)), .integer(Int64(port + 3)), .bulk(Array("id2".utf8))])
            ])
        }
        let slots = RedisReply.array([range(0, 8191, "", 7000), range(8192, 16383, "10.0.0.9", 7001)])
        let fromSlots = try RedisClusterSlotMap.fromSlots(slots, repliedBy: seed)
        // empty host: the replier's
        #expect(fromSlots.master(forSlot: 0) == RedisNodeAddress(host: "127.0.0.1", port: 7000))
        #expect(fromSlots.master(forSlot: 9000) == RedisNodeAddress(host: "10.0.0.9", port: 7001))
        #expect(fromSlots.masters.map { fromSlots.replicas(of: $0) } == [1, 1])
        #expect(throws: RedisError.self) { try RedisClusterSlotMap.fromShards(.integer(1), repliedBy: seed) }
    }

    @Test func redirectionsAreParsedAndMovedUpdatesTheMap() {
        #expect(
            RedisClusterRedirect(errorMessage: "MOVED 3999 10.0.0.2:7001", repliedBy: a) == .moved(slot: 3999, to: b))
        #expect(RedisClusterRedirect(errorMessage: "ASK 3999 10.0.0.3:7002", repliedBy: a) == .ask(slot: 3999, to: c))
        // An empty endpoint means the host of the node that replied.
        #expect(
            RedisClusterRedirect(errorMessage: "MOVED 1 :7009", repliedBy: a)
                == .moved(slot: 1, to: RedisNodeAddress(host: "10.0.0.1", port: 7009)))
        #expect(
            RedisClusterRedirect(errorMessage: "TRYAGAIN Multiple keys request during rehashing of slot", repliedBy: a)
                == .tryLater)
        #expect(RedisClusterRedirect(errorMessage: "CLUSTERDOWN The cluster is down", repliedBy: a) == .tryLater)
        #expect(RedisClusterRedirect(errorMessage: "WRONGTYPE Operation against a key", repliedBy: a) == nil)
        #expect(RedisClusterRedirect(errorMessage: "MOVED x 10.0.0.2:7001", repliedBy: a) == nil)

        var routing = RedisClusterRouting(map: threeMasters)
        #expect(!routing.needsRefresh)
        #expect(routing.redirect(in: [.status("OK"), .integer(1)], from: a) == nil)
        #expect(
            routing.redirect(in: [.status("OK"), .error("MOVED 3999 10.0.0.2:7001")], from: a)
                == .moved(slot: 3999, to: b))
        #expect(routing.node(for: .slot(3999)) == b)
        #expect(routing.node(for: .slot(3998)) == a)
        #expect(routing.needsRefresh)

        // ASK changes nothing: the slot stays where it is until the migration ends with a MOVED.
        var asked = RedisClusterRouting(map: threeMasters)
        #expect(asked.redirect(in: [.error("ASK 100 10.0.0.3:7002")], from: a) == .ask(slot: 100, to: c))
        #expect(asked.node(for: .slot(100)) == a)
        #expect(!asked.needsRefresh)
        #expect(asked.redirect(in: [.error("CLUSTERDOWN Hash slot not served")], from: a) == .tryLater)
        #expect(asked.needsRefresh)
    }

    @Test func pipelinesSplitIntoOneBatchPerNodeInTheCallersOrder() {
        let batches = RedisClusterRouting.batches([
            (0, b, false), (1, a, false), (2, b, false), (3, c, true), (4, a, false), (5, b, false)
        ])
        #expect(batches.map(\.node) == [b, a, c])
        #expect(batches.map(\.units) == [[0, 2, 5], [1, 4], [3]])
        #expect(batches[2].asking == [3])
        #expect(batches[0].asking.isEmpty)
        #expect(RedisClusterRouting.batches([]).isEmpty)
    }

    @Test func resendWaitsGrowToTheCapAndStayUnderIt() {
        #expect(RedisClusterRouting.resend.ceiling(attempt: 1) == .milliseconds(25))
        #expect(RedisClusterRouting.resend.ceiling(attempt: 4) == .milliseconds(200))
        #expect(RedisClusterRouting.resend.ceiling(attempt: 40) == .milliseconds(800))
        #expect(RedisClusterRouting.resend.delay(attempt: 40, fraction: 0.999) >= .milliseconds(400))
        #expect(RedisClusterRouting.resend.delay(attempt: 40) <= .milliseconds(800))
    }

    @Test func clusterURLsParseAndMalformedOnesNameTheProblem() throws {
        let config = try RedisConfiguration(url: "redis+cluster://:s3cret@127.0.0.1:7000,127.0.0.1:7001,[::1]:7002/0")
        #expect(
            config.cluster?.seeds == [
                RedisNodeAddress(host: "127.0.0.1", port: 7000), RedisNodeAddress(host: "127.0.0.1", port: 7001),
                RedisNodeAddress(host: "::1", port: 7002)
            ])
        #expect(config.password == "s3cret")
        #expect(config.database == 0)
        #expect(config.description == "redis+cluster://:***@127.0.0.1:7000,127.0.0.1:7001,[::1]:7002/0")
        #expect(try RedisConfiguration(url: "redis+cluster://h:1").cluster?.seeds.count == 1)
        // The single-node form is unchanged.
        let single = try RedisConfiguration(url: "redis://127.0.0.1:6380/2")
        #expect(single.cluster == nil && single.port == 6380 && single.database == 2)
        for (url, problem) in [
            ("redis+cluster://127.0.0.1:7000/3", "only database 0"),
            ("redis+cluster://127.0.0.1", "not host:port"),
            ("redis+cluster://127.0.0.1:7000,,127.0.0.1:7001/0", "not host:port"),
            ("redis+cluster://127.0.0.1:99999/0", "not host:port"),
            ("redis+cluster:///0", "not host:port")
        ] {
            do {
                _ = try RedisConfiguration(url: url)
                Issue.record("\(url) must be refused")
            } catch {
                #expect(error.code == .configuration)
                #expect(error.message.contains(problem), "\(url): \(error.message)")
            }
        }
    }

    /// A service's startup error names REDIS_URL and the problem.
    @Test func malformedClusterURLStopsAServiceNamingREDIS_URL() throws {
        let config = try Env(["REDIS_URL": "redis+cluster://127.0.0.1:7000,127.0.0.1:7001/0"]).redis()
        #expect(config.cluster?.seeds.count == 2)
        do {
            _ = try Env(["REDIS_URL": "redis+cluster://127.0.0.1:7000/1"]).redis()
            Issue.record("db 1 on a cluster must be refused")
        } catch {
            #expect(error.variable == "REDIS_URL")
            #expect(error.description.contains("REDIS_URL is malformed"))
            #expect(error.description.contains("only database 0"))
        }
    }

    /// A stage on a cluster with the unsharded names would write and acknowledge across slots: refused at start.
    @Test func stageShardsRefusesOneShardOnACluster() throws {
        let cluster = "redis+cluster://127.0.0.1:7000,127.0.0.1:7001/0"
        do {
            _ = try Env(["REDIS_URL": cluster]).stageShards()
            Issue.record("STREAM_SHARDS=1 on a cluster must be refused")
        } catch {
            #expect(error.variable == "STREAM_SHARDS")
            #expect(error.description.contains("redis+cluster://"))
        }
        #expect(try Env(["REDIS_URL": cluster, "STREAM_SHARDS": "2"]).stageShards() == 2)
        #expect(try Env(["REDIS_URL": "redis://127.0.0.1:6379/0"]).stageShards() == 1)
    }
}
