import FeatureEngine
import Foundation
import MarketData
import TEModels
import TERedis
import TestSupport
import Testing

@testable import Strategies

/// The recording's ticks exactly as `ingest` produces them from a replay (MarketData's normalizer, with
/// its order books), and `te features` reads them offline.
func recordingTicks(_ path: String) throws -> [Tick] {
    let reader = try RecordingReader(path: path)
    var normalizer = MarketNormalizer()
    var ticks: [Tick] = []
    while let message = try reader.next() {
        if case .ticks(let out) = normalizer.normalize(payload: message.payload, receiveTsNs: message.tsNs, key: message.key) {
            ticks += out
        }
    }
    return ticks
}

@Suite("recording → features → strategy-engine → opportunity-aggregator", .timeLimit(.minutes(8)))
struct RecordingPipelineTests {
    static let recording = "/work/shared/data/binance/usdm_btcusdt_20240808.gz"

    /// One pass through both real binaries on fresh streams and state; the opportunities written.
    func run(_ snapshots: [FeatureSnapshot], redis: RedisClient) async throws -> [Opportunity] {
        let streams = TestStreams()
        try await redis.add(snapshots, to: streams.features)
        let engine = try RunningService.start(
            "strategy-engine",
            environment: [
                "STRATEGIES_FILE": repositoryRoot.appendingPathComponent("deploy/strategies/default.json").path,
                "FEATURES_STREAM": streams.features, "SIGNALS_STREAM": streams.signals,
                "CONSUMER_NAME": streams.consumer,
            ])
        // The aggregator starts on the complete signal stream, so a scheduling stall of strategy-engine
        // cannot look like idle input (IDLE_CLOSE_MS is the one wall-clock rule).
        let engineDone = try await TestEnv.eventually(timeout: .seconds(300), every: .milliseconds(250)) {
            try await redis.drained(streams.features, group: "strategy-engine")
        }
        if !engineDone { throw TestFailure("strategy-engine did not finish:\n\(engine.process.output())") }
        let aggregator = try RunningService.start(
            "opportunity-aggregator",
            environment: [
                "SIGNALS_STREAM": streams.signals, "OPPORTUNITIES_STREAM": streams.opportunities,
                "AGG_STATE_PREFIX": streams.statePrefix, "CONSUMER_NAME": streams.consumer, "IDLE_CLOSE_MS": "3000",
            ])
        // Done: features and signals consumed, and no window left open in the aggregator's state.
        let done = try await TestEnv.eventually(timeout: .seconds(300), every: .milliseconds(250)) {
            guard try await redis.drained(streams.features, group: "strategy-engine"),
                try await redis.drained(streams.signals, group: "opportunity-aggregator")
            else { return false }
            let state = try await redis.hgetall("\(streams.statePrefix):state")
            return !state.isEmpty && !state.keys.contains { $0.hasPrefix("w:") }
        }
        if !done {
            throw TestFailure(
                "pipeline did not finish; strategy-engine:\n\(engine.process.output())\naggregator:\n\(aggregator.process.output())")
        }
        let signals = try await redis.messages(Signal.self, in: streams.signals)
        let opportunities = try await redis.messages(Opportunity.self, in: streams.opportunities)
        #expect(try await engine.stop() == 0)
        #expect(try await aggregator.stop() == 0)
        // Every signal is accounted for in exactly one opportunity or was dropped (stale / low confidence).
        let closed = opportunities.filter { $0.emitReason == "close" }
        let merged = closed.flatMap(\.signalIds)
        #expect(Set(merged).count == merged.count)
        #expect(Set(merged).isSubset(of: Set(signals.map(\.id))))
        _ = try await redis.del(streams.keysToDelete)
        var seen = signals.map { "\(streams.statePrefix):seen:\($0.id)" }
        while !seen.isEmpty {
            _ = try await redis.del(Array(seen.prefix(1000)))
            seen.removeFirst(min(1000, seen.count))
        }
        return opportunities
    }

    @Test func defaultStrategiesGiveAPlausibleStableSetOfOpportunities() async throws {
        let redis = RedisClient(configuration: try TestEnv.redisConfiguration(), name: "test")
        defer { redis.close() }
        var engine = FeatureEngine(windowMs: 5000)
        var snapshots: [FeatureSnapshot] = []
        for tick in try recordingTicks(Self.recording) {
            if case .snapshot(let s) = engine.apply(tick) { snapshots.append(s) }
        }
        #expect(snapshots.count > 60_000)

        let first = try await run(snapshots, redis: redis)
        let ids = Set(first.map(\.id))
        // Plausible: some opportunities, not thousands per second of recording (~345 s).
        #expect(ids.count >= 5 && ids.count <= 1000, "\(ids.count) opportunities")
        // Each opportunity: one `first`, one `close`, upgrades in between, all under one id.
        for id in ids {
            let entries = first.filter { $0.id == id }.map { $0.emitReason ?? "" }
            #expect(entries.first == "first" && entries.last == "close")
            #expect(entries.dropFirst().dropLast().allSatisfy { $0 == "upgrade" })
        }

        let second = try await run(snapshots, redis: redis)
        #expect(second == first)
    }
}
