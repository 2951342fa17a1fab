import Foundation
import TEModels
import Testing

@testable import Strategies

let ms: Int64 = 1_000_000

func signal(
    _ strategy: String, _ direction: Direction, _ confidence: Double, atMs: Int64, symbol: String = "BTCUSDT"
) -> Signal {
    let ts = 1_723_161_254_000 * ms + atMs * ms
    return Signal(
        id: Signal.makeID(symbol: symbol, strategy: strategy, tsNs: ts), symbol: symbol, strategy: strategy,
        direction: direction, confidence: confidence, tsNs: ts,
        features: FeatureVector(
            spreadBps: 0, imbalance: 0, depthImbalance: 0, ofiNorm: 0, realizedVolBps: 0, midReturnBps: 0,
            tickRate: 0, micropriceOffsetBps: 0))
}

func ts(_ atMs: Int64) -> Int64 { 1_723_161_254_000 * ms + atMs * ms }

@Suite("Opportunity aggregator state machine")
struct OpportunityAggregatorTests {
    let configuration = OpportunityAggregator.Configuration(
        cooldownNs: 5000 * ms, minConfidence: 0.55, maxSignalAgeNs: 2000 * ms)

    @Test func firstSignalOpensAndEmits() {
        var agg = OpportunityAggregator(configuration: configuration)
        let s = signal("rise", .buy, 0.6, atMs: 0)
        let applied = agg.apply(s)
        #expect(applied.disposition == .opened)
        #expect(
            applied.emissions == [
                .init(
                    reason: .first,
                    opportunity: Opportunity(
                        id: "BTCUSDT:buy:\(ts(0)):rise", symbol: "BTCUSDT", direction: .buy, confidence: 0.6,
                        strategies: ["rise"], signalIds: [s.id], firstTsNs: ts(0), lastTsNs: ts(0), count: 1,
                        emitReason: "first"))
            ])
    }

    @Test func cooldownMergeAndUpgradeAndClose() {
        var agg = OpportunityAggregator(configuration: configuration)
        let a = signal("rise", .buy, 0.6, atMs: 0)
        let b = signal("ofi", .buy, 0.58, atMs: 1000)  // weaker: merged silently
        let c = signal("rise", .buy, 0.9, atMs: 3000)  // stronger: upgrade
        let d = signal("ofi", .buy, 0.7, atMs: 5000)  // exactly at the window's end: still merged
        let e = signal("rise", .buy, 0.6, atMs: 5001)  // after it: closes, opens anew
        #expect(agg.apply(a).disposition == .opened)
        let merged = agg.apply(b)
        #expect(merged == .init(disposition: .merged, emissions: []))
        let upgraded = agg.apply(c)
        #expect(upgraded.disposition == .upgraded)
        #expect(upgraded.emissions.count == 1)
        let up = upgraded.emissions[0].opportunity
        #expect(upgraded.emissions[0].reason == .upgrade)
        #expect(up.id == "BTCUSDT:buy:\(ts(0)):rise")
        #expect(up.confidence == 0.9)
        #expect(up.strategies == ["rise", "ofi"])
        #expect(up.signalIds == [a.id, b.id, c.id])
        #expect(up.count == 3)
        #expect(up.firstTsNs == ts(0) && up.lastTsNs == ts(3000))
        #expect(up.emitReason == "upgrade")
        #expect(agg.apply(d) == .init(disposition: .merged, emissions: []))

        let next = agg.apply(e)
        #expect(next.disposition == .opened)
        #expect(next.emissions.map(\.reason) == [.close, .first])
        let closed = next.emissions[0].opportunity
        #expect(closed.id == up.id)
        #expect(closed.count == 4)
        #expect(closed.confidence == 0.9)
        #expect(closed.signalIds == [a.id, b.id, c.id, d.id])
        #expect(closed.lastTsNs == ts(5000))
        #expect(closed.emitReason == "close")
        #expect(next.emissions[1].opportunity.id == "BTCUSDT:buy:\(ts(5001)):rise")
    }

    @Test func upgradesNeedTheMinimumStepSinceTheLastEmission() {
        var agg = OpportunityAggregator(configuration: configuration)  // step 0.05 (default)
        _ = agg.apply(signal("a", .buy, 0.60, atMs: 0))
        let small = agg.apply(signal("b", .buy, 0.63, atMs: 100))
        #expect(small == .init(disposition: .merged, emissions: []))
        #expect(agg.openWindows[0].confidence == 0.63)  // the strongest is kept even when not emitted
        let enough = agg.apply(signal("c", .buy, 0.66, atMs: 200))  // 0.66 − 0.60 ≥ 0.05
        #expect(enough.disposition == .upgraded)
        #expect(enough.emissions.map(\.opportunity.confidence) == [0.66])
        #expect(agg.apply(signal("d", .buy, 0.70, atMs: 300)).emissions.isEmpty)  // 0.04 since 0.66
        #expect(agg.apply(signal("e", .buy, 0.72, atMs: 400)).emissions.map(\.reason) == [.upgrade])

        var everyRise = OpportunityAggregator(
            configuration: .init(
                cooldownNs: 5000 * ms, minConfidence: 0.5, maxSignalAgeNs: 2000 * ms, minUpgradeStep: 0))
        _ = everyRise.apply(signal("a", .buy, 0.60, atMs: 0))
        #expect(everyRise.apply(signal("b", .buy, 0.601, atMs: 100)).disposition == .upgraded)
        #expect(everyRise.apply(signal("c", .buy, 0.601, atMs: 200)).disposition == .merged)
    }

    @Test func duplicateInOpenWindowIsSuppressed() {
        var agg = OpportunityAggregator(configuration: configuration)
        let a = signal("rise", .buy, 0.6, atMs: 0)
        _ = agg.apply(a)
        _ = agg.apply(signal("ofi", .buy, 0.7, atMs: 100))
        #expect(agg.apply(a) == .init(disposition: .duplicate, emissions: []))
        #expect(agg.openWindows.first?.count == 2)
    }

    @Test func lowConfidenceAndStaleAreDroppedButAdvanceNothingElse() {
        var agg = OpportunityAggregator(configuration: configuration)
        #expect(agg.apply(signal("rise", .buy, 0.5, atMs: 0)) == .init(disposition: .lowConfidence, emissions: []))
        #expect(agg.openWindows.isEmpty)
        _ = agg.apply(signal("rise", .sell, 0.8, atMs: 10_000))
        // 2001 ms behind the symbol's event clock: stale. 2000 ms: accepted (limit inclusive).
        #expect(agg.apply(signal("ofi", .buy, 0.9, atMs: 7999)) == .init(disposition: .stale, emissions: []))
        #expect(agg.apply(signal("ofi", .buy, 0.9, atMs: 8000)).disposition == .opened)
        // Staleness is per symbol: another symbol's clock starts at its own first signal.
        #expect(agg.apply(signal("ofi", .buy, 0.9, atMs: 0, symbol: "ETHUSDT")).disposition == .opened)
    }

    @Test func oppositeDirectionsAreReportedNotMerged() {
        var agg = OpportunityAggregator(configuration: configuration)
        let buy = agg.apply(signal("rise", .buy, 0.6, atMs: 0))
        #expect(buy.emissions[0].opportunity.conflict == nil)
        let sell = agg.apply(signal("fall", .sell, 0.7, atMs: 1000))
        #expect(sell.disposition == .opened)
        #expect(sell.emissions.count == 1)
        #expect(sell.emissions[0].opportunity.direction == .sell)
        #expect(sell.emissions[0].opportunity.conflict == true)
        #expect(sell.emissions[0].opportunity.count == 1)
        // The buy window carries the conflict in its next emission.
        let up = agg.apply(signal("ofi", .buy, 0.8, atMs: 2000))
        #expect(up.emissions.map(\.reason) == [.upgrade])
        #expect(up.emissions[0].opportunity.conflict == true)
        #expect(up.emissions[0].opportunity.count == 2)
        // Both close, oldest first.
        let closes = agg.tick(now: ts(6001) + 1)
        #expect(closes.map(\.opportunity.direction) == [.buy, .sell])
        #expect(closes.allSatisfy { $0.opportunity.conflict == true && $0.reason == .close })
    }

    @Test func tickClosesOnlyDueWindowsAcrossSymbols() {
        var agg = OpportunityAggregator(configuration: configuration)
        _ = agg.apply(signal("rise", .buy, 0.6, atMs: 0, symbol: "ETHUSDT"))
        _ = agg.apply(signal("rise", .buy, 0.6, atMs: 3000, symbol: "BTCUSDT"))
        #expect(agg.tick(now: ts(5000)).isEmpty)
        let first = agg.tick(now: ts(5001))
        #expect(first.map(\.opportunity.symbol) == ["ETHUSDT"])
        #expect(agg.tick(now: .max).map(\.opportunity.symbol) == ["BTCUSDT"])
        #expect(agg.openWindows.isEmpty)
    }

    @Test func changesTrackWhatToPersistAndRestoreResumes() throws {
        var agg = OpportunityAggregator(configuration: configuration)
        _ = agg.apply(signal("rise", .buy, 0.6, atMs: 0))
        _ = agg.apply(signal("fall", .sell, 0.6, atMs: 100))
        let changes = agg.takeChanges()
        #expect(changes.upserted.map(\.opportunity.direction) == [.buy, .sell])
        #expect(changes.clocks.map(\.tsNs) == [ts(100)])
        #expect(agg.takeChanges().isEmpty)

        // Persist, restore into a fresh machine and continue: same emissions as an uninterrupted machine.
        let encoded = try AggregatorStateCoding.encode(changes, version: 1)
        let decoded = try AggregatorStateCoding.decode(encoded.set)
        #expect(decoded.version == 1)
        var restored = OpportunityAggregator(
            configuration: configuration, openWindows: decoded.openWindows, clocks: decoded.clocks)
        let rest = [signal("ofi", .buy, 0.9, atMs: 200), signal("rise", .buy, 0.7, atMs: 6000)]
        #expect(rest.map { restored.apply($0) } == rest.map { agg.apply($0) })

        // The buy window closed and a new one opened: persisted as an upsert; the sell window closed.
        let after = agg.takeChanges()
        #expect(after.upserted.map(\.opportunity.firstTsNs) == [ts(6000)])
        #expect(after.closed == [.init(symbol: "BTCUSDT", direction: .sell)])
        let encodedAfter = try AggregatorStateCoding.encode(after, version: 2)
        #expect(encodedAfter.delete == ["w:BTCUSDT:sell"])
    }
}
