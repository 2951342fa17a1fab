import Foundation
import TEModels

/// Why a message could not be used. `code` is low-cardinality (a metric label and the `te:dlq` reason
/// prefix); `detail` says exactly what was wrong.
public struct NormalizeRejection: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: String
    public var detail: String

    public init(code: String, detail: String) {
        self.code = code
        self.detail = detail
    }

    public var description: String { "\(code): \(detail)" }

    /// Every `code` the normalizer gives (metric label values known up front).
    public static let codes = [
        "bad_json", "unknown_format", "missing_field", "non_finite", "crossed_book", "negative_price",
        "non_positive_size", "negative_size", "invalid_value",
    ]
}

public enum NormalizeResult: Sendable, Equatable {
    /// Zero or more ticks (a book diff updates state and yields none; a Kraken book message yields a quote).
    case ticks([Tick])
    /// A valid message that carries no market data (heartbeat, subscription status…).
    case ignored(String)
    case rejected(NormalizeRejection)
}

/// Turns venue messages as they come off the `ticks` topic into normalized `Tick`s (DESIGN.md "Kafka topic
/// `ticks`", "Tick"). Shared by `ingest` and the offline `te features`, so both see the same ticks.
///
/// Formats: normalized Tick JSON; Binance combined-stream `bookTicker`, `trade`, `depthUpdate` and the bare
/// REST depth snapshot (its symbol comes from the message key); Kraken v1 book snapshot/update, ticker and
/// trade arrays. Binance USD-M futures messages (recognised by their futures-only fields) are a different
/// instrument from spot with the same name, so their symbol gets the suffix `-PERP` and venue
/// `binance-usdm`; each keeps its own book.
///
/// Quotes carry the top `depthLevels` of the local book in `bids`/`asks` while the book is in sync: level 0 is
/// the top-of-book from the quote itself, deeper levels come from the book strictly behind it. A quote whose
/// book is not in sync (no snapshot yet, or out of sync after a gap), or with `depthLevels` 0, has no
/// `bids`/`asks` at all: no depth rather than a stale or wrong one.
///
/// The books are the normalizer's only state across messages. `checkpoint(ofBook:)` / `restoreBook` carry
/// one across a restart; `takeChangedBooks` says which changed; `takeBookEvents` what happened to their sync.
public struct MarketNormalizer: Sendable {
    public let depthLevels: Int
    /// Receive time a book may stay out of sync after a gap before `BookEvent.snapshotOverdue`.
    public let snapshotTimeoutNs: Int64
    private var binanceBooks: [String: BinanceOrderBook] = [:]
    private var krakenBooks: [String: (bids: BookSide, asks: BookSide)] = [:]
    private var changedBooks: Set<String> = []
    private var bookEvents: [BookEvent] = []
    /// Bound on undrained events (a caller that never drains them, like `te features`, keeps the newest).
    private static let maxBookEvents = 1000

    /// 10 s: a hundred 100 ms diffs.
    public static let defaultSnapshotTimeoutNs: Int64 = 10_000_000_000

    public init(depthLevels: Int = 10, snapshotTimeoutNs: Int64 = defaultSnapshotTimeoutNs) {
        self.depthLevels = depthLevels
        self.snapshotTimeoutNs = snapshotTimeoutNs
    }

    /// Gaps so far (in a depth diff sequence), per symbol.
    public var resyncs: [String: Int] { binanceBooks.mapValues(\.resyncs) }

    /// Symbols whose book changed since the last call.
    public mutating func takeChangedBooks() -> Set<String> {
        guard !changedBooks.isEmpty else { return [] }
        defer { changedBooks.removeAll(keepingCapacity: true) }
        return changedBooks
    }

    /// What happened to the books' sync since the last call, in order.
    public mutating func takeBookEvents() -> [BookEvent] {
        guard !bookEvents.isEmpty else { return [] }
        defer { bookEvents.removeAll(keepingCapacity: true) }
        return bookEvents
    }

    /// The book of `symbol` as one line of text (`BookCheckpoint`); nil when there is none.
    public func checkpoint(ofBook symbol: String) -> String? {
        if let book = binanceBooks[symbol] { return BookCheckpoint.encode(book) }
        if let book = krakenBooks[symbol] { return BookCheckpoint.encodeKraken(bids: book.bids, asks: book.asks) }
        return nil
    }

