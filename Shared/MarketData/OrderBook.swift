/// One side of a price-level book, kept sorted best-first so the top N levels are a prefix.
/// Updates are a binary search plus one memmove; no per-update allocation once the side is warm.
struct BookSide: Sendable, Equatable {
    /// Bids descending, asks ascending.
    let descending: Bool
    private(set) var prices: [Double] = []
    private(set) var sizes: [Double] = []

    init(descending: Bool) { self.descending = descending }

    /// A side restored from a checkpoint; nil unless the prices are strictly best-first and the sizes
    /// positive (what `set` maintains), so a damaged checkpoint cannot make a book that `set` would corrupt.
    init?(descending: Bool, prices: [Double], sizes: [Double]) {
        guard prices.count == sizes.count, sizes.allSatisfy({ $0 > 0 && $0.isFinite }),
            zip(prices, prices.dropFirst()).allSatisfy({ descending ? $0 > $1 : $0 < $1 })
        else { return nil }
        self.descending = descending
        self.prices = prices
        self.sizes = sizes
    }

    var isEmpty: Bool { prices.isEmpty }
    var count: Int { prices.count }

    mutating func removeAll() {
        prices.removeAll(keepingCapacity: true)
        sizes.removeAll(keepingCapacity: true)
    }

    /// Index of the first level that is not better than `price`.
    private func insertionIndex(_ price: Double) -> Int {
        var lo = 0
        var hi = prices.count
        while lo < hi {
            let mid = (lo + hi) / 2
            let better = descending ? prices[mid] > price : prices[mid] < price
            if better { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// Sets a level; size 0 removes it (Binance and Kraken semantics).
    mutating func set(price: Double, size: Double) {
        let i = insertionIndex(price)
        let exists = i < prices.count && prices[i] == price
        if size == 0 {
            if exists {
                prices.remove(at: i)
                sizes.remove(at: i)
            }
        } else if exists {
            sizes[i] = size
        } else {
            prices.insert(price, at: i)
            sizes.insert(size, at: i)
        }
    }

    /// Up to `limit` levels strictly worse than `best` (which the caller supplies from the top-of-book feed).
    func levels(after best: Double, limit: Int) -> [[Double]] {
        var out: [[Double]] = []
        out.reserveCapacity(limit)
        var i = insertionIndex(best)
        if i < prices.count, prices[i] == best { i += 1 }
        while i < prices.count, out.count < limit {
            out.append([prices[i], sizes[i]])
            i += 1
        }
        return out
    }

    func top(_ limit: Int) -> [[Double]] {
        (0..<min(limit, prices.count)).map { [prices[$0], sizes[$0]] }
    }

    var best: (price: Double, size: Double)? { prices.isEmpty ? nil : (prices[0], sizes[0]) }
}

/// A Binance order book kept by the venue's documented sync rules
/// (https://binance-docs.github.io/apidocs/spot/en/#how-to-manage-a-local-order-book-correctly and the
/// USD-M futures equivalent): diffs are buffered until a REST snapshot arrives; diffs older than the
/// snapshot are dropped; the first applied diff must straddle `lastUpdateId`; afterwards every diff must
/// continue the sequence (spot: `U == previous u + 1`; futures: `pu == previous u`). A gap drops the
/// book and waits for the next snapshot: quotes then carry no depth rather than a wrong one.
///
/// Out of sync after a gap, the book says so once more if no snapshot came within `snapshotTimeoutNs` of
/// receive time (measured on the diffs' own receive times, not the wall clock, so a replay and a restart
/// see the same events). All of its state is a value (`checkpoint`), so ingest can store it with the
/// offsets it belongs to and a restart continues exactly where the book was.
struct BinanceOrderBook: Sendable, Equatable {
    enum State: Sendable, Equatable {
        /// No snapshot yet: diffs are buffered.
        case awaitingSnapshot
        /// Lost sync at a gap (receive time `sinceNs`): no depth, diffs are buffered until the next snapshot;
        /// `overdue` once the wait passed the timeout (reported once).
        case outOfSync(sinceNs: Int64, overdue: Bool)
        /// The snapshot is the book; the next diff must straddle its `lastUpdateId`.
        case snapshotApplied(lastUpdateId: Int64)
        case synced(lastU: Int64)
    }

    struct Diff: Sendable, Equatable {
        var firstU: Int64
        var lastU: Int64
        var previousU: Int64?
        /// Receive time of the diff's message.
        var tsNs: Int64
        var bids: [Level]
        var asks: [Level]
    }

    struct Level: Sendable, Equatable {
        var price: Double
        var size: Double
    }

    /// What a diff did. `gap` dropped the book; `snapshotOverdue` is the one diff, buffered while out of
    /// sync, past the snapshot timeout.
    enum DiffOutcome: Sendable, Equatable {
        case applied, buffered, stale
        case gap(expectedAfter: Int64)
        case snapshotOverdue(waitedNs: Int64)
    }

    /// What a snapshot did: `resynced` when it ended an out-of-sync wait, `gap` when the diffs buffered
    /// behind it do not connect to it (the book is dropped again).
    enum SnapshotOutcome: Sendable, Equatable {
        case synced
        case resynced(waitedNs: Int64)
        case gap(expectedAfter: Int64)
    }

    static let defaultSnapshotTimeoutNs = MarketNormalizer.defaultSnapshotTimeoutNs

    private(set) var state: State = .awaitingSnapshot
    private(set) var bids = BookSide(descending: true)
    private(set) var asks = BookSide(descending: false)
    private(set) var buffer: [Diff] = []
    /// Bound on buffered diffs while waiting for a snapshot (≈ 100 s of 100 ms diffs).
    static let maxBuffered = 1000
    /// Gaps so far.
    private(set) var resyncs = 0
    let snapshotTimeoutNs: Int64

    init(snapshotTimeoutNs: Int64 = defaultSnapshotTimeoutNs) {
        self.snapshotTimeoutNs = snapshotTimeoutNs
    }

    /// A book as a checkpoint recorded it (`BookCheckpoint`).
    init(state: State, bids: BookSide, asks: BookSide, buffer: [Diff], resyncs: Int, snapshotTimeoutNs: Int64) {
        self.state = state
        self.bids = bids
        self.asks = asks
        self.buffer = buffer
        self.resyncs = resyncs
        self.snapshotTimeoutNs = snapshotTimeoutNs
    }

    /// Whether quotes may carry depth from this book.
    var isSynced: Bool {
        switch state {
        case .awaitingSnapshot, .outOfSync: false
        case .snapshotApplied, .synced: true
        }
    }

    mutating func apply(_ diff: Diff) -> DiffOutcome {
        switch state {
        case .awaitingSnapshot:
            bufferDiff(diff)
            return .buffered
        case .outOfSync(let sinceNs, let overdue):
            bufferDiff(diff)
            let waited = diff.tsNs - sinceNs
            guard !overdue, waited >= snapshotTimeoutNs else { return .buffered }
            state = .outOfSync(sinceNs: sinceNs, overdue: true)
            return .snapshotOverdue(waitedNs: waited)
        case .snapshotApplied(let lastUpdateId):
            if diff.lastU <= lastUpdateId { return .stale }
            // Spot: U <= L+1 <= u. Futures: U <= L <= u. Either way the diff must straddle L.
            guard diff.firstU <= lastUpdateId + 1 else { return loseSync(at: diff, expectedAfter: lastUpdateId) }
            write(diff)
            return .applied
        case .synced(let lastU):
            if diff.lastU <= lastU { return .stale }
            let continues = diff.previousU.map { $0 == lastU } ?? (diff.firstU == lastU + 1)
            guard continues else { return loseSync(at: diff, expectedAfter: lastU) }
            write(diff)
            return .applied
        }
    }

    /// `tsNs`: the snapshot message's receive time.
    mutating func applySnapshot(
        lastUpdateId: Int64, tsNs: Int64, bids snapshotBids: [Level], asks snapshotAsks: [Level]
    )
        -> SnapshotOutcome
    {
        var outcome = SnapshotOutcome.synced
        if case .outOfSync(let sinceNs, _) = state { outcome = .resynced(waitedNs: tsNs - sinceNs) }
        bids.removeAll()
        asks.removeAll()
        for level in snapshotBids { bids.set(price: level.price, size: level.size) }
        for level in snapshotAsks { asks.set(price: level.price, size: level.size) }
        state = .snapshotApplied(lastUpdateId: lastUpdateId)
        let pending = buffer
        buffer.removeAll()
        for diff in pending {
            if case .gap(let expected) = apply(diff) { return .gap(expectedAfter: expected) }
        }
        return outcome
    }

    private mutating func bufferDiff(_ diff: Diff) {
        if buffer.count == Self.maxBuffered { buffer.removeFirst() }
        buffer.append(diff)
    }

    private mutating func write(_ diff: Diff) {
        for level in diff.bids { bids.set(price: level.price, size: level.size) }
        for level in diff.asks { asks.set(price: level.price, size: level.size) }
        state = .synced(lastU: diff.lastU)
    }

    private mutating func loseSync(at diff: Diff, expectedAfter: Int64) -> DiffOutcome {
        bids.removeAll()
        asks.removeAll()
        buffer.removeAll()
        buffer.append(diff)
        state = .outOfSync(sinceNs: diff.tsNs, overdue: false)
        resyncs += 1
        return .gap(expectedAfter: expectedAfter)
    }
}
