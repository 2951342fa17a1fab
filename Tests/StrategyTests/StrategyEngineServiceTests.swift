import Foundation
import TEModels
import TERedis
import TestSupport
import Testing

@testable import Strategies

@Suite("strategy-engine service (real binary, real Redis)", .timeLimit(.minutes(2)))
struct StrategyEngineServiceTests {
    @Test func snapshotsBecomeSignalsWithDeterministicIDs() async throws {
        // A server of its own with this checkout's ACL users (the shard lease scripts are in the grant), so
        // the real stream names.
        let server = try await PrivateRedisServer(aclFile: try await StoreUsers.renderStrictACL())
        let redis = RedisClient(configuration: try RedisConfiguration(url: server.url), name: "test")
        defer {
            redis.close()
            Task { try? await server.kill() }
        }
        let streams = (features: StreamKey.features, signals: StreamKey.signals, consumer: "strategy-engine-test")
        let file = try temporaryFile(
            """
            {"strategies": [
              {"name": "rise", "kind": "rapid_rise", "min_change_bps": 8, "min_volume": 20},
              {"name": "ofi", "kind": "ofi_breakout", "k": 50, "min_tick_rate": 100}
            ]}
            """)
        let snapshots = [
            snapshot(tsNs: 1, warm: false, tradeVolume: 50, ofiNorm: 80, midReturnBps: 20, tickRate: 200),  // cold
            snapshot(tsNs: 2, tradeVolume: 50, midReturnBps: 12, tickRate: 10),  // rise only, 0.75
            snapshot(tsNs: 3, tradeVolume: 50, ofiNorm: -75, midReturnBps: 7.9, tickRate: 150),  // ofi sell 0.75
            snapshot(tsNs: 4, tradeVolume: 10, ofiNorm: 10, midReturnBps: 30, tickRate: 150)  // nothing
        ]
        try await redis.add(snapshots, to: streams.features)

        let service = try RunningService.start(
            "strategy-engine",
            environment: [
                "STRATEGIES_FILE": file, "CONSUMER_NAME": streams.consumer
            ], redisURL: server.url)
        let done = try await TestEnv.eventually(timeout: .seconds(30)) {
            try await redis.drained(streams.features, group: "strategy-engine")
        }
        #expect(done, "strategy-engine did not consume its input; output:\n\(service.process.output())")
        let signals = try await redis.messages(Signal.self, in: streams.signals)
        #expect(signals.map(\.id) == ["BTCUSDT:rise:2", "BTCUSDT:ofi:3"])
        #expect(signals.map(\.direction) == [.buy, .sell])
        #expect(signals.map(\.confidence) == [0.75, 0.75])
        #expect(signals[1].features == snapshots[2].features)

        let counted = await TestEnv.eventually {
            await service.metric("te_signals_total", labels: ["strategy=\"ofi\"", "direction=\"sell\""]) == 1
        }
        let metricsText = await service.metrics() ?? "unreachable"
        #expect(counted, "metrics:\n\(metricsText)")
        #expect(try await service.stop() == 0)

        // A restart re-reading the same snapshots (a new group on the same stream) gives the same ids.
        _ = try await redis.send("XGROUP", "DESTROY", streams.features, "strategy-engine")
        let again = try RunningService.start(
            "strategy-engine",
            environment: [
                "STRATEGIES_FILE": file, "CONSUMER_NAME": streams.consumer
            ], redisURL: server.url)
        let twice = try await TestEnv.eventually(timeout: .seconds(30)) {
            try await redis.xlen(streams.signals) == 4
        }
        #expect(twice, "no second pass; output:\n\(again.process.output())")
        let all = try await redis.messages(Signal.self, in: streams.signals)
        #expect(Array(all[2...]) == Array(all[..<2]))
        #expect(try await again.stop() == 0)
    }

    @Test func badStrategyFileStopsTheServiceWithOneLine() async throws {
        let file = try temporaryFile(
            """
            {"strategies": [
              {"name": "a", "kind": "ofi_breakout", "k": 50, "min_tick_rate": 100},
              {"name": "b", "kind": "imbalance_pressure", "max_spread_bps": 1}
            ]}
            """)
        let service = try RunningService.start("strategy-engine", environment: ["STRATEGIES_FILE": file])
        let status = try await service.process.waitForExit(timeout: .seconds(30))
        #expect(status == 1)
        let lines = service.process.output().split(separator: "\n")
        #expect(lines.count == 1)
        #expect(
            lines.first
                == "configuration error: STRATEGIES_FILE is unusable: strategy file \(file): strategies[1].min_imbalance: missing"
        )
    }
}
