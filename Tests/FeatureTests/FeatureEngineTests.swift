import FeatureEngine
import TEModels
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// W = 1 s; timestamps are T0 + seconds.
let second: Int64 = 1_000_000_000
let t0: Int64 = 1_723_161_254 * second

func q(
    _ at: Double, _ bid: Double, _ bidSize: Double, _ ask: Double, _ askSize: Double,
    bids: [[Double]]? = nil, asks: [[Double]]? = nil, symbol: String = "BTCUSDT"
) -> Tick {
    Tick.quote(
        symbol: symbol, tsNs: t0 + Int64((at * 1e9).rounded()), bid: bid, bidSize: bidSize, ask: ask,
        askSize: askSize, bids: bids, asks: asks)
}

func tr(_ at: Double, _ price: Double, _ size: Double, symbol: String = "BTCUSDT") -> Tick {
    Tick.trade(symbol: symbol, tsNs: t0 + Int64((at * 1e9).rounded()), price: price, size: size, side: .buy)
}

extension FeatureEngine.Outcome {
    var snapshot: FeatureSnapshot? {
        if case .snapshot(let s) = self { return s }
        return nil
    }
}

/// Relative closeness, for values whose hand computation rounds in another order than the engine.
func close(_ a: Double, _ b: Double, _ tolerance: Double = 1e-12) -> Bool {
    abs(a - b) <= tolerance * max(1, abs(b))
}

@Suite("FeatureEngine: hand-computed values")
struct FeatureEngineTests {
    @Test("first quote: point-in-time features, no paired term, cold window")
    func firstQuote() throws {
        var engine = FeatureEngine(windowNs: second)
        let s = try #require(engine.apply(q(0, 100, 3, 102, 1)).snapshot)
        // mid 101; spread 2/101; imbalance (3−1)/4; microprice (100·1 + 102·3)/4 = 101.5
        #expect(s.features.spreadBps == 2.0 / 101.0 * 1e4)
        #expect(s.features.imbalance == 0.5)
        #expect(s.features.depthImbalance == 0.5)
        #expect(s.features.ofiNorm == 0)
        #expect(s.features.realizedVolBps == 0)
        #expect(s.features.midReturnBps == 0)
        #expect(s.features.tickRate == 1)
        #expect(s.features.micropriceOffsetBps == 0.5 / 101.0 * 1e4)
        #expect(s.nQuotes == 1)
        #expect(s.nTrades == 0)
        #expect(s.tradeVolume == 0)
        #expect(s.lastPrice == 101)  // no trade in W: the mid
        #expect(s.warm == false)
        #expect(s.tsNs == t0)
        #expect(s.windowMs == 1000)
        #expect(s.symbol == "BTCUSDT")
    }

    /// The previous quote is bid 100 × 3, ask 102 × 1; this one has bid_size 2, ask_size 5.
    /// e_n = 1{b ≥ b'} q^b − 1{b ≤ b'} q^b' − 1{a ≤ a'} q^a + 1{a ≥ a'} q^a'.
    @Test(
        "OFI: each bid and ask clause",
        arguments: [
            (101.0, 103.0, 3.0),  // bid up (+q^b = 2), ask up (+q^a' = 1)
            (99.0, 101.5, -8.0),  // bid down (−q^b' = −3), ask down (−q^a = −5)
            (100.0, 102.0, -5.0),  // bid equal (2 − 3), ask equal (−5 + 1)
            (101.0, 101.5, -3.0),  // bid up, ask down
            (99.0, 103.0, -2.0),  // bid down, ask up
            (100.0, 103.0, 0.0)  // bid equal, ask up
        ])
    func ofiClauses(bid: Double, ask: Double, expectedOFI: Double) throws {
        var engine = FeatureEngine(windowNs: second)
        _ = engine.apply(q(0, 100, 3, 102, 1))
        let s = try #require(engine.apply(q(0.5, bid, 2, ask, 5)).snapshot)
        // mean of (bid_size + ask_size)/2 over both quotes: (2 + 3.5)/2 = 2.75
        #expect(s.features.ofiNorm == expectedOFI / 2.75)
        #expect(s.nQuotes == 2)
        #expect(s.features.tickRate == 2)
    }