    /// Replaces the book of `symbol` with a checkpoint's. False (and no book for `symbol`) when the text is
    /// not a valid checkpoint.
    @discardableResult
    public mutating func restoreBook(_ symbol: String, checkpoint: Substring) -> Bool {
        removeBook(symbol)
        switch BookCheckpoint.decode(checkpoint, snapshotTimeoutNs: snapshotTimeoutNs) {
        case .binance(let book): binanceBooks[symbol] = book
        case .kraken(let bids, let asks): krakenBooks[symbol] = (bids, asks)
        case nil: return false
        }
        return true
    }

    /// Forgets the book of `symbol` (as if no depth message of it had been seen).
    public mutating func removeBook(_ symbol: String) {
        binanceBooks[symbol] = nil
        krakenBooks[symbol] = nil
        changedBooks.remove(symbol)
    }

    private mutating func record(_ symbol: String, _ kind: BookEvent.Kind) {
        if bookEvents.count == Self.maxBookEvents { bookEvents.removeFirst() }
        bookEvents.append(BookEvent(symbol: symbol, kind: kind))
    }

    /// Whether the local book of `symbol` is in sync (Binance) or has a snapshot (Kraken).
    public func hasBook(_ symbol: String) -> Bool {
        binanceBooks[symbol]?.isSynced ?? (krakenBooks[symbol] != nil)
    }

