import Foundation
import TEModels
import Testing

@testable import Strategies

/// A hand-made snapshot: every feature 0 unless given.
func snapshot(
    symbol: String = "BTCUSDT", tsNs: Int64 = 1_000_000_000, warm: Bool = true, tradeVolume: Double = 0,
    spreadBps: Double = 0, depthImbalance: Double = 0, ofiNorm: Double = 0, midReturnBps: Double = 0,
    tickRate: Double = 0
) -> FeatureSnapshot {
    FeatureSnapshot(
        symbol: symbol, tsNs: tsNs, windowMs: 5000, nQuotes: 10, nTrades: 3, tradeVolume: tradeVolume,
        lastPrice: 60000, warm: warm,
        features: FeatureVector(
            spreadBps: spreadBps, imbalance: depthImbalance, depthImbalance: depthImbalance, ofiNorm: ofiNorm,
            realizedVolBps: 1, midReturnBps: midReturnBps, tickRate: tickRate, micropriceOffsetBps: 0))
}

@Suite("Strategy rules at, below and above their thresholds")
struct StrategyRuleTests {
    let rise = Strategy(name: "rise", rule: .rapidRise(.init(minChangeBps: 8, minVolume: 20, confidenceScaleBps: 4)))
    let fall = Strategy(name: "fall", rule: .rapidFall(.init(minChangeBps: 8, minVolume: 20)))
    let pressure = Strategy(name: "pressure", rule: .imbalancePressure(.init(maxSpreadBps: 0.5, minImbalance: 0.8)))
    let ofi = Strategy(name: "ofi", rule: .ofiBreakout(.init(k: 50, minTickRate: 100)))

    @Test func rapidRiseAtThresholdFiresWithConfidenceOneHalf() throws {
        let signal = try #require(rise.evaluate(snapshot(tradeVolume: 20, midReturnBps: 8)))
        #expect(signal.direction == .buy)
        #expect(signal.confidence == 0.5)
        #expect(signal.strategy == "rise")
        #expect(signal.id == "BTCUSDT:rise:1000000000")
        #expect(signal.tsNs == 1_000_000_000)
    }

    @Test func rapidRiseJustBelowEitherThresholdIsSilent() {
        #expect(rise.evaluate(snapshot(tradeVolume: 20, midReturnBps: 7.999)) == nil)
        #expect(rise.evaluate(snapshot(tradeVolume: 19.999, midReturnBps: 8)) == nil)
        // A fall never fires a rise.
        #expect(rise.evaluate(snapshot(tradeVolume: 100, midReturnBps: -20)) == nil)
    }

    @Test func rapidRiseAboveThresholdScalesConfidence() throws {
        // 0.5 + 0.5 · (10 − 8) / 4 = 0.75
        #expect(try #require(rise.evaluate(snapshot(tradeVolume: 21, midReturnBps: 10))).confidence == 0.75)
        // 0.5 + 0.5 · (12 − 8) / 4 = 1; further moves stay at 1.
        #expect(try #require(rise.evaluate(snapshot(tradeVolume: 21, midReturnBps: 12))).confidence == 1)
        #expect(try #require(rise.evaluate(snapshot(tradeVolume: 21, midReturnBps: 40))).confidence == 1)
    }

    @Test func rapidFallMirrorsRise() throws {
        let at = try #require(fall.evaluate(snapshot(tradeVolume: 20, midReturnBps: -8)))
        #expect(at.direction == .sell)
        #expect(at.confidence == 0.5)
        #expect(fall.evaluate(snapshot(tradeVolume: 20, midReturnBps: -7.999)) == nil)
        #expect(fall.evaluate(snapshot(tradeVolume: 19.5, midReturnBps: -9)) == nil)
        #expect(fall.evaluate(snapshot(tradeVolume: 100, midReturnBps: 9)) == nil)
        // Scale defaults to min_change_bps: 0.5 + 0.5 · (12 − 8) / 8 = 0.75
        #expect(try #require(fall.evaluate(snapshot(tradeVolume: 20, midReturnBps: -12))).confidence == 0.75)
    }

