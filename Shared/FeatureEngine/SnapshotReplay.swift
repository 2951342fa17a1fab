import TEModels

/// Rebuilds one feature snapshot from the ticks around it (`te explain`): the symbol's quotes and trades in
/// the window (t − W, t], the previous quote the per-quote terms pair with, and the snapshot the same
/// `FeatureEngine` computes for the quote at t. Pure: the caller brings the ticks (from `te:ticks` or a
/// recording).
///
/// Only the previous quote and the window matter: the engine's sums are exact, so a fresh engine started at
/// the previous quote gives the same bits as one that has run since the symbol's first tick.
public struct SnapshotReplay<Origin: Sendable>: Sendable {
    public struct Entry: Sendable {
        public var tick: Tick
        /// Where the tick came from (e.g. its `te:ticks` entry id and `src`).
        public var origin: Origin

        public init(tick: Tick, origin: Origin) {
            self.tick = tick
            self.origin = origin
        }
    }

    public let symbol: String
    /// t: the snapshot's `ts_ns` (its quote's receive time).
    public let tsNs: Int64
    public let windowNs: Int64
    /// The symbol's ticks with ts_ns ≤ t, newest first.
    private var newestFirst: [Entry] = []
    /// The ts_ns of the newest quote fed at or before t − W (the previous quote, unless it came late).
    private var firstQuoteBeforeWindow: Int64?
    /// True once, after a quote Q at or before t − W, a tick at or before ts(Q) − W has been fed. Older ticks
    /// cannot change the snapshot: the quote before the window that matters is the newest one the service
    /// applied at or before t − W, and the extra W of history lets the engine drop a late tick (one older
    /// than its symbol's latest, which the service dropped) instead of taking it for that quote. Correct for
    /// ticks up to W late; `ingest` writes each symbol's ticks in receive order, so none are late there.
    public private(set) var complete = false

    public init(symbol: String, tsNs: Int64, windowNs: Int64) {
        self.symbol = symbol
        self.tsNs = tsNs
        self.windowNs = windowNs
    }

    /// Feeds ticks newest first (a backwards scan). Other symbols' ticks and ticks after t are skipped; the
    /// scan can stop once `complete`.
    public mutating func feedBackwards(_ entry: Entry) {
        guard !complete, entry.tick.symbol == symbol, entry.tick.tsNs <= tsNs else { return }
        newestFirst.append(entry)
        if let q = firstQuoteBeforeWindow {
            if entry.tick.tsNs <= q &- windowNs { complete = true }
        } else if entry.tick.kind == .quote, entry.tick.tsNs <= tsNs &- windowNs {
            firstQuoteBeforeWindow = entry.tick.tsNs
        }
    }

    public struct Result: Sendable {
        /// The quote before the window that the first quote in it pairs with (the newest applied one at or
        /// before t − W); nil when none was fed.
        public var previousQuote: Entry?
        /// Quotes and trades with ts_ns in (t − W, t], oldest first.
        public var quotes: [Entry]
        public var trades: [Entry]
        /// The engine's snapshot for the quote at t; nil when no quote has ts_ns = t.
        public var snapshot: FeatureSnapshot?
        /// Quotes at exactly t (more than one when one message gave several); the snapshot is that of the
        /// one matching `recorded`, else the last.
        public var quotesAtT: Int
    }

    /// Runs the engine over what was fed, oldest first. `recorded` picks among several quotes at t.
    public func result(recorded: FeatureVector? = nil) -> Result {
        var engine = FeatureEngine(windowNs: windowNs)
        var candidates: [FeatureSnapshot] = []
        var previous: Entry?
        var quotes: [Entry] = []
        var trades: [Entry] = []
        let edge = tsNs &- windowNs
        for entry in newestFirst.reversed() {
            let outcome = engine.apply(entry.tick)
            switch outcome {
            case .droppedOutOfOrder, .rejected: continue  // the service skipped it too
            case .snapshot(let s) where entry.tick.tsNs == tsNs: candidates.append(s)
            case .snapshot, .tradeApplied: break
            }
            if entry.tick.tsNs > edge {
                if entry.tick.kind == .quote { quotes.append(entry) } else { trades.append(entry) }
            } else if entry.tick.kind == .quote {
                previous = entry
            }
        }
        let chosen =
            candidates.first { s in recorded.map { FeatureBits.equal(s.features, $0) } ?? false } ?? candidates.last
        return Result(
            previousQuote: previous, quotes: quotes, trades: trades, snapshot: chosen, quotesAtT: candidates.count)
    }
}

/// The FP32 vector the model gets (the gateway sends `Float(feature)`), compared bit for bit.
public enum FeatureBits {
    public static func fp32(_ vector: FeatureVector) -> [Float] { vector.values.map { Float($0) } }

    public static func equal(_ a: FeatureVector, _ b: FeatureVector) -> Bool {
        zip(fp32(a), fp32(b)).allSatisfy { $0.bitPattern == $1.bitPattern }
    }
}