    /// - Parameters:
    ///   - receiveTsNs: the receive time (header `ts_ns`, else the Kafka timestamp): the tick's `ts_ns`.
    ///   - key: the Kafka key (the symbol); names the symbol of a bare Binance depth snapshot.
    public mutating func normalize(payload: [UInt8], receiveTsNs: Int64, key: String?) -> NormalizeResult {
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: Data(payload), options: [])
        } catch {
            return .rejected(NormalizeRejection(code: "bad_json", detail: "not valid JSON"))
        }
        do {
            if let object = json as? [String: Any] {
                return try normalizeObject(object, payload: payload, receiveTsNs: receiveTsNs, key: key)
            }
            if let array = json as? [Any] {
                return try normalizeKraken(array, receiveTsNs: receiveTsNs)
            }
            throw NormalizeRejection(code: "unknown_format", detail: "neither a JSON object nor an array")
        } catch let rejection as NormalizeRejection {
            return .rejected(rejection)
        } catch let error as MessageDecodingError {
            return .rejected(Self.rejection(error))
        } catch {
            return .rejected(NormalizeRejection(code: "unknown_format", detail: "\(error)"))
        }
    }

    public mutating func normalize(payload: String, receiveTsNs: Int64, key: String?) -> NormalizeResult {
        normalize(payload: Array(payload.utf8), receiveTsNs: receiveTsNs, key: key)
    }

    /// Maps a validation failure to a reason code: `missing_field`, `non_finite`, `crossed_book`, `invalid_value`.
    static func rejection(_ error: MessageDecodingError) -> NormalizeRejection {
        let code: String
        switch error.reason {
        case let r where r.hasPrefix("missing"): code = "missing_field"
        case "not a finite number": code = "non_finite"
        case let r where r.hasPrefix("crossed"): code = "crossed_book"
        case "negative", "not positive":
            let isSize = error.field == "size" || error.field.hasSuffix("_size")
            code = isSize ? (error.reason == "negative" ? "negative_size" : "non_positive_size") : "negative_price"
        default: code = "invalid_value"
        }
        return NormalizeRejection(code: code, detail: error.description)
    }

    // MARK: - Objects: Binance and normalized Tick JSON

    private mutating func normalizeObject(
        _ object: [String: Any], payload: [UInt8], receiveTsNs: Int64, key: String?
    ) throws -> NormalizeResult {
        if let stream = object["stream"] as? String {
            guard let data = object["data"] as? [String: Any] else {
                throw MessageDecodingError(field: "data", reason: "missing in a combined-stream message")
            }
            return try normalizeBinance(stream: stream, data, receiveTsNs: receiveTsNs)
        }
        if object["lastUpdateId"] != nil {
            return try binanceSnapshot(object, key: key, receiveTsNs: receiveTsNs)
        }
        if object["event"] is String {
            return .ignored("event \(object["event"] as? String ?? "")")
        }
        if object["kind"] != nil {
            let tick: Tick
            do {
                tick = try JSONDecoder().decode(Tick.self, from: Data(payload))
            } catch {
                throw MessageDecodingError(error)
            }
            return .ticks([try tick.validated()])
        }
        throw NormalizeRejection(code: "unknown_format", detail: "an object that is no Tick, Binance or Kraken message")
    }

    private mutating func normalizeBinance(stream: String, _ data: [String: Any], receiveTsNs: Int64) throws
        -> NormalizeResult
    {
        let channel = stream.split(separator: "@").dropFirst().first.map(String.init) ?? ""
        let futures = Self.isFutures(channel: channel, data)
        let venue = futures ? "binance-usdm" : "binance"
        let symbol = try Self.symbol(try Self.string(data, "s"), futures: futures)
        switch channel {
        case "bookTicker":
            let bid = try Self.number(data, "b")
            let ask = try Self.number(data, "a")
            var tick = Tick.quote(
                symbol: symbol, tsNs: receiveTsNs, bid: bid, bidSize: try Self.number(data, "B"), ask: ask,
                askSize: try Self.number(data, "A"), venue: venue)
            tick.seq = Self.int(data["u"])
            tick.exchangeTsNs = Self.nanoseconds(milliseconds: Self.int(data["T"] ?? data["E"]))
            if depthLevels > 0, let book = binanceBooks[symbol], book.isSynced {
                tick.bids = [[bid, tick.bidSize!]] + book.bids.levels(after: bid, limit: depthLevels - 1)
                tick.asks = [[ask, tick.askSize!]] + book.asks.levels(after: ask, limit: depthLevels - 1)
            }
            return .ticks([try tick.validated()])
        case "trade", "aggTrade":
            let buyerIsMaker = (data["m"] as? Bool) ?? false
            var tick = Tick.trade(
                symbol: symbol, tsNs: receiveTsNs, price: try Self.number(data, "p"), size: try Self.number(data, "q"),
                // The buyer was the maker, so the aggressor sold.
                side: buyerIsMaker ? .sell : .buy, venue: venue)
            tick.seq = Self.int(data["t"] ?? data["a"])
            tick.exchangeTsNs = Self.nanoseconds(milliseconds: Self.int(data["T"]))
            return .ticks([try tick.validated()])
        default:
            guard (data["e"] as? String) == "depthUpdate" else {
                if channel.hasPrefix("kline") || channel.hasPrefix("ticker") || channel.hasPrefix("miniTicker") {
                    return .ignored("binance \(channel)")
                }
                throw NormalizeRejection(code: "unknown_format", detail: "unknown Binance stream \(stream)")
            }
            guard let firstU = Self.int(data["U"]) else { throw MessageDecodingError(field: "U", reason: "missing") }
            guard let lastU = Self.int(data["u"]) else { throw MessageDecodingError(field: "u", reason: "missing") }
            let diff = BinanceOrderBook.Diff(
                firstU: firstU, lastU: lastU, previousU: Self.int(data["pu"]), tsNs: receiveTsNs,
                bids: try Self.levels(data["b"], field: "b"), asks: try Self.levels(data["a"], field: "a"))
            let outcome = binanceBooks[symbol, default: BinanceOrderBook(snapshotTimeoutNs: snapshotTimeoutNs)].apply(diff)
            changedBooks.insert(symbol)
            switch outcome {
            case .applied, .buffered, .stale: break
            case .gap(let expected):
                record(symbol, .gap(expectedAfter: expected, firstU: firstU, lastU: lastU, previousU: diff.previousU))
            case .snapshotOverdue(let waited): record(symbol, .snapshotOverdue(waitedNs: waited))
            }
            return .ignored("depth diff \(outcome)")
        }
    }

    private mutating func binanceSnapshot(_ object: [String: Any], key: String?, receiveTsNs: Int64) throws -> NormalizeResult {
        guard let key, !key.isEmpty else {
            throw MessageDecodingError(field: "symbol", reason: "missing: a bare depth snapshot needs the symbol as its key")
        }
        // Only the futures snapshot carries a transaction time.
        let symbol = try Self.symbol(key, futures: object["T"] != nil)
        guard let lastUpdateId = Self.int(object["lastUpdateId"]) else {
            throw MessageDecodingError(field: "lastUpdateId", reason: "expected an integer")
        }
        let bids = try Self.levels(object["bids"], field: "bids")
        let asks = try Self.levels(object["asks"], field: "asks")
        let outcome = binanceBooks[symbol, default: BinanceOrderBook(snapshotTimeoutNs: snapshotTimeoutNs)].applySnapshot(
            lastUpdateId: lastUpdateId, tsNs: receiveTsNs, bids: bids, asks: asks)
        changedBooks.insert(symbol)
        switch outcome {
        case .synced: break
        case .resynced(let waited): record(symbol, .resynced(waitedNs: waited))
        case .gap(let expected): record(symbol, .gap(expectedAfter: expected, firstU: nil, lastU: nil, previousU: nil))
        }
        return .ignored("depth snapshot")
    }

    static func isFutures(channel: String, _ data: [String: Any]) -> Bool {
        switch channel {
        case "bookTicker": return data["e"] != nil || data["T"] != nil
        case "trade": return data["X"] != nil
        default: return data["pu"] != nil
        }
    }

    static func symbol(_ raw: String, futures: Bool) throws(MessageDecodingError) -> String {
        let symbol = raw.uppercased() + (futures ? "-PERP" : "")
        guard Symbol.isValid(symbol) else { throw MessageDecodingError(field: "symbol", reason: "not a valid symbol: \"\(raw)\"") }
        return symbol
    }

    // MARK: - Kraken v1 arrays: [channelID, payload…, channelName, pair]

    private mutating func normalizeKraken(_ array: [Any], receiveTsNs: Int64) throws -> NormalizeResult {
        guard array.count >= 4, let channel = array[array.count - 2] as? String, let pair = array.last as? String else {
            throw NormalizeRejection(code: "unknown_format", detail: "an array that is no Kraken v1 message")
        }
        guard Symbol.isValid(pair) else { throw MessageDecodingError(field: "pair", reason: "not a valid symbol: \"\(pair)\"") }
        let payloads = array[1..<(array.count - 2)]
        if channel == "trade" {
            guard let trades = payloads.first as? [Any] else { throw MessageDecodingError(field: "trade", reason: "expected an array") }
            var ticks: [Tick] = []
            for (i, entry) in trades.enumerated() {
                guard let fields = entry as? [Any], fields.count >= 4 else {
                    throw MessageDecodingError(field: "trade[\(i)]", reason: "expected [price, volume, time, side, …]")
                }
                var tick = Tick.trade(
                    symbol: pair, tsNs: receiveTsNs, price: try Self.number(fields[0], field: "trade[\(i)].price"),
                    size: try Self.number(fields[1], field: "trade[\(i)].volume"),
                    side: (fields[3] as? String) == "s" ? .sell : .buy, venue: "kraken")
                tick.exchangeTsNs = (try? Self.number(fields[2], field: "time")).flatMap(Self.nanoseconds(seconds:))
                ticks.append(try tick.validated())
            }
            return .ticks(ticks)
        }
        if channel == "ticker" {
            guard let ticker = payloads.first as? [String: Any], let a = ticker["a"] as? [Any], let b = ticker["b"] as? [Any],
                a.count >= 3, b.count >= 3
            else { throw MessageDecodingError(field: "ticker", reason: "expected a and b as [price, wholeLot, lotVolume]") }
            let tick = Tick.quote(
                symbol: pair, tsNs: receiveTsNs, bid: try Self.number(b[0], field: "b.price"),
                bidSize: try Self.number(b[2], field: "b.volume"), ask: try Self.number(a[0], field: "a.price"),
                askSize: try Self.number(a[2], field: "a.volume"), venue: "kraken")
            return .ticks([try tick.validated()])
        }
        if channel.hasPrefix("book") {
            var book = krakenBooks[pair] ?? (BookSide(descending: true), BookSide(descending: false))
            var sawSnapshot = krakenBooks[pair] != nil
            for case let part as [String: Any] in payloads {
                if part["as"] != nil || part["bs"] != nil {
                    book.bids.removeAll()
                    book.asks.removeAll()
                    sawSnapshot = true
                }
                for (field, isBid) in [("bs", true), ("as", false), ("b", true), ("a", false)] {
                    guard let raw = part[field] else { continue }
                    for level in try Self.levels(raw, field: field) {
                        if isBid {
                            book.bids.set(price: level.price, size: level.size)
                        } else {
                            book.asks.set(price: level.price, size: level.size)
                        }
                    }
                }
            }
            guard sawSnapshot else { return .ignored("kraken book update before its snapshot") }
            krakenBooks[pair] = book
            changedBooks.insert(pair)
            guard let bestBid = book.bids.best, let bestAsk = book.asks.best else { return .ignored("kraken book one-sided") }
            let tick = Tick.quote(
                symbol: pair, tsNs: receiveTsNs, bid: bestBid.price, bidSize: bestBid.size, ask: bestAsk.price,
                askSize: bestAsk.size, bids: depthLevels > 0 ? book.bids.top(depthLevels) : nil,
                asks: depthLevels > 0 ? book.asks.top(depthLevels) : nil, venue: "kraken")
            return .ticks([try tick.validated()])
        }
        throw NormalizeRejection(code: "unknown_format", detail: "unknown Kraken channel \(channel)")
    }

    // MARK: - Field access that names the field

    static func string(_ object: [String: Any], _ field: String) throws(MessageDecodingError) -> String {
        guard let value = object[field] else { throw MessageDecodingError(field: field, reason: "missing") }
        guard let string = value as? String else { throw MessageDecodingError(field: field, reason: "expected a string") }
        return string
    }

    static func number(_ object: [String: Any], _ field: String) throws(MessageDecodingError) -> Double {
        guard let value = object[field] else { throw MessageDecodingError(field: field, reason: "missing") }
        return try number(value, field: field)
    }

    /// Venues send prices as strings ("61837.63000000") or numbers.
    static func number(_ value: Any, field: String) throws(MessageDecodingError) -> Double {
        let parsed: Double?
        switch value {
        case let s as String: parsed = Double(s)
        case let n as NSNumber where !(n is Bool): parsed = n.doubleValue
        default: parsed = nil
        }
        guard let parsed else { throw MessageDecodingError(field: field, reason: "expected a number, got \(value)") }
        guard parsed.isFinite else { throw MessageDecodingError(field: field, reason: "not a finite number") }
        return parsed
    }

    static func int(_ value: Any?) -> Int64? {
        switch value {
        case let n as NSNumber where !(n is Bool): return n.int64Value
        case let s as String: return Int64(s)
        default: return nil
        }
    }

    /// An exchange time in nanoseconds; nil when it does not fit (a venue's time is informative only, so an
    /// absurd one is dropped rather than rejecting the tick — or trapping on the overflow).
    static func nanoseconds(milliseconds: Int64?) -> Int64? {
        guard let milliseconds else { return nil }
        let (ns, overflow) = milliseconds.multipliedReportingOverflow(by: 1_000_000)
        return overflow ? nil : ns
    }

    static func nanoseconds(seconds: Double) -> Int64? { Int64(exactly: (seconds * 1e9).rounded()) }

    static func levels(_ raw: Any?, field: String) throws(MessageDecodingError) -> [BinanceOrderBook.Level] {
        guard let raw else { return [] }
        guard let list = raw as? [Any] else { throw MessageDecodingError(field: field, reason: "expected an array of levels") }
        var out: [BinanceOrderBook.Level] = []
        out.reserveCapacity(list.count)
        for (i, entry) in list.enumerated() {
            guard let level = entry as? [Any], level.count >= 2 else {
                throw MessageDecodingError(field: "\(field)[\(i)]", reason: "expected [price, size]")
            }
            let price = try number(level[0], field: "\(field)[\(i)]")
            let size = try number(level[1], field: "\(field)[\(i)]")
            guard price > 0, size >= 0 else {
                throw MessageDecodingError(field: "\(field)[\(i)]", reason: "negative or zero price, or negative size")
            }
            out.append(.init(price: price, size: size))
        }
        return out
    }
}

/// A change in a local book's sync, for ingest's metrics and logs.
public struct BookEvent: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// A depth diff did not continue the sequence after update id `expectedAfter` (nil ids: the gap
        /// was between a new snapshot and the diffs buffered behind it): the book was dropped; quotes carry
        /// no depth until the next snapshot.
        case gap(expectedAfter: Int64, firstU: Int64?, lastU: Int64?, previousU: Int64?)
        /// Out of sync for `waitedNs` of receive time with no snapshot (reported once per gap).
        case snapshotOverdue(waitedNs: Int64)
        /// A snapshot ended an out-of-sync wait of `waitedNs`.
        case resynced(waitedNs: Int64)
    }

    public var symbol: String
    public var kind: Kind
}
