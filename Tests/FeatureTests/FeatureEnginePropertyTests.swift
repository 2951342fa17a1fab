import FeatureEngine
import TECore
import TEModels
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The definition, computed by rescanning everything: keeps all accepted ticks of each symbol and,
/// for every quote, walks back over its window. Independent of the engine's deques and running sums;
/// it shares only the documented quantisation of terms (`FixedPoint`), which makes sums exact.
struct NaiveFeatures {
    let windowNs: Int64
    var history: [String: [Tick]] = [:]

    static func units(_ size: Double) -> Int128 {
        FixedPoint.quantize(size, scale: FixedPoint.sizeScale, limit: FixedPoint.sizeLimit)
    }

    /// nil: the tick is dropped (older than the symbol's latest), or it is a trade.
    mutating func apply(_ tick: Tick) -> FeatureSnapshot?? {
        var ticks = history[tick.symbol, default: []]
        if let last = ticks.last, tick.tsNs < last.tsNs { return .none }
        ticks.append(tick)
        history[tick.symbol] = ticks
        guard tick.kind == .quote else { return .some(nil) }

        let t = tick.tsNs
        let quotes = ticks.filter { $0.kind == .quote }
        let inWindow = quotes.indices.filter { quotes[$0].tsNs > t - windowNs && quotes[$0].tsNs <= t }
        var ofi: Int128 = 0
        var depth: Int128 = 0
        var squaredReturns: Int128 = 0
        for i in inWindow {
            let c = quotes[i]
            depth &+= Self.units(c.bidSize!) &+ Self.units(c.askSize!)
            guard i > 0 else { continue }  // the symbol's first quote has no term
            let p = quotes[i - 1]
            if c.bid! >= p.bid! { ofi += Self.units(c.bidSize!) }
            if c.bid! <= p.bid! { ofi -= Self.units(p.bidSize!) }
            if c.ask! <= p.ask! { ofi -= Self.units(c.askSize!) }
            if c.ask! >= p.ask! { ofi += Self.units(p.askSize!) }
            let r = log(((c.ask! + c.bid!) / 2) / ((p.ask! + p.bid!) / 2))
            squaredReturns += FixedPoint.quantize(
                r * r, scale: FixedPoint.squaredReturnScale, limit: FixedPoint.squaredReturnLimit)
        }
        let trades = ticks.filter { $0.kind == .trade && $0.tsNs > t - windowNs && $0.tsNs <= t }
        let volume = trades.reduce(Int128(0)) { $0 + Self.units($1.size!) }

        let bid = tick.bid!
        let ask = tick.ask!
        let bs = tick.bidSize!
        let asz = tick.askSize!
        let mid = (ask + bid) / 2
        let n = inWindow.count
        let first = quotes[inWindow.first!]
        let midFirst = (first.ask! + first.bid!) / 2
        func ratio(_ a: Double, _ b: Double) -> Double { b == 0 ? 0 : a / b }
        let bidDepth = (tick.bids?.isEmpty ?? true) ? bs : tick.bids!.reduce(0.0) { $0 + $1[1] }
        let askDepth = (tick.asks?.isEmpty ?? true) ? asz : tick.asks!.reduce(0.0) { $0 + $1[1] }
        let meanHalfDepth = Double(depth) / FixedPoint.sizeScale / Double(2 * n)
        let microprice = bs + asz == 0 ? mid : (bid * asz + ask * bs) / (bs + asz)
        let midRatio = ratio(mid, midFirst)
        let features = FeatureVector(
            spreadBps: ratio(ask - bid, mid) * 1e4,
            imbalance: ratio(bs - asz, bs + asz),
            depthImbalance: ratio(bidDepth - askDepth, bidDepth + askDepth),
            ofiNorm: ratio(Double(ofi) / FixedPoint.sizeScale, meanHalfDepth),
            realizedVolBps: (Double(squaredReturns) / FixedPoint.squaredReturnScale).squareRoot() * 1e4,
            midReturnBps: midRatio == 0 ? 0 : log(midRatio) * 1e4,
            tickRate: Double(n) / (Double(windowNs) / 1e9),
            micropriceOffsetBps: ratio(microprice - mid, mid) * 1e4)
        return .some(
            FeatureSnapshot(
                symbol: tick.symbol, tsNs: t, windowMs: Int(windowNs / 1_000_000), nQuotes: n,
                nTrades: trades.count, tradeVolume: Double(volume) / FixedPoint.sizeScale,
                lastPrice: trades.last?.price ?? mid, warm: quotes[0].tsNs <= t - windowNs, features: features))
    }
}