    @Test("returns: realized vol and mid return over the window")
    func returns() throws {
        var engine = FeatureEngine(windowNs: second)
        _ = engine.apply(q(0, 100, 1, 102, 1))  // mid 101
        _ = engine.apply(q(0.3, 101, 1, 102, 1))  // mid 101.5
        let s = try #require(engine.apply(q(0.6, 100, 1, 101, 1)).snapshot)  // mid 100.5
        let r1 = log(101.5 / 101.0)
        let r2 = log(100.5 / 101.5)
        #expect(close(s.features.realizedVolBps, (r1 * r1 + r2 * r2).squareRoot() * 1e4))
        #expect(close(s.features.midReturnBps, log(100.5 / 101.0) * 1e4))
        #expect(s.features.tickRate == 3)
    }

    @Test("window edge: a quote exactly W old is out, but still pairs with the next quote")
    func windowEdge() throws {
        var engine = FeatureEngine(windowNs: second)
        _ = engine.apply(q(0, 100, 1, 102, 1))  // mid 101, the first quote: no term
        // mid 101.5, e = +2 (bid up) − 1 + 1 (ask equal) = 2
        let atHalf = try #require(engine.apply(q(0.5, 101, 2, 102, 1)).snapshot)
        #expect(atHalf.warm == false)
        #expect(atHalf.features.ofiNorm == 2.0 / 1.25)  // mean half depth (2 + 3)/4

        // 1 ns before the first quote is W old: all three are in W.
        var inside = engine
        let justInside = try #require(
            inside.apply(
                Tick.quote(symbol: "BTCUSDT", tsNs: t0 + second - 1, bid: 101, bidSize: 1, ask: 103, askSize: 1)
            ).snapshot)
        #expect(justInside.nQuotes == 3)
        #expect(justInside.warm == false)
        #expect(close(justInside.features.midReturnBps, log(102.0 / 101.0) * 1e4))

