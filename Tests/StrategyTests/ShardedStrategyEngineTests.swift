import Foundation
import TEModels
import TERedis
import TestSupport
import Testing

/// strategy-engine on `STREAM_SHARDS` = 4: two replicas (each shard owned by one, docs/sharding.md) give
/// every symbol the same signals, in the same order, as one replica. Real binaries, a redis-server per run
/// with this checkout's ACL users.
@Suite("strategy-engine replicas on shards", .timeLimit(.minutes(3)))
struct ShardedStrategyEngineTests {
    static let shards = 4
    static let symbols = [
        "BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "BTCUSDT-PERP", "ETHUSD_PERP", "ADAUSDT", "DOGEUSDT"
    ]

    /// 400 snapshots per symbol, their features from a fixed-seed generator, in time order per symbol.
    static func snapshots() -> [FeatureSnapshot] {
        var state: UInt64 = 0x5DEE_CE66
        func next() -> Double {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Double(state >> 11) / Double(1 << 53)
        }
        var out: [FeatureSnapshot] = []
        for i in 0..<400 {
            for (j, symbol) in symbols.enumerated() {
                out.append(
                    snapshot(
                        symbol: symbol, tsNs: 1_723_161_254_000_000_000 + Int64(i) * 10_000_000 + Int64(j), warm: i > 2,
                        tradeVolume: next() * 60, ofiNorm: next() * 200 - 100, midReturnBps: next() * 40 - 20,
                        tickRate: next() * 300))
            }
        }
        return out
    }

    /// Runs `replicas` strategy-engines over the snapshots on a server of its own; the signals per symbol.
    static func run(replicas: Int, file: String, snapshots: [FeatureSnapshot]) async throws -> [String: [Signal]] {
        let server = try await PrivateRedisServer(aclFile: try await StoreUsers.renderStrictACL())
        let redis = RedisClient(configuration: try RedisConfiguration(url: server.url), name: "sharded-strategy")
        defer {
            redis.close()
            Task { try? await server.kill() }
        }
        let services = try (0..<replicas).map { i in
            try RunningService.start(
                "strategy-engine",
                environment: [
                    "STRATEGIES_FILE": file, "CONSUMER_NAME": "se-\(i)", "STREAM_SHARDS": String(shards),
                    "SHARD_LEASE_MS": "2000", "STREAM_BATCH_SIZE": "50"
                ], redisURL: server.url)
        }
        // Every replica owns shards (balanced: ceil(4 / replicas) at most each) before the input comes.
        let balanced = try await TestEnv.eventually(timeout: .seconds(30), every: .milliseconds(100)) {
            var holders: [String: Int] = [:]
            for k in 0..<shards {
                let key = StreamKey.sharded("te:lease:strategy-engine:\(StreamKey.features)", shard: k, of: shards)
                guard let holder = try await redis.send("HGET", key, "holder").string, !holder.isEmpty else {
                    return false
                }
                holders[holder, default: 0] += 1
            }
            return holders.count == replicas && holders.values.allSatisfy { $0 <= (shards + replicas - 1) / replicas }
        }
        #expect(balanced, "\(services.map { $0.process.output().suffix(1500) })")
        // Written while the replicas run, in slices, each snapshot to its symbol's shard.
        for slice in stride(from: 0, to: snapshots.count, by: 400) {
            let commands = try snapshots[slice..<min(slice + 400, snapshots.count)].map {
                try RedisCommand.xadd(StreamKey.features(for: $0.symbol, shards: shards), maxLen: nil, message: $0)
            }
            _ = try await redis.pipeline(commands)
        }
        let inputs = StreamKey.allShards(StreamKey.features, shards: shards)
        let done = try await TestEnv.eventually(timeout: .seconds(60), every: .milliseconds(100)) {
            for stream in inputs where try await redis.send("EXISTS", stream).int == 1 {
                guard try await redis.drained(stream, group: "strategy-engine") else { return false }
            }
            return true
        }
        #expect(done, "\(services.map { $0.process.output().suffix(1500) })")
        var bySymbol: [String: [Signal]] = [:]
        for (k, stream) in StreamKey.allShards(StreamKey.signals, shards: shards).enumerated() {
            for signal in try await redis.messages(Signal.self, in: stream) {
                #expect(StreamKey.shard(of: signal.symbol, shards: shards) == k, "\(signal.symbol) in shard \(k)")
                bySymbol[signal.symbol, default: []].append(signal)
            }
        }
        for service in services { #expect(try await service.stop() == 0) }
        return bySymbol
    }

    @Test func twoReplicasGiveEachSymbolOneReplicasSignalsInOrder() async throws {
        let file = try temporaryFile(
            """
            {"strategies": [
              {"name": "rise", "kind": "rapid_rise", "min_change_bps": 8, "min_volume": 20},
              {"name": "ofi", "kind": "ofi_breakout", "k": 50, "min_tick_rate": 100}
            ]}
            """)
        let snapshots = Self.snapshots()
        let one = try await Self.run(replicas: 1, file: file, snapshots: snapshots)
        let two = try await Self.run(replicas: 2, file: file, snapshots: snapshots)
        #expect(Set(one.keys) == Set(Self.symbols))
        #expect(Set(Self.symbols.map { StreamKey.shard(of: $0, shards: Self.shards) }).count > 1)
        for symbol in Self.symbols {
            let a = one[symbol] ?? []
            #expect(a.count > 50, "\(symbol): \(a.count) signals")
            #expect(two[symbol] == a, "\(symbol)")
            // In snapshot order, each snapshot's signals once.
            #expect(zip(a, a.dropFirst()).allSatisfy { $0.tsNs <= $1.tsNs }, "\(symbol)")
            #expect(Set(a.map(\.id)).count == a.count, "\(symbol)")
        }
    }
}
