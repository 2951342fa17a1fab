/// A Binance `depthUpdate` diff: the update-id range [firstUpdateID (`U`), finalUpdateID (`u`)] and, on
/// USD-M futures, `pu` (the previous diff's `u`).
public struct DepthDiff: Sendable, Equatable {
    public var firstUpdateID: Int64
    public var finalUpdateID: Int64
    public var previousFinalUpdateID: Int64?
    public var bids: [[Double]]
    public var asks: [[Double]]

    public init(firstUpdateID: Int64, finalUpdateID: Int64, previousFinalUpdateID: Int64?, bids: [[Double]], asks: [[Double]]) {
        self.firstUpdateID = firstUpdateID
        self.finalUpdateID = finalUpdateID
        self.previousFinalUpdateID = previousFinalUpdateID
        self.bids = bids
        self.asks = asks
    }
}

/// Keeps one symbol's local order book by Binance's documented rules ("How to manage a local order book
/// correctly"): buffer diffs until a REST snapshot arrives; drop diffs the snapshot already contains; the
/// first applied diff must straddle the snapshot (spot: `U <= lastUpdateId+1 <= u`; futures:
/// `U <= lastUpdateId <= u`); afterwards each diff must follow the previous one (spot: `U == previous u + 1`;
/// futures: `pu == previous u`). A gap clears the book and waits for a new snapshot: depth is not served
/// until then, rather than serving a wrong book.
public struct BinanceDepthSync: Sendable {
    public enum State: Sendable, Equatable {
        /// No usable book; diffs are buffered for the next snapshot.
        case awaitingSnapshot
        /// The book is correct as of `lastUpdateID`; `applied` is false until the first diff after the
        /// snapshot was applied.
        case synced(lastUpdateID: Int64, applied: Bool)
    }

    public enum Event: Sendable, Equatable {
        case none
        /// A snapshot (plus buffered diffs) made the book usable.
        case synced
        /// A diff did not follow the previous one: the book was dropped until the next snapshot.
        case gap(expected: Int64, got: Int64)
    }

    public private(set) var state: State = .awaitingSnapshot
    var book = OrderBook()
    private var buffer: [DepthDiff] = []
    /// Diffs kept while waiting for a snapshot (Binance sends ~10/s; a snapshot is expected within seconds).
    static let bufferLimit = 2_000

    public init() {}

    public var isSynced: Bool {
        if case .synced = state { return true }
        return false
    }

    public mutating func applySnapshot(lastUpdateID: Int64, bids: [[Double]], asks: [[Double]]) -> Event {
        book.clear()
        for level in bids { book.bids.set(price: level[0], size: level[1]) }
        for level in asks { book.asks.set(price: level[0], size: level[1]) }
        state = .synced(lastUpdateID: lastUpdateID, applied: false)
        let pending = buffer
        buffer.removeAll()
        for diff in pending {
            if case .gap(let expected, let got) = apply(diff) {
                return .gap(expected: expected, got: got)
            }
        }
        return .synced
    }

    public mutating func apply(_ diff: DepthDiff) -> Event {
        switch state {
        case .awaitingSnapshot:
            if buffer.count >= Self.bufferLimit { buffer.removeFirst(buffer.count - Self.bufferLimit + 1) }
            buffer.append(diff)
            return .none
        case .synced(let last, let applied):
            let futures = diff.previousFinalUpdateID != nil
            if !applied {
                // Already contained in the snapshot.
                if futures ? diff.finalUpdateID < last : diff.finalUpdateID <= last { return .none }
                let straddles = futures ? diff.firstUpdateID <= last : diff.firstUpdateID <= last + 1
                guard straddles else { return dropBook(expected: futures ? last : last + 1, got: diff.firstUpdateID, keeping: diff) }
            } else if let pu = diff.previousFinalUpdateID {
                if diff.finalUpdateID <= last { return .none }
                guard pu == last else { return dropBook(expected: last, got: pu, keeping: diff) }
            } else {
                if diff.finalUpdateID <= last { return .none }
                guard diff.firstUpdateID == last + 1 else { return dropBook(expected: last + 1, got: diff.firstUpdateID, keeping: diff) }
            }
            for level in diff.bids { book.bids.set(price: level[0], size: level[1]) }
            for level in diff.asks { book.asks.set(price: level[0], size: level[1]) }
            state = .synced(lastUpdateID: diff.finalUpdateID, applied: true)
            return .none
        }
    }

    /// Starts over as Binance prescribes: drop the book, buffer from the diff that broke the chain.
    private mutating func dropBook(expected: Int64, got: Int64, keeping diff: DepthDiff) -> Event {
        book.clear()
        buffer = [diff]
        state = .awaitingSnapshot
        return .gap(expected: expected, got: got)
    }
}
