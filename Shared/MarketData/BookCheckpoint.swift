/// A local order book as one line of text, so ingest can store it in Redis in the same atomic script as
/// the offsets it belongs to and continue after a restart exactly where it was (same depth, same sync
/// state, same buffered diffs). Doubles are written in Swift's shortest round-trip form, so a restored
/// book is bit-identical.
///
/// Grammar (tokens separated by one space):
///
///     binance 1 STATE RESYNCS SIDE SIDE DIFFS      a Binance book (bids, then asks)
///     kraken 1 SIDE SIDE                           a Kraken book
///     STATE = awaiting | out SINCE_NS OVERDUE(0|1) | snapshot LAST_UPDATE_ID | synced LAST_U
///     SIDE  = N (PRICE SIZE){N}                    best first
///     DIFFS = N (FIRST_U LAST_U PREVIOUS_U|- TS_NS SIDE SIDE){N}   buffered while waiting for a snapshot
///
/// Version 1 is the only one; a reader refuses anything else (`nil`), and ingest then starts that book
/// afresh (it waits for the next snapshot) rather than guess.
enum BookCheckpoint {
    static func encode(_ book: BinanceOrderBook) -> String {
        var out = "binance 1 "
        out.reserveCapacity(32 * (book.bids.count + book.asks.count) + 64)
        switch book.state {
        case .awaitingSnapshot: out += "awaiting"
        case .outOfSync(let since, let overdue): out += "out \(since) \(overdue ? 1 : 0)"
        case .snapshotApplied(let id): out += "snapshot \(id)"
        case .synced(let lastU): out += "synced \(lastU)"
        }
        out += " \(book.resyncs)"
        append(book.bids.prices, book.bids.sizes, to: &out)
        append(book.asks.prices, book.asks.sizes, to: &out)
        out += " \(book.buffer.count)"
        for diff in book.buffer {
            out += " \(diff.firstU) \(diff.lastU) \(diff.previousU.map(String.init) ?? "-") \(diff.tsNs)"
            append(diff.bids.map(\.price), diff.bids.map(\.size), to: &out)
            append(diff.asks.map(\.price), diff.asks.map(\.size), to: &out)
        }
        return out
    }

    static func encodeKraken(bids: BookSide, asks: BookSide) -> String {
        var out = "kraken 1"
        out.reserveCapacity(32 * (bids.count + asks.count) + 16)
        append(bids.prices, bids.sizes, to: &out)
        append(asks.prices, asks.sizes, to: &out)
        return out
    }

    enum Decoded {
        case binance(BinanceOrderBook)
        case kraken(bids: BookSide, asks: BookSide)
    }

    /// Nil when `text` is not a version-1 checkpoint of a consistent book.
    static func decode(_ text: Substring, snapshotTimeoutNs: Int64) -> Decoded? {
        var tokens = Tokens(text)
        switch (tokens.next(), tokens.next()) {
        case ("binance", "1"):
            let state: BinanceOrderBook.State
            switch tokens.next() {
            case "awaiting": state = .awaitingSnapshot
            case "out":
                guard let since = tokens.int(), let overdue = tokens.int(), overdue == 0 || overdue == 1 else {
                    return nil
                }
                state = .outOfSync(sinceNs: since, overdue: overdue == 1)
            case "snapshot":
                guard let id = tokens.int() else { return nil }
                state = .snapshotApplied(lastUpdateId: id)
            case "synced":
                guard let lastU = tokens.int() else { return nil }
                state = .synced(lastU: lastU)
            default: return nil
            }
            guard let resyncs = tokens.int(), let bids = tokens.side(descending: true),
                let asks = tokens.side(descending: false), let count = tokens.int(), count >= 0,
                count <= BinanceOrderBook.maxBuffered
            else { return nil }
            var buffer: [BinanceOrderBook.Diff] = []
            buffer.reserveCapacity(Int(count))
            for _ in 0..<count {
                guard let firstU = tokens.int(), let lastU = tokens.int(), let previous = tokens.next(),
                    let tsNs = tokens.int(), let diffBids = tokens.levels(), let diffAsks = tokens.levels()
                else { return nil }
                let previousU: Int64?
                if previous == "-" {
                    previousU = nil
                } else if let p = Int64(previous) {
                    previousU = p
                } else {
                    return nil
                }
                buffer.append(
                    .init(
                        firstU: firstU, lastU: lastU, previousU: previousU, tsNs: tsNs, bids: diffBids, asks: diffAsks))
            }
            guard tokens.next() == nil else { return nil }
            return .binance(
                BinanceOrderBook(
                    state: state, bids: bids, asks: asks, buffer: buffer, resyncs: Int(resyncs),
                    snapshotTimeoutNs: snapshotTimeoutNs))
        case ("kraken", "1"):
            guard let bids = tokens.side(descending: true), let asks = tokens.side(descending: false),
                tokens.next() == nil
            else { return nil }
            return .kraken(bids: bids, asks: asks)
        default:
            return nil
        }
    }

    private static func append(_ prices: [Double], _ sizes: [Double], to out: inout String) {
        out += " \(prices.count)"
        for (price, size) in zip(prices, sizes) {
            out += " "
            out += price.description
            out += " "
            out += size.description
        }
    }

    private struct Tokens {
        private var parts: IndexingIterator<[Substring]>

        init(_ text: Substring) { parts = text.split(separator: " ", omittingEmptySubsequences: false).makeIterator() }

        mutating func next() -> Substring? { parts.next() }
        mutating func int() -> Int64? { next().flatMap { Int64($0) } }
        mutating func double() -> Double? { next().flatMap { Double($0) }.flatMap { $0.isFinite ? $0 : nil } }

        mutating func levels() -> [BinanceOrderBook.Level]? {
            guard let count = int(), count >= 0 else { return nil }
            var out: [BinanceOrderBook.Level] = []
            for _ in 0..<count {
                guard let price = double(), let size = double(), price > 0, size >= 0 else { return nil }
                out.append(.init(price: price, size: size))
            }
            return out
        }

        mutating func side(descending: Bool) -> BookSide? {
            guard let levels = levels() else { return nil }
            return BookSide(descending: descending, prices: levels.map(\.price), sizes: levels.map(\.size))
        }
    }
}