/// Random ticks for a few symbols: prices on a tick grid with random walks, sizes with up to 8
/// decimals (not exact in binary), occasional depth, equal timestamps, out-of-order ticks, and gaps
/// longer than W so the window empties and refills many times.
func randomTicks(count: Int, windowNs: Int64, seed: UInt64, outOfOrder: Bool = true) -> [Tick] {
    var rng = SeededGenerator(seed: seed)
    let symbols = ["BTCUSDT", "ETHUSDT", "XBT/USD"]
    var mids: [String: Double] = ["BTCUSDT": 61837.635, "ETHUSDT": 2650.005, "XBT/USD": 61840.5]
    var clock: [String: Int64] = [:]
    func size() -> Double {
        Double(Int.random(in: 0...2_000_000_000, using: &rng)) / 1e8
    }
    var ticks: [Tick] = []
    for _ in 0..<count {
        let symbol = symbols.randomElement(using: &rng)!
        var ts = clock[symbol, default: 1_723_161_254_000_000_000]
        switch Int.random(in: 0..<100, using: &rng) {
        case 0..<5: break  // same timestamp
        case 5..<8: ts += windowNs + Int64.random(in: 0...windowNs, using: &rng)  // a gap beyond W
        case 8..<10: ts += windowNs  // exactly W later
        default: ts += Int64.random(in: 1...(windowNs / 8), using: &rng)
        }
        clock[symbol] = ts
        var tickTs = ts
        if Int.random(in: 0..<50, using: &rng) == 0, outOfOrder {
            tickTs -= Int64.random(in: 1...windowNs, using: &rng)
        }
        if Bool.random(using: &rng) || Int.random(in: 0..<3, using: &rng) == 0 {
            var mid = mids[symbol]!
            mid += Double(Int.random(in: -3...3, using: &rng)) * 0.005
            mids[symbol] = mid
            let halfSpread = Double(Int.random(in: 1...4, using: &rng)) * 0.005
            let bid = mid - halfSpread
            let ask = mid + halfSpread
            var bids: [[Double]]? = nil
            var asks: [[Double]]? = nil
            if Int.random(in: 0..<4, using: &rng) == 0 {
                bids = (0..<Int.random(in: 0...5, using: &rng)).map { [bid - Double($0) * 0.01, size()] }
                asks = (0..<Int.random(in: 0...5, using: &rng)).map { [ask + Double($0) * 0.01, size()] }
            }
            let zeroBook = Int.random(in: 0..<40, using: &rng) == 0
            ticks.append(
                Tick.quote(
                    symbol: symbol, tsNs: tickTs, bid: bid, bidSize: zeroBook ? 0 : size(), ask: ask,
                    askSize: zeroBook ? 0 : size(), bids: bids, asks: asks))
        } else {
            ticks.append(
                Tick.trade(
                    symbol: symbol, tsNs: tickTs, price: mids[symbol]! + 0.005, size: size(),
                    side: Bool.random(using: &rng) ? .buy : .sell))
        }
    }
    return ticks
}

@Suite("FeatureEngine: properties")
struct FeatureEnginePropertyTests {
    @Test("the incremental engine equals a rescan of the window, bit for bit", arguments: [1 as UInt64, 7, 42])
    func incrementalEqualsRescan(seed: UInt64) {
        let windowNs: Int64 = 50_000_000
        let ticks = randomTicks(count: 4_000, windowNs: windowNs, seed: seed)
        var engine = FeatureEngine(windowNs: windowNs)
        var naive = NaiveFeatures(windowNs: windowNs)
        var snapshots = 0
        var dropped = 0
        var warm = 0
        var crossings = 0
        var lastCount: [String: Int] = [:]
        for tick in ticks {
            let outcome = engine.apply(tick)
            let expected = naive.apply(tick)
            switch (outcome, expected) {
            case (.snapshot(let got), .some(.some(let want))):
                snapshots += 1
                if got.warm { warm += 1 }
                if got.nQuotes <= lastCount[got.symbol, default: 0] { crossings += 1 }
                lastCount[got.symbol] = got.nQuotes
                #expect(got == want, "tick \(tick)")
                // Bit-exact, not just ==: −0 and +0 compare equal.
                #expect(got.features.values.map(\.bitPattern) == want.features.values.map(\.bitPattern))
                if got != want { return }
            case (.tradeApplied, .some(.none)): break
            case (.droppedOutOfOrder, .none): dropped += 1
            default:
                Issue.record("engine \(outcome) vs rescan \(String(describing: expected)) for \(tick)")
                return
            }
        }
        // The sequence really exercised what it is meant to.
        #expect(snapshots > 1_500)
        #expect(dropped > 20)
        #expect(warm > 1_000)
        #expect(crossings > 200)
    }

    /// What `feature-pipeline` relies on after a restart: replaying the stream from any earlier point
    /// yields, once the window is warm, exactly the snapshots of the engine that never stopped. (Not
    /// guaranteed when the replay starts right at a tick that the full run dropped as out of order.)
    @Test("an engine rebuilt from a suffix of the history gives identical warm snapshots", arguments: [1_000, 1_777])
    func rebuildFromHistory(start: Int) {
        let windowNs: Int64 = 50_000_000
        let ticks = randomTicks(count: 3_000, windowNs: windowNs, seed: 99, outOfOrder: false)
        var full = FeatureEngine(windowNs: windowNs)
        var fullSnapshots: [Int: FeatureSnapshot] = [:]
        for (i, tick) in ticks.enumerated() { if case .snapshot(let s) = full.apply(tick) { fullSnapshots[i] = s } }

        var rebuilt = FeatureEngine(windowNs: windowNs)
        var compared = 0
        var cold = 0
        for i in start..<ticks.count {
            guard case .snapshot(let s) = rebuilt.apply(ticks[i]) else { continue }
            guard s.warm else {
                cold += 1
                continue
            }
            #expect(s == fullSnapshots[i], "tick \(i)")
            compared += 1
        }
        #expect(compared > 500)
        #expect(cold > 0)
    }
}
