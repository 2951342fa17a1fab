import Foundation
import Logging
import Metrics
import TEModels
import TERedis
import TestSupport
import Testing

@testable import ServiceKit

/// The lease, fencing and latest-value scripts against the real Redis (`REDIS_URL`), on names of the test's own.
@Suite("ShardLeases scripts (real Redis)", .timeLimit(.minutes(1)))
struct ShardLeasesTests {
    let redis: RedisClient
    let input: String

    init() throws {
        redis = RedisClient(configuration: try TestEnv.redisConfiguration(), name: "leases-test")
        input = TestEnv.uniqueName("leases")
    }

    func leases(_ me: String, shards: Int = 4, ttlMs: Int = 60_000) -> ShardLeases {
        ShardLeases(stage: "stage", input: input, shards: shards, me: me, ttlMs: ttlMs)
    }

    func cleanUp(_ l: ShardLeases, streams: [String] = []) async {
        _ = try? await redis.del((0..<l.shards).map(l.key) + [l.membersKey] + streams)
        redis.close()
    }

    struct Held: Equatable {
        var held: Bool
        var token: Int64
        init(_ held: Bool, _ token: Int64) {
            self.held = held
            self.token = token
        }
    }

    func acquire(_ l: ShardLeases, _ k: Int, token: Int64 = 0, renew: Bool = false) async throws -> Held {
        let (held, token) = try ShardLeases.parseAcquire(try await redis.send(l.acquire(k, token: token, renew: renew)))
        return Held(held, token)
    }

