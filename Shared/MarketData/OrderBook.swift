/// One side of a price-level book, kept sorted best first so the top N is a prefix (no sort per quote).
struct BookSide {
    /// Bids: descending prices; asks: ascending.
    let descending: Bool
    private(set) var levels: [(price: Double, size: Double)] = []

    init(descending: Bool) { self.descending = descending }

    private func index(of price: Double) -> (Int, found: Bool) {
        var lo = 0
        var hi = levels.count
        while lo < hi {
            let mid = (lo + hi) / 2
            let p = levels[mid].price
            if p == price { return (mid, true) }
            if descending ? p > price : p < price { lo = mid + 1 } else { hi = mid }
        }
        return (lo, false)
    }

    /// Size 0 removes the level.
    mutating func set(price: Double, size: Double) {
        let (i, found) = index(of: price)
        if size == 0 {
            if found { levels.remove(at: i) }
        } else if found {
            levels[i].size = size
        } else {
            levels.insert((price, size), at: i)
        }
    }

    mutating func removeAll() { levels.removeAll(keepingCapacity: true) }

    mutating func truncate(to depth: Int) {
        if levels.count > depth { levels.removeLast(levels.count - depth) }
    }

    var best: (price: Double, size: Double)? { levels.first }

    /// Up to `n` levels as `[[price, size]]`, best first.
    func top(_ n: Int) -> [[Double]] {
        levels.prefix(n).map { [$0.price, $0.size] }
    }

    /// Up to `n` levels strictly worse than `price`, for appending below a top-of-book from another feed.
    func top(_ n: Int, worseThan price: Double) -> [[Double]] {
        var out: [[Double]] = []
        out.reserveCapacity(n)
        for level in levels where descending ? level.price < price : level.price > price {
            out.append([level.price, level.size])
            if out.count == n { break }
        }
        return out
    }
}

/// A price-level book: both sides.
struct OrderBook {
    var bids = BookSide(descending: true)
    var asks = BookSide(descending: false)

    mutating func clear() {
        bids.removeAll()
        asks.removeAll()
    }
}
