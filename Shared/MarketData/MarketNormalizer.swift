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
        "bad_json", "unknown_format", "missing_field", "non_finite", "crossed_book", "negative_price", "invalid_value",
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
/// the top-of-book from the quote itself, deeper levels come from the book strictly behind it.
public struct MarketNormalizer: Sendable {
    public let depthLevels: Int
    private var binanceBooks: [String: BinanceOrderBook] = [:]
    private var krakenBooks: [String: (bids: BookSide, asks: BookSide)] = [:]

    public init(depthLevels: Int = 10) {
        self.depthLevels = depthLevels
    }

    /// Resyncs so far (gaps in a depth diff sequence), per symbol.
    public var resyncs: [String: Int] { binanceBooks.mapValues(\.resyncs) }

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
        case "negative", "not positive": code = "negative_price"
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
            return try binanceSnapshot(object, key: key)
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
            tick.exchangeTsNs = Self.int(data["T"] ?? data["E"]).map { $0 * 1_000_000 }
            if let book = binanceBooks[symbol], book.isSynced {
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
            tick.exchangeTsNs = Self.int(data["T"]).map { $0 * 1_000_000 }
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
                firstU: firstU, lastU: lastU, previousU: Self.int(data["pu"]),
                bids: try Self.levels(data["b"], field: "b"), asks: try Self.levels(data["a"], field: "a"))
            let outcome = binanceBooks[symbol, default: BinanceOrderBook()].apply(diff)
            return .ignored("depth diff \(outcome)")
        }
    }

    private mutating func binanceSnapshot(_ object: [String: Any], key: String?) throws -> NormalizeResult {
        guard let key, !key.isEmpty else {
            throw MessageDecodingError(field: "symbol", reason: "missing: a bare depth snapshot needs the symbol as its key")
        }
        // Only the futures snapshot carries a transaction time.
        let symbol = try Self.symbol(key, futures: object["T"] != nil)
        guard let lastUpdateId = Self.int(object["lastUpdateId"]) else {
            throw MessageDecodingError(field: "lastUpdateId", reason: "expected an integer")
        }
        binanceBooks[symbol, default: BinanceOrderBook()].applySnapshot(
            lastUpdateId: lastUpdateId, bids: try Self.levels(object["bids"], field: "bids"),
            asks: try Self.levels(object["asks"], field: "asks"))
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
                tick.exchangeTsNs = (try? Self.number(fields[2], field: "time")).map { Int64(($0 * 1e9).rounded()) }
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
                    for (p, q) in try Self.levels(raw, field: field) {
                        if isBid { book.bids.set(price: p, size: q) } else { book.asks.set(price: p, size: q) }
                    }
                }
            }
            guard sawSnapshot else { return .ignored("kraken book update before its snapshot") }
            krakenBooks[pair] = book
            guard let bestBid = book.bids.best, let bestAsk = book.asks.best else { return .ignored("kraken book one-sided") }
            let tick = Tick.quote(
                symbol: pair, tsNs: receiveTsNs, bid: bestBid.price, bidSize: bestBid.size, ask: bestAsk.price,
                askSize: bestAsk.size, bids: book.bids.top(depthLevels), asks: book.asks.top(depthLevels), venue: "kraken")
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

    static func levels(_ raw: Any?, field: String) throws(MessageDecodingError) -> [(Double, Double)] {
        guard let raw else { return [] }
        guard let list = raw as? [Any] else { throw MessageDecodingError(field: field, reason: "expected an array of levels") }
        var out: [(Double, Double)] = []
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
            out.append((price, size))
        }
        return out
    }
}