    @Test func oneHolderAtATimeWithATokenThatOnlyGrows() async throws {
        let a = leases("a")
        let b = leases("b")
        #expect(a.key(3).hasSuffix(":{3}"))
        #expect(try await acquire(a, 3) == Held(true, 1))
        #expect(try await acquire(b, 3) == Held(false, 1))
        #expect(try await acquire(b, 3, token: 1, renew: true) == Held(false, 1))
        #expect(try await acquire(a, 3, token: 1, renew: true) == Held(true, 1))
        let lease = try ShardLeases.parseLease(try await redis.send(a.read(3)))
        #expect(lease.holder == "a" && lease.token == 1 && lease.live)
        // Released: free, and the next holder gets the next token.
        #expect(try await redis.send(b.release(3, token: 1)).int == 0)
        #expect(try await redis.send(a.release(3, token: 1)).int == 1)
        #expect(
            try ShardLeases.parseLease(try await redis.send(a.read(3))) == .init(holder: nil, token: 1, live: false))
        #expect(try await acquire(b, 3) == Held(true, 2))
        // A never-held shard reads as free.
        #expect(try ShardLeases.parseLease(try await redis.send(a.read(0))) == .free)
        await cleanUp(a)
    }

    @Test func theFencedCommitWritesOnlyUnderTheLiveLeaseAndRefusesALateWriter() async throws {
        let a = leases("a", ttlMs: 300)
        let b = leases("b", ttlMs: 60_000)
        let input = StreamKey.sharded(self.input + ":in", shard: 1, of: 4)
        let output = StreamKey.sharded(self.input + ":out", shard: 1, of: 4)
        try await redis.xgroupCreate(stream: input, group: "g", startID: "0")
        let id = try await redis.xadd(input, fields: [("n", "1")])
        _ = try await redis.xreadgroup(group: "g", consumer: "a", streams: [(input, ">")], count: 10, block: nil)
        let step = [RedisCommand.xadd(output, maxLen: nil, fields: [("n", "1")]), .xack(input, group: "g", ids: [id])]

        let tokenA = try await acquire(a, 1).token
        #expect(
            try ShardLeases.parseCommit(try await redis.send(a.commit(1, token: tokenA, commands: [step[0]])))
                == .written(failedCommands: 0))
        // A wrong-type command inside the step is counted, as inside MULTI/EXEC.
        let wrongType = RedisCommand("HSET", output, "f", "v")
        #expect(
            try ShardLeases.parseCommit(try await redis.send(a.commit(1, token: tokenA, commands: [wrongType])))
                == .written(failedCommands: 1))
        // Paused past its lease, then taken by b: a's step is refused and nothing of it is written.
        let taken = try await TestEnv.eventually(timeout: .seconds(10)) { try await acquire(b, 1).held }
        #expect(taken)
        let late = try ShardLeases.parseCommit(try await redis.send(a.commit(1, token: tokenA, commands: step)))
        #expect(late == .fenced(holder: "b", token: tokenA + 1))
        #expect(try await redis.xlen(output) == 1)
        #expect(try await redis.xpending(input, group: "g").count == 1)
        // a's renewal does not take it back either.
        #expect(try await acquire(a, 1, token: tokenA, renew: true).held == false)
        #expect(
            try ShardLeases.parseCommit(try await redis.send(b.commit(1, token: tokenA + 1, commands: step)))
                == .written(failedCommands: 0))
        #expect(try await redis.xlen(output) == 2)
        #expect(try await redis.xpending(input, group: "g").count == 0)
        await cleanUp(a, streams: [input, output])
    }

    func read(_ l: ShardLeases, _ k: Int, token: Int64, _ stream: String, count: Int = 10, cursor: String = ">")
        async throws -> ShardLeases.ReadOutcome
    {
        try ShardLeases.parseReadGroup(
            try await redis.send(
                l.readGroup(k, token: token, stream: stream, group: "g", consumer: l.me, count: count, cursor: cursor)))
    }

    func claim(_ l: ShardLeases, _ k: Int, token: Int64, _ stream: String) async throws -> ShardLeases.ClaimOutcome {
        try ShardLeases.parseClaim(
            try await redis.send(l.claim(k, token: token, stream: stream, group: "g", consumer: l.me, minIdleMs: 0)))
    }

    /// The fenced read and claim: what XREADGROUP gives the holder of the live lease, nothing (no entry
    /// delivered, none claimed) to a holder whose lease expired or whose token is stale.
    @Test func theFencedReadAndClaimDeliverOnlyUnderTheLiveLease() async throws {
        let a = leases("a", ttlMs: 300)
        let b = leases("b")
        let stream = StreamKey.sharded(input + ":in", shard: 1, of: 4)
        try await redis.xgroupCreate(stream: stream, group: "g", startID: "0")
        for n in 1...3 { try await redis.xadd(stream, fields: [("n", "\(n)")]) }
        let all = try await redis.xrange(stream)
        let tokenA = try await acquire(a, 1).token

        // New entries, COUNT respected, then this consumer's pending ones from a cursor: XREADGROUP's entries.
        #expect(try await read(a, 1, token: tokenA, stream, count: 2) == .entries(Array(all[0..<2])))
        #expect(try await read(a, 1, token: tokenA, stream) == .entries([all[2]]))
        #expect(try await read(a, 1, token: tokenA, stream, cursor: all[0].id) == .entries(Array(all[1...])))
        // Caught up: no entry, and the id to wait after (a plain XREAD from it delivers nothing).
        #expect(try await read(a, 1, token: tokenA, stream) == .caughtUp(last: all[2].id))
        // A pending entry deleted meanwhile comes back as XREADGROUP reports it: id without fields.
        _ = try await redis.send("XDEL", stream, all[1].id)
        #expect(
            try await read(a, 1, token: tokenA, stream, cursor: "0")
                == .entries([all[0], StreamEntry(id: all[1].id, fields: [], isDeleted: true), all[2]]))
        #expect(try await claim(a, 1, token: tokenA, stream) == .claimed(0))
        let fresh = try await redis.xadd(stream, fields: [("n", "4")])

        // Expired (nobody took it): refused, nothing delivered.
        let expired = try await TestEnv.eventually(timeout: .seconds(10)) {
            !(try ShardLeases.parseLease(try await redis.send(a.read(1))).live)
        }
        #expect(expired)
        #expect(try await read(a, 1, token: tokenA, stream) == .fenced(holder: "a", token: tokenA))
        // Taken by b: a's read and claim are refused; the new entry was delivered to nobody.
        #expect(try await acquire(b, 1) == Held(true, tokenA + 1))
        #expect(try await read(a, 1, token: tokenA, stream) == .fenced(holder: "b", token: tokenA + 1))
        #expect(try await claim(a, 1, token: tokenA, stream) == .fenced(holder: "b", token: tokenA + 1))
        #expect(try await redis.xpending(stream, group: "g").consumers == ["a": 3])
        // b claims what a left pending (first; the deleted entry leaves the pending list, as XCLAIM does on
        // Redis 7), then reads the new entry.
        #expect(try await claim(b, 1, token: tokenA + 1, stream) == .claimed(2))
        #expect(try await redis.xpending(stream, group: "g").consumers == ["b": 2])
        #expect(
            try await read(b, 1, token: tokenA + 1, stream) == .entries([StreamEntry(id: fresh, fields: [("n", "4")])]))
        // b restarted under its name: the old run's token is stale, refused.
        #expect(try await acquire(b, 1) == Held(true, tokenA + 2))
        #expect(try await read(b, 1, token: tokenA + 1, stream, cursor: "0") == .fenced(holder: "b", token: tokenA + 2))
        #expect(try await claim(b, 1, token: tokenA + 1, stream) == .fenced(holder: "b", token: tokenA + 2))
        #expect(try await redis.xpending(stream, group: "g").count == 3)
        await cleanUp(a, streams: [stream])
    }

    /// A shard worker whose own clock still trusts its lease — as one paused between that check and its read,
    /// then woken — while Redis gave the lease to b: its claim and its read are refused by the store, no entry
    /// is delivered to it (none pending, none handled, nothing written) and the worker stops by itself.
    @Test func aWorkerWhoseLeaseMovedTakesNoEntryThoughItsClockTrustsTheLease() async throws {
        let a = leases("a", ttlMs: 300)
        let b = leases("b")
        let stream = StreamKey.sharded(input + ":in", shard: 2, of: 4)
        let output = StreamKey.sharded(input + ":out", shard: 2, of: 4)
        try await redis.xgroupCreate(stream: stream, group: "g", startID: "0")
        for n in 1...3 { try await redis.xadd(stream, fields: StreamFieldEncoder.encode(Job(n: n, tag: "ok"))) }
        let tokenA = try await acquire(a, 2).token
        let expired = try await TestEnv.eventually(timeout: .seconds(10)) {
            !(try ShardLeases.parseLease(try await redis.send(a.read(2))).live)
        }
        #expect(expired)
        #expect(try await acquire(b, 2) == Held(true, tokenA + 1))

        let dims = [("stage", TestEnv.uniqueName("fenced-worker"))]
        let fence = ShardFence(
            shard: 2, token: tokenA, leases: a, validUntil: .now + .seconds(60),
            fenced: Counter(label: "te_stream_fenced_writes_total", dimensions: dims),
            refusedReads: Counter(label: "te_stream_fenced_reads_total", dimensions: dims))
        let configuration = StreamWorkerConfiguration(
            consumerName: "a", batchSize: 10, block: .milliseconds(100), groupStartID: "0",
            deadLetterStream: input + ":dlq")
        let log = StageLog()
        let server = try TestEnv.redisConfiguration()
        let reader = RedisClient(configuration: server, name: "fenced-reader")
        let writer = RedisClient(configuration: server, name: "fenced-writer")
        defer {
            reader.close()
            writer.close()
        }
        var loop = WorkerLoop(
            stage: CopyStage(stage: "g", inputStream: stream, output: output, log: log), reader: reader,
            writer: writer, configuration: configuration, fence: fence, logger: Logger(label: "fenced-worker"))
        try await loop.run()
        // The read itself, as the worker sends it (new entries, with its wait): refused too.
        let read = await WorkerLoop<CopyStage>.fencedRead(
            .init(cursor: ">", count: 10, block: .milliseconds(100)), reader: reader, group: "g", consumer: "a",
            stream: stream, fence: fence)
        guard case .fenced(let reason) = read else {
            Issue.record("the read was not refused: \(read)")
            return
        }
        #expect(reason.hasPrefix("read refused: the lease of shard 2 is b's under token \(tokenA + 1)"))
        #expect(log.handled.isEmpty)
        #expect(try await redis.xpending(stream, group: "g").count == 0)
        #expect(try await redis.xlen(output) == 0)
        await cleanUp(a, streams: [stream, output])
    }

    /// On the shared Redis Cluster (`REDIS_CLUSTER_URL`): the lease, the shard's input and output share shard
    /// k's hash tag, so the fenced step is one script on one node; a late holder is refused there too.
    @Test func onAClusterTheFencedStepIsOneSlot() async throws {
        let url = try #require(
            ProcessInfo.processInfo.environment["REDIS_CLUSTER_URL"], "REDIS_CLUSTER_URL is not set (source .dev/env)")
        let cluster = RedisClient(configuration: try RedisConfiguration(url: url), name: "leases-cluster")
        defer { cluster.close() }
        let a = leases("a", ttlMs: 300)
        let b = leases("b")
        let output = StreamKey.sharded(input + ":out", shard: 3, of: 4)
        let write = RedisCommand.xadd(output, maxLen: nil, fields: [("n", "1")])
        let tokenA = try ShardLeases.parseAcquire(try await cluster.send(a.acquire(3))).token
        #expect(
            try ShardLeases.parseCommit(try await cluster.send(a.commit(3, token: tokenA, commands: [write])))
                == .written(failedCommands: 0))
        let taken = try await TestEnv.eventually(timeout: .seconds(10)) {
            try ShardLeases.parseAcquire(try await cluster.send(b.acquire(3))).held
        }
        #expect(taken)
        #expect(
            try ShardLeases.parseCommit(try await cluster.send(a.commit(3, token: tokenA, commands: [write])))
                == .fenced(holder: "b", token: tokenA + 1))
        #expect(try await cluster.xlen(output) == 1)
        // The fenced read runs in the lease's slot too: refused for a, b's delivers.
        try await cluster.xgroupCreate(stream: output, group: "g", startID: "0")
        let readA = a.readGroup(3, token: tokenA, stream: output, group: "g", consumer: "a", count: 10, cursor: ">")
        #expect(
            try ShardLeases.parseReadGroup(try await cluster.send(readA)) == .fenced(holder: "b", token: tokenA + 1))
        let readB = b.readGroup(
            3, token: tokenA + 1, stream: output, group: "g", consumer: "b", count: 10, cursor: ">")
        #expect(
            try ShardLeases.parseReadGroup(try await cluster.send(readB)) == .entries(try await cluster.xrange(output)))
        #expect(
            try ShardLeases.parseClaim(
                try await cluster.send(
                    a.claim(3, token: tokenA, stream: output, group: "g", consumer: "a", minIdleMs: 0)))
                == .fenced(holder: "b", token: tokenA + 1))
        // The heartbeat and the latest-value writes are single-key scripts, routed by their key.
        #expect(try await cluster.send(a.heartbeat()).array?.compactMap(\.string) == ["a"])
        let latest = TestEnv.uniqueName("online")
        #expect(
            try await cluster.send(ShardLeases.latest(latest, tsNs: 2, ttlSeconds: 60, fields: [("ts_ns", "2")])).int
                == 1)
        #expect(
            try await cluster.send(ShardLeases.latest(latest, tsNs: 1, ttlSeconds: 60, fields: [("ts_ns", "1")])).int
                == 0)
        _ = try await cluster.del([a.key(3)])
        _ = try await cluster.del([output])
        _ = try await cluster.del([a.membersKey])
        _ = try await cluster.del([latest])
        redis.close()
    }

    @Test func anExpiredLeaseNobodyTookRefusesWritesUntilRenewed() async throws {
        let a = leases("a", ttlMs: 200)
        let output = StreamKey.sharded(input + ":out", shard: 2, of: 4)
        let token = try await acquire(a, 2).token
        let expired = try await TestEnv.eventually(timeout: .seconds(10)) {
            !(try ShardLeases.parseLease(try await redis.send(a.read(2))).live)
        }
        #expect(expired)
        let write = RedisCommand.xadd(output, maxLen: nil, fields: [("n", "1")])
        #expect(
            try ShardLeases.parseCommit(try await redis.send(a.commit(2, token: token, commands: [write])))
                == .fenced(holder: "a", token: token))
        #expect(try await redis.xlen(output) == 0)
        // Nobody else wrote meanwhile: the same holder may renew under the same token.
        #expect(try await acquire(a, 2, token: token, renew: true) == Held(true, token))
        await cleanUp(a, streams: [output])
    }

    @Test func aRestartUnderTheSameNameTakesItsLeaseWithANewTokenFencingTheOldRun() async throws {
        let a = leases("a")
        let old = try await acquire(a, 0).token
        let new = try await acquire(a, 0)
        #expect(new == Held(true, old + 1))
        let output = StreamKey.sharded(input + ":out", shard: 0, of: 4)
        let write = RedisCommand.xadd(output, maxLen: nil, fields: [("n", "1")])
        #expect(
            try ShardLeases.parseCommit(try await redis.send(a.commit(0, token: old, commands: [write])))
                == .fenced(holder: "a", token: old + 1))
        await cleanUp(a, streams: [output])
    }

    @Test func heartbeatsListTheLiveReplicasAndALeavingOneIsGoneAtOnce() async throws {
        let a = leases("a")
        let b = leases("b")
        #expect(try await redis.send(a.heartbeat()).array?.compactMap(\.string) == ["a"])
        #expect(Set(try await redis.send(b.heartbeat()).array?.compactMap(\.string) ?? []) == ["a", "b"])
        #expect(try await redis.send(a.heartbeat(leaving: true)).array?.compactMap(\.string) == ["b"])
        await cleanUp(a)
    }

    @Test func theLatestValueNeverGoesBackInTime() async throws {
        let key = TestEnv.uniqueName("online")
        func write(_ tsNs: Int64, _ tag: String) async throws -> Int64? {
            try await redis.send(
                ShardLeases.latest(key, tsNs: tsNs, ttlSeconds: 60, fields: [("ts_ns", String(tsNs)), ("tag", tag)])
            ).int
        }
        #expect(try await write(1_723_161_254_087_891_268, "first") == 1)
        // 1 ns older: refused (a double could not tell these apart).
        #expect(try await write(1_723_161_254_087_891_267, "older") == 0)
        #expect(try await write(999_999_999, "much older, shorter") == 0)
        #expect(try await write(1_723_161_254_087_891_269, "newer") == 1)
        #expect(try await redis.hgetall(key)["tag"] == "newer")
        let ttl = try await redis.ttl(key)
        #expect(ttl != nil && ttl! > 0 && ttl! <= 60)
        _ = try await redis.del([key])
        redis.close()
    }
}
