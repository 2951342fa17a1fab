/// One side of a price-level book, kept sorted best-first so the top N levels are a prefix.
/// Updates are a binary search plus one memmove; no per-update allocation once the side is warm.
struct BookSide: Sendable {
    /// Bids descending, asks ascending.
    let descending: Bool
    private(set) var prices: [Double] = []
    private(set) var sizes: [Double] = []

    init(descending: Bool) { self.descending = descending }

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
struct BinanceOrderBook: Sendable {
    enum State: Sendable, Equatable {
        /// No snapshot yet (or lost sync): diffs are buffered.
        case awaitingSnapshot
        /// The snapshot is the book; the next diff must straddle its `lastUpdateId`.
        case snapshotApplied(lastUpdateId: Int64)
        case synced(lastU: Int64)
    }

    struct Diff: Sendable {
        var firstU: Int64
        var lastU: Int64
        var previousU: Int64?
        var bids: [(Double, Double)]
        var asks: [(Double, Double)]
    }

    private(set) var state: State = .awaitingSnapshot
    private(set) var bids = BookSide(descending: true)
    private(set) var asks = BookSide(descending: false)
    private var buffer: [Diff] = []
    /// Bound on buffered diffs while waiting for a snapshot (≈ 100 s of 100 ms diffs).
    private let maxBuffered = 1000
    private(set) var resyncs = 0

    var isSynced: Bool { if case .awaitingSnapshot = state { false } else { true } }

    enum DiffOutcome: Equatable { case applied, buffered, stale, gap }

    mutating func apply(_ diff: Diff) -> DiffOutcome {
        switch state {
        case .awaitingSnapshot:
            if buffer.count == maxBuffered { buffer.removeFirst() }
            buffer.append(diff)
            return .buffered
        case .snapshotApplied(let lastUpdateId):
            if diff.lastU <= lastUpdateId { return .stale }
            // Spot: U <= L+1 <= u. Futures: U <= L <= u. Either way the diff must straddle L.
            guard diff.firstU <= lastUpdateId + 1 else {
                loseSync()
                buffer.append(diff)
                return .gap
            }
            write(diff)
            return .applied
        case .synced(let lastU):
            if diff.lastU <= lastU { return .stale }
            let continues = diff.previousU.map { $0 == lastU } ?? (diff.firstU == lastU + 1)
            guard continues else {
                loseSync()
                buffer.append(diff)
                return .gap
            }
            write(diff)
            return .applied
        }
    }

    mutating func applySnapshot(lastUpdateId: Int64, bids snapshotBids: [(Double, Double)], asks snapshotAsks: [(Double, Double)]) {
        bids.removeAll()
        asks.removeAll()
        for (p, q) in snapshotBids { bids.set(price: p, size: q) }
        for (p, q) in snapshotAsks { asks.set(price: p, size: q) }
        state = .snapshotApplied(lastUpdateId: lastUpdateId)
        let pending = buffer
        buffer.removeAll()
        for diff in pending where apply(diff) == .gap {
            return
        }
    }

    private mutating func write(_ diff: Diff) {
        for (p, q) in diff.bids { bids.set(price: p, size: q) }
        for (p, q) in diff.asks { asks.set(price: p, size: q) }
        state = .synced(lastU: diff.lastU)
    }

    private mutating func loseSync() {
        bids.removeAll()
        asks.removeAll()
        buffer.removeAll()
        state = .awaitingSnapshot
        resyncs += 1
    }
}
