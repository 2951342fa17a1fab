import DequeModule
import TEModels

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Rolling microstructure features over an event-time window, per symbol (DESIGN.md "Feature vector"
/// and the paragraph on the window W). Pure: no I/O, no clock; the same tick sequence gives the same
/// snapshots in `feature-pipeline` and in `te features`.
///
/// The window W of a symbol holds its quotes with `ts_ns` in (t − W, t], t = the latest quote's
/// `ts_ns`; trades count in the same interval. A quote's paired terms (OFI e_n, log return r_n) use the
/// symbol's previous quote even when it lies before W; the symbol's first quote has no paired term.
///
/// Cost: O(1) amortised per tick (each tick enters and leaves a deque once; running sums), no heap
/// allocation per tick once the deques have grown to the window's size.
///
/// Sums are exact. Window sums are kept in 128-bit fixed point (`FixedPoint`): each term is rounded
/// once to a fixed quantum, after which adding and removing terms is exact integer arithmetic. So a
/// sum never drifts however long the replay, it depends only on the terms in the window (not on the
/// history of additions and removals), and a service that rebuilt its window after a restart gives
/// bit-identical numbers to one that never stopped. Compensated (Kahan/Neumaier) running sums would
/// bound the drift but still depend on history in the last bits; periodic recomputation would cost a
/// rescan. The quantum (2^-72 for sizes, 2^-96 for squared returns) is far below one ulp of any sum
/// that matters, so the features equal the definition to double precision.
public struct FeatureEngine: Sendable {
    public enum Outcome: Sendable, Equatable {
        /// A quote was applied: its snapshot.
        case snapshot(FeatureSnapshot)
        /// A trade was applied to the symbol's trade window; trades emit no snapshot.
        case tradeApplied
        /// The tick is older than the latest one seen for its symbol: dropped, not reordered.
        case droppedOutOfOrder
        /// The tick lacks a field its kind needs, or a value is not finite/positive; state unchanged.
        /// Services validate ticks (`Tick.validated()`) before they get here; this keeps bad input
        /// from corrupting a window if one slips through.
        case rejected(field: String)
    }

    /// W in nanoseconds.
    public let windowNs: Int64
    private var symbols: [String: SymbolWindow] = [:]

    /// - Parameter windowNs: W in nanoseconds; must be positive.
    public init(windowNs: Int64) {
        precondition(windowNs > 0, "the feature window must be positive")
        self.windowNs = windowNs
    }

    /// W from `FEATURE_WINDOW_MS`. Default: 5000 ms.
    public init(windowMs: Int = 5000) {
        self.init(windowNs: Int64(windowMs) * 1_000_000)
    }

    public var windowMs: Int { Int(windowNs / 1_000_000) }

    public mutating func apply(_ tick: Tick) -> Outcome {
        let windowNs = windowNs
        return symbols[tick.symbol, default: SymbolWindow()].apply(tick, windowNs: windowNs)
    }

    /// The newest `ts_ns` applied for the symbol (quote or trade), nil before its first tick.
    public func latestTsNs(symbol: String) -> Int64? {
        guard let latest = symbols[symbol]?.latestTsNs, latest != .min else { return nil }
        return latest
    }

    /// Quotes currently in the symbol's window.
    public func windowQuotes(symbol: String) -> Int {
        symbols[symbol]?.quotes.count ?? 0
    }

    public var symbolNames: [String] { Array(symbols.keys) }
}

/// 128-bit fixed-point representation of window terms, so that window sums are exact.
///
/// A term is rounded once to a multiple of its quantum (`quantize`), clamped to a bound that keeps any
/// realistic window sum far inside Int128, then summed exactly. `double(_:_:)` rounds a sum back.
public enum FixedPoint {
    /// Sizes (OFI terms, depth, trade volume): quantum 2^-72 (≈2e-22), so every size ≥ 2^-20 (≈1e-6)
    /// is represented exactly and a window of one trade of 0.02 sums to exactly 0.02; one size is
    /// clamped to 2^44 (≈1.8e13). Sums up to 2^55 (≈3.6e16) are exact. Beyond that (thousands of
    /// clamped sizes in one window) the sum wraps — garbage for that window, never a crash — and,
    /// because removals mirror additions, is exact again once the window is back in range.
    public static let sizeScale: Double = 0x1p72
    public static let sizeLimit: Double = 0x1p44
    /// Squared log returns: quantum 2^-96 (a squared return of one tick of BTC is ≈2^-47, so the
    /// rounding is below 2^-49 of it); one term clamped to 64 (|r| ≤ 8, a factor of ~3000 in a quote).
    public static let squaredReturnScale: Double = 0x1p96
    public static let squaredReturnLimit: Double = 64

    /// `x` rounded to the nearest multiple of 1/scale, clamped to ±limit; a non-finite value counts 0.
    @inlinable
    public static func quantize(_ x: Double, scale: Double, limit: Double) -> Int128 {
        guard x.isFinite else { return 0 }
        let clamped = x > limit ? limit : (x < -limit ? -limit : x)
        return int128(integral: (clamped * scale).rounded(.toNearestOrEven))
    }

    /// A sum in units back to a Double, correctly rounded (as `Double(units) / scale`).
    @inlinable
    public static func double(_ units: Int128, scale: Double) -> Double {
        double(units) / scale
    }

    /// `Int128(v)` for an integral `v` with |v| < 2^126, without the generic conversion (which is
    /// unspecialised and costs most of a quote's time).
    @inlinable
    public static func int128(integral v: Double) -> Int128 {
        if v.magnitude < 0x1p62 { return Int128(Int64(v)) }
        // v = high·2^64 + low with 0 ≤ low < 2^64; both parts are exact doubles (v has 53 significant bits).
        let high = (v * 0x1p-64).rounded(.down)
        let low = v - high * 0x1p64
        return Int128(Int64(high)) << 64 | Int128(UInt64(low))
    }

    /// `Double(x)`, correctly rounded (round to nearest, ties to even), without the generic conversion.
    @inlinable
    public static func double(_ x: Int128) -> Double {
        if x >= -0x4000_0000_0000_0000 && x < 0x4000_0000_0000_0000 { return Double(Int64(truncatingIfNeeded: x)) }
        // Keep 62 significant bits plus a sticky bit for everything shifted out: rounding those to 53
        // bits gives the same result as rounding x itself, and the final scaling by 2^shift is exact.
        let magnitude = x.magnitude
        let shift = 128 - magnitude.leadingZeroBitCount - 62
        let kept = magnitude >> shift
        let sticky: UInt128 = (magnitude & ((1 << shift) - 1)) != 0 ? 1 : 0
        let value =
            Double(UInt64(truncatingIfNeeded: kept | sticky)) * Double(sign: .plus, exponent: shift, significand: 1)
        return x < 0 ? -value : value
    }
}

/// One quote's contribution to the window.
struct QuoteTerm {
    var tsNs: Int64
    /// e_n (Cont–Kukanov–Stoikov), in size units; 0 for the symbol's first quote.
    var ofi: Int128
    /// bid_size + ask_size, in size units (the window mean of their half is OFI's normaliser).
    var depth: Int128
    /// r_n², in squared-return units; 0 for the symbol's first quote.
    var squaredReturn: Int128
    var mid: Double
}

struct TradeTerm {
    var tsNs: Int64
    var size: Int128
    var price: Double
}

/// The previous quote, which the next quote's paired terms refer to.
struct PreviousQuote {
    var bid: Double
    var bidSize: Int128
    var ask: Double
    var askSize: Int128
    var mid: Double
}

struct SymbolWindow {
    var latestTsNs: Int64 = .min
    var firstQuoteTsNs: Int64?
    var previous: PreviousQuote?
    var quotes: Deque<QuoteTerm> = []
    var trades: Deque<TradeTerm> = []
    var ofiSum: Int128 = 0
    var depthSum: Int128 = 0
    var squaredReturnSum: Int128 = 0
    var tradeSizeSum: Int128 = 0

    mutating func apply(_ tick: Tick, windowNs: Int64) -> FeatureEngine.Outcome {
        guard tick.tsNs >= latestTsNs else { return .droppedOutOfOrder }
        switch tick.kind {
        case .trade:
            guard let price = tick.price, price.isFinite, price > 0 else { return .rejected(field: "price") }
            guard let size = tick.size, size.isFinite, size >= 0 else { return .rejected(field: "size") }
            latestTsNs = tick.tsNs
            let units = FixedPoint.quantize(size, scale: FixedPoint.sizeScale, limit: FixedPoint.sizeLimit)
            trades.append(TradeTerm(tsNs: tick.tsNs, size: units, price: price))
            tradeSizeSum &+= units
            // Later quotes have ts ≥ this trade's, so trades at or before ts − W are out of every future
            // window; evicting here bounds memory on a symbol that trades without quoting.
            evictTrades(through: tick.tsNs &- windowNs)
            return .tradeApplied
        case .quote:
            guard let bid = tick.bid, bid.isFinite, bid > 0 else { return .rejected(field: "bid") }
            guard let ask = tick.ask, ask.isFinite, ask > 0 else { return .rejected(field: "ask") }
            guard let bidSize = tick.bidSize, bidSize.isFinite, bidSize >= 0 else {
                return .rejected(field: "bid_size")
            }
            guard let askSize = tick.askSize, askSize.isFinite, askSize >= 0 else {
                return .rejected(field: "ask_size")
            }
            latestTsNs = tick.tsNs
            return .snapshot(
                applyQuote(tick, bid: bid, bidSize: bidSize, ask: ask, askSize: askSize, windowNs: windowNs))
        }
    }

    private mutating func applyQuote(
        _ tick: Tick, bid: Double, bidSize: Double, ask: Double, askSize: Double, windowNs: Int64
    ) -> FeatureSnapshot {
        let t = tick.tsNs
        let mid = (ask + bid) / 2
        let bidUnits = FixedPoint.quantize(bidSize, scale: FixedPoint.sizeScale, limit: FixedPoint.sizeLimit)
        let askUnits = FixedPoint.quantize(askSize, scale: FixedPoint.sizeScale, limit: FixedPoint.sizeLimit)

        var ofi: Int128 = 0
        var squaredReturn: Int128 = 0
        if let p = previous {
            if bid >= p.bid { ofi &+= bidUnits }
            if bid <= p.bid { ofi &-= p.bidSize }
            if ask <= p.ask { ofi &-= askUnits }
            if ask >= p.ask { ofi &+= p.askSize }
            let r = p.mid == 0 ? 0 : log(mid / p.mid)
            squaredReturn = FixedPoint.quantize(
                r * r, scale: FixedPoint.squaredReturnScale, limit: FixedPoint.squaredReturnLimit)
        }
        if firstQuoteTsNs == nil { firstQuoteTsNs = t }
        previous = PreviousQuote(bid: bid, bidSize: bidUnits, ask: ask, askSize: askUnits, mid: mid)

        let depth = bidUnits &+ askUnits
        quotes.append(QuoteTerm(tsNs: t, ofi: ofi, depth: depth, squaredReturn: squaredReturn, mid: mid))
        ofiSum &+= ofi
        depthSum &+= depth
        squaredReturnSum &+= squaredReturn

        // Window (t − W, t]: a quote exactly W old is out.
        let edge = t &- windowNs
        while let oldest = quotes.first, oldest.tsNs <= edge {
            ofiSum &-= oldest.ofi
            depthSum &-= oldest.depth
            squaredReturnSum &-= oldest.squaredReturn
            quotes.removeFirst()
        }
        evictTrades(through: edge)

        let n = quotes.count  // ≥ 1: this quote is in its own window
        let features = FeatureFormulas.vector(
            bid: bid, bidSize: bidSize, ask: ask, askSize: askSize, bids: tick.bids, asks: tick.asks,
            ofiSum: FixedPoint.double(ofiSum, scale: FixedPoint.sizeScale),
            depthSum: FixedPoint.double(depthSum, scale: FixedPoint.sizeScale),
            squaredReturnSum: FixedPoint.double(squaredReturnSum, scale: FixedPoint.squaredReturnScale),
            midFirst: quotes.first!.mid, quoteCount: n, windowNs: windowNs)

        return FeatureSnapshot(
            symbol: tick.symbol, tsNs: t, windowMs: Int(windowNs / 1_000_000), nQuotes: n, nTrades: trades.count,
            tradeVolume: FixedPoint.double(tradeSizeSum, scale: FixedPoint.sizeScale),
            lastPrice: trades.last?.price ?? mid,
            warm: firstQuoteTsNs! <= edge,
            features: features)
    }

    private mutating func evictTrades(through edge: Int64) {
        while let oldest = trades.first, oldest.tsNs <= edge {
            tradeSizeSum &-= oldest.size
            trades.removeFirst()
        }
    }
}

/// The feature formulas given the window's sums; shared by the engine and nothing else so that every
/// definition lives in one place.
enum FeatureFormulas {
    @inline(__always)
    static func ratio(_ numerator: Double, _ denominator: Double) -> Double {
        denominator == 0 ? 0 : numerator / denominator
    }

    static func vector(
        bid: Double, bidSize: Double, ask: Double, askSize: Double, bids: [[Double]]?, asks: [[Double]]?,
        ofiSum: Double, depthSum: Double, squaredReturnSum: Double, midFirst: Double, quoteCount: Int,
        windowNs: Int64
    ) -> FeatureVector {
        let mid = (ask + bid) / 2
        let spreadBps = ratio(ask - bid, mid) * 1e4
        let imbalance = ratio(bidSize - askSize, bidSize + askSize)

        // Each side sums its given levels; a side without levels uses its top-of-book size, so without
        // depth this is exactly `imbalance`.
        let bidDepth = levelSizeSum(bids) ?? bidSize
        let askDepth = levelSizeSum(asks) ?? askSize
        let depthImbalance = ratio(bidDepth - askDepth, bidDepth + askDepth)

        // Mean of (bid_size + ask_size)/2 over the quotes in W.
        let meanHalfDepth = depthSum / Double(2 * quoteCount)
        let ofiNorm = ratio(ofiSum, meanHalfDepth)

        let realizedVolBps = squaredReturnSum.squareRoot() * 1e4
        let midRatio = ratio(mid, midFirst)
        let midReturnBps = midRatio == 0 ? 0 : log(midRatio) * 1e4
        let tickRate = Double(quoteCount) / (Double(windowNs) / 1e9)

        let sizeSum = bidSize + askSize
        let microprice = sizeSum == 0 ? mid : (bid * askSize + ask * bidSize) / sizeSum
        let micropriceOffsetBps = ratio(microprice - mid, mid) * 1e4

        return FeatureVector(
            spreadBps: spreadBps, imbalance: imbalance, depthImbalance: depthImbalance, ofiNorm: ofiNorm,
            realizedVolBps: realizedVolBps, midReturnBps: midReturnBps, tickRate: tickRate,
            micropriceOffsetBps: micropriceOffsetBps)
    }

    /// Σ sizes of the given levels; nil when none are given.
    @inline(__always)
    static func levelSizeSum(_ levels: [[Double]]?) -> Double? {
        guard let levels, !levels.isEmpty else { return nil }
        var sum = 0.0
        for level in levels where level.count >= 2 { sum += level[1] }
        return sum
    }
}