        // At exactly T0 + W the first quote is out: W holds the quotes at 0.5 and 1.0.
        // mid 102, e = 1 − 2 (bid equal) + 1 (ask up) = 0
        let s = try #require(engine.apply(q(1, 101, 1, 103, 1)).snapshot)
        #expect(s.nQuotes == 2)
        #expect(s.warm == true)  // the first quote is at t − W: W of history seen
        #expect(s.features.tickRate == 2)
        // mid_first is the quote at 0.5 (101.5), not the one that left
        #expect(close(s.features.midReturnBps, log(102.0 / 101.5) * 1e4))
        // Σ e over W = 2 (the quote at 0.5, paired with the one now out of W) + 0; mean half depth (3 + 2)/4
        #expect(s.features.ofiNorm == 2.0 / 1.25)
        let r1 = log(101.5 / 101.0)
        let r2 = log(102.0 / 101.5)
        #expect(close(s.features.realizedVolBps, (r1 * r1 + r2 * r2).squareRoot() * 1e4))
    }

    @Test("trades: count, volume and last price over (t − W, t]; no snapshot")
    func trades() throws {
        var engine = FeatureEngine(windowNs: second)
        _ = engine.apply(q(0, 100, 1, 102, 1))
        #expect(engine.apply(tr(0.2, 100.5, 1)) == .tradeApplied)
        #expect(engine.apply(tr(0.7, 101, 2)) == .tradeApplied)
        let before = try #require(engine.apply(q(0.9, 100, 1, 102, 1)).snapshot)
        #expect(before.nTrades == 2)
        #expect(before.tradeVolume == 3)
        #expect(before.lastPrice == 101)
        // At 1.2 the trade at 0.2 is exactly W old: out.
        let s = try #require(engine.apply(q(1.2, 100, 1, 102, 1)).snapshot)
        #expect(s.nTrades == 1)
        #expect(s.tradeVolume == 2)
        #expect(s.lastPrice == 101)
        // At 1.7 no trade is left: last price falls back to the mid.
        let empty = try #require(engine.apply(q(1.7, 100, 1, 103, 1)).snapshot)
        #expect(empty.nTrades == 0)
        #expect(empty.tradeVolume == 0)
        #expect(empty.lastPrice == 101.5)
        // Sums are exact: one trade of 0.02 is a volume of exactly 0.02, not a rounded neighbour.
        _ = engine.apply(tr(1.8, 101, 0.02))
        let small = try #require(engine.apply(q(1.9, 100, 1, 103, 1)).snapshot)
        #expect(small.tradeVolume == 0.02)
    }

    @Test("zero denominators give 0")
    func zeroDenominators() throws {
        var engine = FeatureEngine(windowNs: second)
        let s = try #require(engine.apply(q(0, 100, 0, 102, 0, bids: [[100, 0]], asks: [[102, 0]])).snapshot)
        #expect(s.features.imbalance == 0)
        #expect(s.features.depthImbalance == 0)
        #expect(s.features.micropriceOffsetBps == 0)
        #expect(s.features.ofiNorm == 0)
        // A second empty-book quote: e = 0 over a zero mean depth.
        let s2 = try #require(engine.apply(q(0.1, 101, 0, 102, 0)).snapshot)
        #expect(s2.features.ofiNorm == 0)
        #expect(s2.features.imbalance == 0)
    }

    @Test("depth imbalance: summed levels when given, equal to imbalance when not")
    func depth() throws {
        var engine = FeatureEngine(windowNs: second)
        let withDepth = try #require(
            engine.apply(q(0, 100, 3, 102, 1, bids: [[100, 3], [99.5, 4]], asks: [[102, 1], [102.5, 2]])).snapshot)
        #expect(withDepth.features.imbalance == 0.5)
        #expect(withDepth.features.depthImbalance == (7.0 - 3.0) / 10.0)
        let without = try #require(engine.apply(q(0.1, 100, 3, 102, 1)).snapshot)
        #expect(without.features.depthImbalance == without.features.imbalance)
        let empty = try #require(engine.apply(q(0.2, 100, 1, 102, 3, bids: [], asks: [])).snapshot)
        #expect(empty.features.depthImbalance == -0.5)
    }

    @Test("a tick older than the latest for its symbol is dropped and changes nothing")
    func outOfOrder() throws {
        var engine = FeatureEngine(windowNs: second)
        var reference = FeatureEngine(windowNs: second)
        _ = engine.apply(q(0.5, 100, 1, 102, 1))
        _ = reference.apply(q(0.5, 100, 1, 102, 1))
        #expect(engine.apply(q(0.4, 99, 5, 101, 5)) == .droppedOutOfOrder)
        #expect(engine.apply(tr(0.4, 99, 5)) == .droppedOutOfOrder)
        // Another symbol has its own clock.
        #expect(engine.apply(q(0.1, 10, 1, 11, 1, symbol: "ETHUSDT")).snapshot != nil)
        // Equal timestamps are in order.
        let a = try #require(engine.apply(q(0.5, 101, 1, 102, 2)).snapshot)
        let b = try #require(reference.apply(q(0.5, 101, 1, 102, 2)).snapshot)
        #expect(a == b)
        #expect(a.nQuotes == 2)
        #expect(engine.latestTsNs(symbol: "BTCUSDT") == t0 + second / 2)
    }

    @Test("a quote missing a field is rejected without touching the window")
    func rejected() {
        var engine = FeatureEngine(windowNs: second)
        var bad = q(0, 100, 1, 102, 1)
        bad.askSize = nil
        #expect(engine.apply(bad) == .rejected(field: "ask_size"))
        #expect(engine.apply(q(0, .nan, 1, 102, 1)) == .rejected(field: "bid"))
        #expect(engine.windowQuotes(symbol: "BTCUSDT") == 0)
        #expect(engine.latestTsNs(symbol: "BTCUSDT") == nil)
    }
}
