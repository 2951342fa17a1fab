import FeatureEngine
import Foundation
import ServiceKit
import TEModels
import TERedis
import TestSupport
import Testing

/// Replicas of the real feature-pipeline binary on `STREAM_SHARDS` = 4 (DESIGN.md "Shards"), each shard
/// owned by one replica through its lease (docs/sharding.md), against `te features` offline on three
/// recordings: exact, each symbol only in its own shard, nothing twice, also across a SIGKILLed and a
/// SIGSTOPped replica. Each run has a redis-server of its own with this checkout's ACL users.
@Suite("feature-pipeline replicas on shards", .serialized)
struct ShardedPipelineTests {
    static let shards = 4
    static let recordings = [
        "binance/usdm_btcusdt_20240718.gz", "binance/usdm_ethusdt_20240718.gz", "binance/cm_ethusd_perp_20240808.gz"
    ]
    static let leaseMs = 2000

    /// The recordings' ticks (as ingest writes them) and the offline features of each symbol.
    struct Expected {
        /// All recordings' ticks in receive-time order, as ingest would write a live feed of the three.
        var ticks: [Tick] = []
        var rows: [String: [FeatureCSV.Row]] = [:]
        var total: Int { rows.values.map(\.count).reduce(0, +) }
    }

    static func expected(_ recordings: [String] = recordings) async throws -> Expected {
        var e = Expected()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            TestEnv.uniqueName("sharded").replacingOccurrences(of: ":", with: "-"))
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for (i, relative) in recordings.enumerated() {
            let recording = try RecordedData.file(relative)
            let ticks = try NormalizedRecording.ticks(recording)
            e.ticks += ticks
            let csvPath = dir.appendingPathComponent("\(i).csv").path
            let offline = try ChildProcess.built("te", arguments: ["features", recording, "--output", csvPath])
            #expect(try await offline.waitForExit(timeout: .seconds(120)) == 0, "\(offline.output())")
            let csv = try String(contentsOfFile: csvPath, encoding: .utf8)
            for row in csv.split(separator: "\n").dropFirst().compactMap({ FeatureCSV.parse($0) }) {
                e.rows[row.symbol, default: []].append(row)
            }
        }
        // Stable: a recording's own order is kept among equal receive times.
        e.ticks = e.ticks.enumerated().sorted { ($0.element.tsNs, $0.offset) < ($1.element.tsNs, $1.offset) }.map(
            \.element)
        return e
    }

    /// A private server, the replicas' environment, and the input written as ingest would.
    struct Run {
        let server: PrivateRedisServer
        let redis: RedisClient

        init() async throws {
            server = try await PrivateRedisServer(aclFile: try await StoreUsers.renderStrictACL())
            redis = RedisClient(configuration: try RedisConfiguration(url: server.url), name: "sharded")
        }

        func replica(_ name: String) throws -> ChildProcess {
            try ChildProcess.built(
                "feature-pipeline",
                environment: [
                    "REDIS_URL": server.url, "CONSUMER_NAME": name,
                    "STREAM_SHARDS": String(ShardedPipelineTests.shards),
                    "SHARD_LEASE_MS": String(ShardedPipelineTests.leaseMs), "STREAM_BATCH_SIZE": "200",
                    "STREAM_BLOCK_MS": "100", "FEATURE_TTL_SEC": "600", "METRICS_PORT": String(try TestEnv.freePort()),
                    "LOG_LEVEL": "info"
                ])
        }

        /// Part `part` of `parts` of the ticks, each to its symbol's shard.
        func write(_ ticks: [Tick], part: Int, of parts: Int) async throws {
            let size = (ticks.count + parts - 1) / parts
            var commands: [RedisCommand] = []
            for tick in ticks.dropFirst(part * size).prefix(size) {
                commands.append(
                    try .xadd(
                        StreamKey.ticks(for: tick.symbol, shards: ShardedPipelineTests.shards), maxLen: nil,
                        message: tick))
                if commands.count == 1000 {
                    for reply in try await redis.pipeline(commands) { _ = try reply.throwingError() }
                    commands = []
                }
            }
            for reply in try await redis.pipeline(commands) { _ = try reply.throwingError() }
        }

        /// Per shard: length, the group's pending count and last delivered id, the last id (for a failure message).
        func shardStates() async throws -> String {
            var lines: [String] = []
            for k in 0..<ShardedPipelineTests.shards {
                let stream = StreamKey.sharded(StreamKey.ticks, shard: k, of: ShardedPipelineTests.shards)
                guard try await redis.send("EXISTS", stream).int == 1 else { continue }
                let info = try await redis.xinfoGroups(stream).first { $0.name == "feature-pipeline" }
                let last = try await redis.xrevrange(stream, count: 1).first?.id
                lines.append(
                    "\(stream): \(try await redis.xlen(stream)) entries, last \(last ?? "-"), pending \(info?.pending ?? -1), "
                        + "delivered \(info?.lastDeliveredID ?? "-"), lease \(try await redis.hgetall(StreamKey.sharded("te:lease:feature-pipeline:te:ticks", shard: k, of: ShardedPipelineTests.shards)))"
                )
            }
            return lines.joined(separator: "\n")
        }

        func owner(of k: Int) async throws -> String? {
            let key = StreamKey.sharded("te:lease:feature-pipeline:te:ticks", shard: k, of: ShardedPipelineTests.shards)
            return try await redis.send("HGET", key, "holder").string
        }

        /// Every shard's input written in full has been read and acknowledged.
        func drained(_ expectedTicks: Int) async throws -> Bool {
            var total = 0
            for k in 0..<ShardedPipelineTests.shards {
                let stream = StreamKey.sharded(StreamKey.ticks, shard: k, of: ShardedPipelineTests.shards)
                guard try await redis.send("EXISTS", stream).int == 1 else { continue }
                total += try await redis.xlen(stream)
                // A shard no symbol maps to: created empty by the group, nothing to drain.
                guard let last = try await redis.xrevrange(stream, count: 1).first?.id else { continue }
                guard let info = try await redis.xinfoGroups(stream).first(where: { $0.name == "feature-pipeline" }),
                    info.pending == 0, info.lastDeliveredID == last
                else { return false }
            }
            return total == expectedTicks
        }

        /// The union of the shards equals `te features`, symbol by symbol, bit for bit; each symbol only in
        /// its own shard; nothing twice.
        func verify(_ expected: Expected) async throws {
            try await ShardedPipelineTests.verifyFeatures(on: redis, expected, shards: ShardedPipelineTests.shards)
        }

        func close() async {
            redis.close()
            try? await server.kill()
        }
    }

    /// The union of `te:features:{k}` equals `te features`, symbol by symbol, bit for bit; each symbol only in
    /// its own shard; nothing twice; `te:online:SYMBOL` holds each symbol's last snapshot.
    static func verifyFeatures(on redis: RedisClient, _ expected: Expected, shards: Int) async throws {
        var seen = 0
        for k in 0..<shards {
            let snapshots = try await redis.pagedMessages(
                FeatureSnapshot.self, in: StreamKey.sharded(StreamKey.features, shard: k, of: shards))
            seen += snapshots.count
            var bySymbol: [String: [FeatureSnapshot]] = [:]
            for s in snapshots { bySymbol[s.symbol, default: []].append(s) }
            for (symbol, streamed) in bySymbol {
                #expect(StreamKey.shard(of: symbol, shards: shards) == k, "\(symbol) in shard \(k)")
                let rows = expected.rows[symbol] ?? []
                #expect(
                    streamed.count == rows.count, "\(symbol): \(streamed.count) streamed, \(rows.count) offline")
                var mismatches = 0
                for (i, (s, row)) in zip(streamed, rows).enumerated() {
                    let same =
                        FeatureCSV.Row(s) == row
                        && s.features.values.map(\.bitPattern) == row.features.map(\.bitPattern)
                        && s.tradeVolume.bitPattern == row.tradeVolume.bitPattern
                    if !same {
                        mismatches += 1
                        if mismatches <= 3 { Issue.record("\(symbol) row \(i): streamed \(s) vs offline \(row)") }
                    }
                }
                #expect(mismatches == 0, "\(symbol)")
            }
        }
        #expect(seen == expected.total)
        // The online store holds each symbol's latest snapshot (never an older one).
        for (symbol, rows) in expected.rows {
            let online = try await redis.hgetall(StreamKey.online(symbol))
            #expect(online["ts_ns"] == rows.last.map { String($0.tsNs) }, "\(symbol)")
        }
    }

    static func total(_ ticks: [Tick]) -> Int { ticks.count }

    @Test("two and three replicas: the union of te:features:{k} equals te features", .timeLimit(.minutes(6)))
    func replicasEqualOffline() async throws {
        let expected = try await Self.expected()
        #expect(expected.rows.count == 3 && expected.total > 10_000)
        for replicas in [2, 3] {
            let run = try await Run()
            let processes = try (0..<replicas).map { try run.replica("fp-\($0)") }
            for part in 0..<4 { try await run.write(expected.ticks, part: part, of: 4) }
            let done = try await TestEnv.eventually(timeout: .seconds(180), every: .milliseconds(200)) {
                try await run.drained(Self.total(expected.ticks))
            }
            let states = done ? "" : try await run.shardStates()
            #expect(done, "\(states)\n\(processes.map { $0.output().suffix(1500) })")
            try await run.verify(expected)
            // Every shard has one owner among the replicas.
            var owners: Set<String> = []
            for k in 0..<Self.shards { if let o = try await run.owner(of: k) { owners.insert(o) } }
            #expect(owners.isSubset(of: Set((0..<replicas).map { "fp-\($0)" })) && !owners.isEmpty)
            for p in processes { p.terminate() }
            for p in processes { #expect(try await p.waitForExit(timeout: .seconds(20)) == 0) }
            await run.close()
        }
    }

    @Test(
        "three replicas, one SIGKILLed and one SIGSTOPped past its lease: still exact, late writes refused",
        .timeLimit(.minutes(6)))
    func killedAndPausedReplicas() async throws {
        let expected = try await Self.expected()
        let run = try await Run()
        var processes: [String: ChildProcess] = [:]
        for i in 0..<3 { processes["fp-\(i)"] = try run.replica("fp-\(i)") }
        // The busiest shards (0 and 2 hold the three symbols) each have an owner.
        let busy = Set(expected.rows.keys.map { StreamKey.shard(of: $0, shards: Self.shards) }).sorted()
        let owned = try await TestEnv.eventually(timeout: .seconds(30)) {
            for k in busy where try await run.owner(of: k) == nil { return false }
            return true
        }
        #expect(owned)
        try await run.write(expected.ticks, part: 0, of: 6)
        try await run.write(expected.ticks, part: 1, of: 6)

        // SIGKILL the owner of the first busy shard mid-run.
        let killedName = try #require(try await run.owner(of: busy[0]))
        let killed = try #require(processes[killedName])
        killed.kill9()
        let killedAt = ContinuousClock.now
        _ = try await killed.waitForExit()
        try await run.write(expected.ticks, part: 2, of: 6)
        let moved = try await TestEnv.eventually(timeout: .seconds(30)) {
            let o = try await run.owner(of: busy[0])
            return o != nil && o != killedName
        }
        #expect(moved, "shard \(busy[0]) stayed with the killed replica")
        // Reported, not asserted (timings depend on the machine's load).
        print(
            "sharded feature-pipeline: shard moved \(ContinuousClock.now - killedAt) after SIGKILL (lease \(Self.leaseMs) ms)"
        )

        // SIGSTOP the owner of the last busy shard while ticks flow, past its lease; resume it once its shards moved.
        let pausedName = try #require(try await run.owner(of: busy[busy.count - 1]))
        let paused = try #require(processes[pausedName])
        let writing = Task { try await run.write(expected.ticks, part: 3, of: 6) }
        paused.signal(SIGSTOP)
        let pausedAt = ContinuousClock.now
        try await writing.value
        let taken = try await TestEnv.eventually(timeout: .seconds(30)) {
            let o = try await run.owner(of: busy[busy.count - 1])
            return o != nil && o != pausedName
        }
        #expect(taken, "shard \(busy[busy.count - 1]) stayed with the paused replica")
        print(
            "sharded feature-pipeline: shard moved \(ContinuousClock.now - pausedAt) after SIGSTOP (lease \(Self.leaseMs) ms)"
        )
        try await run.write(expected.ticks, part: 4, of: 6)
        paused.signal(SIGCONT)
        try await run.write(expected.ticks, part: 5, of: 6)

        let done = try await TestEnv.eventually(timeout: .seconds(180), every: .milliseconds(200)) {
            try await run.drained(Self.total(expected.ticks))
        }
        let live = processes.filter { $0.key != killedName }.map(\.value)
        let states = done ? "" : try await run.shardStates()
        #expect(done, "\(states)\n\(live.map { $0.output().suffix(1500) })")
        try await run.verify(expected)

        // The resumed replica learnt it had lost its shards; what it still tried to write was refused by Redis.
        let lost = await TestEnv.eventually(timeout: .seconds(20)) { paused.output().contains("shard lost") }
        #expect(lost, "\(paused.output().suffix(3000))")
        let refused = paused.output().components(separatedBy: "refused by the store").count - 1
        print("sharded feature-pipeline: the resumed replica had \(refused) late read(s)/write(s) refused")
        for p in live { p.terminate() }
        for p in live { #expect(try await p.waitForExit(timeout: .seconds(20)) == 0) }
        await run.close()
    }
}