    @Test func imbalancePressureThresholds() throws {
        let buy = try #require(pressure.evaluate(snapshot(spreadBps: 0.5, depthImbalance: 0.8)))
        #expect(buy.direction == .buy)
        #expect(buy.confidence == 0.5)
        let sell = try #require(pressure.evaluate(snapshot(spreadBps: 0.1, depthImbalance: -0.9)))
        #expect(sell.direction == .sell)
        // 0.5 + 0.5 · (0.9 − 0.8) / (1 − 0.8) = 0.75
        #expect(abs(sell.confidence - 0.75) < 1e-12)
        #expect(try #require(pressure.evaluate(snapshot(spreadBps: 0, depthImbalance: 1))).confidence == 1)
        // Just below the imbalance, just above the spread.
        #expect(pressure.evaluate(snapshot(spreadBps: 0.1, depthImbalance: 0.799)) == nil)
        #expect(pressure.evaluate(snapshot(spreadBps: 0.1, depthImbalance: -0.799)) == nil)
        #expect(pressure.evaluate(snapshot(spreadBps: 0.501, depthImbalance: 0.95)) == nil)
    }

    @Test func imbalancePressureWithMinImbalanceOneHasConfidenceOne() throws {
        let strict = Strategy(name: "strict", rule: .imbalancePressure(.init(maxSpreadBps: 1, minImbalance: 1)))
        #expect(try #require(strict.evaluate(snapshot(depthImbalance: -1))).confidence == 1)
        #expect(strict.evaluate(snapshot(depthImbalance: -0.9999)) == nil)
    }

    @Test func ofiBreakoutThresholds() throws {
        let buy = try #require(ofi.evaluate(snapshot(ofiNorm: 50, tickRate: 100)))
        #expect(buy.direction == .buy)
        #expect(buy.confidence == 0.5)
        let sell = try #require(ofi.evaluate(snapshot(ofiNorm: -75, tickRate: 101)))
        #expect(sell.direction == .sell)
        // 0.5 + 0.5 · (75 − 50) / 50 = 0.75
        #expect(sell.confidence == 0.75)
        #expect(ofi.evaluate(snapshot(ofiNorm: 49.99, tickRate: 200)) == nil)
        #expect(ofi.evaluate(snapshot(ofiNorm: -49.99, tickRate: 200)) == nil)
        #expect(ofi.evaluate(snapshot(ofiNorm: 80, tickRate: 99.9)) == nil)
    }

    @Test func coldSnapshotYieldsNothing() {
        let set = StrategySet([rise, fall, pressure, ofi])
        let hot = snapshot(
            warm: false, tradeVolume: 100, spreadBps: 0, depthImbalance: 1, ofiNorm: 500, midReturnBps: 50,
            tickRate: 500)
        #expect(set.evaluate(hot).isEmpty)
        var warm = hot
        warm.warm = true
        #expect(set.evaluate(warm).map(\.strategy) == ["rise", "pressure", "ofi"])
    }

    @Test func severalInstancesOfOneKindRunSideBySide() {
        let set = StrategySet([
            Strategy(name: "rise_small", rule: .rapidRise(.init(minChangeBps: 5, minVolume: 0))),
            Strategy(name: "rise_big", rule: .rapidRise(.init(minChangeBps: 10, minVolume: 0)))
        ])
        #expect(set.evaluate(snapshot(midReturnBps: 6)).map(\.strategy) == ["rise_small"])
        let both = set.evaluate(snapshot(midReturnBps: 10))
        #expect(both.map(\.id) == ["BTCUSDT:rise_small:1000000000", "BTCUSDT:rise_big:1000000000"])
        // rise_small: 0.5 + 0.5 · 5/5 = 1; rise_big: at threshold.
        #expect(both.map(\.confidence) == [1, 0.5])
    }

    @Test func sameSnapshotSameSignals() {
        let set = StrategySet([rise, fall, pressure, ofi])
        let s = snapshot(tradeVolume: 30, depthImbalance: -0.9, ofiNorm: -60, midReturnBps: -9, tickRate: 150)
        #expect(set.evaluate(s) == set.evaluate(s))
        #expect(set.evaluate(s).count == 3)
    }
}
