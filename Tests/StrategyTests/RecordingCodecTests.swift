import FeatureEngine
import Foundation
import MarketData
import TEModels
import TestSupport
import Testing

@testable import Strategies

/// The stream codecs on real data: every tick of a recording, its feature snapshots, the default
/// strategies' signals and the aggregator's opportunities are written with the same text the Codable
/// encoding wrote (the contract) and read back to the same values.
@Suite struct RecordingCodecTests {
    static let recording = RecordedData.path("binance/usdm_btcusdt_20240808.gz")

    static func defaultStrategies() throws -> StrategySet {
        let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("deploy/strategies/default.json").path
        return try StrategySet.load(file: file)
    }

    /// Same names, order and text as the Codable encoding; the codec's reader takes the entry and gives
    /// the value back.
    func sameAsCodable<M: StreamFieldEncodable & StreamFieldDecodable & Equatable>(_ message: M) throws -> Bool {
        let reference = try StreamFieldEncoder.encodeCodable(message)
        let fields = try message.streamFields().pairs
        guard reference.map(\.0) == fields.map(\.0), reference.map(\.1) == fields.map(\.1) else {
            Issue.record("\(M.self) text differs:\n\(reference)\n\(fields)")
            return false
        }
        guard M.decodeFast(fields) == message else {
            Issue.record("\(M.self) fast reader did not give the value back: \(fields)")
            return false
        }
        return true
    }

    @Test func recordingThroughEveryCodec() throws {
        let ticks = try recordingTicks(Self.recording)
        #expect(ticks.count > 10_000)
        var engine = FeatureEngine()
        let strategies = try Self.defaultStrategies()
        var aggregator = OpportunityAggregator(configuration: .init())
        var counts = (ticks: 0, snapshots: 0, signals: 0, opportunities: 0)
        var seen = Set<String>()
        for tick in ticks {
            if try sameAsCodable(tick) { counts.ticks += 1 }
            guard case .snapshot(let snapshot) = engine.apply(tick) else { continue }
            if try sameAsCodable(snapshot) { counts.snapshots += 1 }
            for signal in strategies.evaluate(snapshot) {
                if try sameAsCodable(signal) { counts.signals += 1 }
                guard seen.insert(signal.id).inserted else { continue }
                for emission in aggregator.apply(signal).emissions {
                    if try sameAsCodable(emission.opportunity) { counts.opportunities += 1 }
                }
            }
        }
        for emission in aggregator.tick(now: .max) {
            if try sameAsCodable(emission.opportunity) { counts.opportunities += 1 }
        }
        #expect(counts.ticks == ticks.count)
        #expect(counts.snapshots > 10_000)
        #expect(counts.signals > 100)
        #expect(counts.opportunities > 10)
        print("recording codecs: \(counts)")
    }
}
