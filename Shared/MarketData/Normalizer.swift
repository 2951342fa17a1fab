import Foundation
import TEModels

/// Why a payload produced no tick. `reason` is a short stable token for metrics and te:dlq
/// (`bad_json`, `unknown_format`, `missing_field:bid`, `non_finite`, `crossed_book`, `negative_price`,
/// `invalid_size`, `invalid_symbol`, `invalid_level`); `detail` says what exactly.
public struct Rejection: Error, Sendable, Equatable, CustomStringConvertible {
    public var reason: String
    public var detail: String
    public init(_ reason: String, _ detail: String) {
        self.reason = reason
        self.detail = detail
    }
    public var description: String { "\(reason): \(detail)" }

    /// Maps `Tick.validated()`'s error onto the reason tokens.
    init(_ error: MessageDecodingError) {
        let r = error.reason
        if r.hasPrefix("missing") {
            self.init("missing_field:\(error.field)", error.description)
        } else if r.contains("finite") {
            self.init("non_finite", error.description)
        } else if r.contains("crossed") {
            self.init("crossed_book", error.description)
        } else if error.field == "symbol" {
            self.init("invalid_symbol", error.description)
        } else if error.field == "bids" || error.field == "asks" {
            self.init("invalid_level", error.description)
        } else if ["bid", "ask", "price"].contains(error.field) {
            self.init("negative_price", error.description)
        } else {
            self.init("invalid_\(error.field)", error.description)
        }
    }
}

/// The outcome of one payload: ticks (possibly none: a depth diff, a snapshot, a heartbeat), or a
/// rejection; plus what happened to a book.
public struct NormalizeResult: Sendable {
    public var ticks: [Tick] = []
    public var rejection: Rejection?
    /// Set when this payload broke a symbol's book sync (a gap): the book is dropped until a new snapshot.
    public var resyncSymbol: String?
    /// The payload was understood and carries no tick by itself (depth diff, snapshot, control message).
    public var absorbed: Bool { rejection == nil && ticks.isEmpty }

    static func rejected(_ r: Rejection) -> NormalizeResult {
        var out = NormalizeResult()
        out.rejection = r
        return out
    }
}

/// Turns Kafka `ticks` payloads (normalized Tick JSON, Binance combined-stream messages and REST depth
/// snapshots, Kraken v1 arrays) into validated `Tick`s. Keeps per-symbol order books so quotes carry the top
/// `depthLevels` levels while a book is in sync. Pure: no I/O, no clock; feed it messages in topic order
/// per symbol.
public struct MarketDataNormalizer: Sendable {
    public var depthLevels: Int
    private var binanceBooks: [String: BinanceDepthSync] = [:]
    private var krakenBooks: [String: KrakenBook] = [:]

    public init(depthLevels: Int = 10) {
        self.depthLevels = depthLevels
    }

    /// Whether the symbol's Binance book is in sync (for tests and diagnostics).
    public func binanceBookState(_ symbol: String) -> BinanceDepthSync.State? { binanceBooks[symbol]?.state }

    /// - Parameters:
    ///   - receiveTsNs: when the data was received (header `ts_ns`, else the Kafka timestamp); becomes `ts_ns`.
    ///   - key: the Kafka key (the symbol); names the symbol of a bare REST depth snapshot.
    public mutating func normalize(payload: [UInt8], receiveTsNs: Int64, key: String?) -> NormalizeResult {
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: Data(payload), options: [])
        } catch {
            return .rejected(Rejection("bad_json", "not valid JSON (\(payload.count) bytes)"))
        }
        do throws(Rejection) {
            var result: NormalizeResult
            if let array = json as? [Any] {
                result = try kraken(array, receiveTsNs: receiveTsNs)
            } else if let object = json as? [String: Any] {
                result = try venueObject(object, receiveTsNs: receiveTsNs, key: key)
            } else {
                throw Rejection("unknown_format", "JSON value is neither an object nor an array")
            }
            for i in result.ticks.indices {
                do {
                    result.ticks[i] = try result.ticks[i].validated()
                } catch {
                    // A message is used whole or not at all.
                    var rejected = NormalizeResult.rejected(Rejection(error))
                    rejected.resyncSymbol = result.resyncSymbol
                    return rejected
                }
            }
            return result
        } catch {
            return .rejected(error)
        }
    }

    // MARK: - Objects: Tick JSON, Binance

    private mutating func venueObject(_ o: [String: Any], receiveTsNs: Int64, key: String?) throws(Rejection) -> NormalizeResult {
        if let stream = o["stream"] as? String, let data = o["data"] as? [String: Any] {
            return try binance(data, stream: stream, receiveTsNs: receiveTsNs)
        }
        if o["lastUpdateId"] != nil {
            return try binanceSnapshot(o, key: key)
        }
        if o["kind"] != nil, o["symbol"] != nil {
            return try tickJSON(o, receiveTsNs: receiveTsNs)
        }
        if o["e"] is String, o["s"] is String {
            return try binance(o, stream: "", receiveTsNs: receiveTsNs)
        }
        if o["event"] != nil || (o["result"] != nil || o["id"] != nil) && o.count <= 2 {
            return NormalizeResult()  // venue control message: heartbeat, subscription status, request reply
        }
        throw Rejection("unknown_format", "JSON object with keys \(o.keys.sorted().prefix(6).joined(separator: ","))")
    }

    private func tickJSON(_ o: [String: Any], receiveTsNs: Int64) throws(Rejection) -> NormalizeResult {
        guard let kindText = o["kind"] as? String, let kind = Tick.Kind(rawValue: kindText) else {
            throw Rejection("invalid_kind", "kind must be quote or trade")
        }
        guard let symbol = o["symbol"] as? String else { throw Rejection("missing_field:symbol", "symbol must be a string") }
        let ts = int64(o["ts_ns"]) ?? receiveTsNs
        func levels(_ name: String) throws(Rejection) -> [[Double]]? {
            guard let raw = o[name] else { return nil }
            guard let rows = raw as? [Any] else { throw Rejection("invalid_level", "\(name) must be [[price,size],…]") }
            return try parseLevels(rows, name)
        }
        var side: Side?
        if let s = o["side"] {
            guard let text = s as? String, let parsed = Side(rawValue: text) else { throw Rejection("invalid_side", "side must be buy or sell") }
            side = parsed
        }
        let tick = Tick(
            symbol: symbol, tsNs: ts, kind: kind,
            bid: try number(o["bid"], "bid"), bidSize: try number(o["bid_size"], "bid_size"),
            ask: try number(o["ask"], "ask"), askSize: try number(o["ask_size"], "ask_size"),
            bids: try levels("bids"), asks: try levels("asks"),
            price: try number(o["price"], "price"), size: try number(o["size"], "size"), side: side,
            venue: o["venue"] as? String, seq: int64(o["seq"]), exchangeTsNs: int64(o["exchange_ts_ns"]))
        return NormalizeResult(ticks: [tick])
    }

    private mutating func binance(_ d: [String: Any], stream: String, receiveTsNs: Int64) throws(Rejection) -> NormalizeResult {
        let event = d["e"] as? String
        let isBookTicker = event == "bookTicker" || stream.hasSuffix("@bookTicker")
        guard let symbol = d["s"] as? String else { throw Rejection("missing_field:symbol", "Binance message without s") }
        if isBookTicker {
            let bid = try required(d["b"], "bid")
            let bidSize = try required(d["B"], "bid_size")
            let ask = try required(d["a"], "ask")
            let askSize = try required(d["A"], "ask_size")
            var tick = Tick.quote(
                symbol: symbol, tsNs: receiveTsNs, bid: bid, bidSize: bidSize, ask: ask, askSize: askSize, venue: "binance")
            tick.seq = int64(d["u"])
            tick.exchangeTsNs = int64(d["E"]).map { $0 * 1_000_000 }
            if let sync = binanceBooks[symbol], sync.isSynced, depthLevels > 0 {
                // Level 0 is the bookTicker's own top (real time); the diff book (100 ms) supplies the levels
                // behind it, so the levels never contradict the quote's bid/ask.
                tick.bids = [[bid, bidSize]] + sync.book.bids.top(depthLevels - 1, worseThan: bid)
                tick.asks = [[ask, askSize]] + sync.book.asks.top(depthLevels - 1, worseThan: ask)
            }
            return NormalizeResult(ticks: [tick])
        }
        switch event {
        case "trade", "aggTrade":
            let price = try required(d["p"], "price")
            let size = try required(d["q"], "size")
            guard let buyerIsMaker = d["m"] as? Bool else { throw Rejection("missing_field:side", "trade without m") }
            var tick = Tick.trade(
                symbol: symbol, tsNs: receiveTsNs, price: price, size: size, side: buyerIsMaker ? .sell : .buy, venue: "binance")
            tick.seq = int64(d["t"]) ?? int64(d["a"])
            tick.exchangeTsNs = int64(d["T"]).map { $0 * 1_000_000 }
            return NormalizeResult(ticks: [tick])
        case "depthUpdate":
            guard let first = int64(d["U"]) else { throw Rejection("missing_field:U", "depthUpdate without U") }
            guard let final = int64(d["u"]) else { throw Rejection("missing_field:u", "depthUpdate without u") }
            let diff = DepthDiff(
                firstUpdateID: first, finalUpdateID: final, previousFinalUpdateID: int64(d["pu"]),
                bids: try parseLevels(d["b"] as? [Any] ?? [], "bids"), asks: try parseLevels(d["a"] as? [Any] ?? [], "asks"))
            var result = NormalizeResult()
            if case .gap = binanceBooks[symbol, default: BinanceDepthSync()].apply(diff) { result.resyncSymbol = symbol }
            return result
        default:
            throw Rejection("unknown_format", "Binance event \(event ?? stream)")
        }
    }

    private mutating func binanceSnapshot(_ o: [String: Any], key: String?) throws(Rejection) -> NormalizeResult {
        guard let symbol = key, !symbol.isEmpty else {
            throw Rejection("missing_field:symbol", "a REST depth snapshot names its symbol only in the Kafka key")
        }
        guard let last = int64(o["lastUpdateId"]) else { throw Rejection("missing_field:lastUpdateId", "not an integer") }
        let bids = try parseLevels(o["bids"] as? [Any] ?? [], "bids")
        let asks = try parseLevels(o["asks"] as? [Any] ?? [], "asks")
        var result = NormalizeResult()
        if case .gap = binanceBooks[symbol, default: BinanceDepthSync()].applySnapshot(lastUpdateID: last, bids: bids, asks: asks) {
            result.resyncSymbol = symbol
        }
        return result
    }

    // MARK: - Kraken v1 arrays: [channelID, payload…, channelName, pair]

    private mutating func kraken(_ a: [Any], receiveTsNs: Int64) throws(Rejection) -> NormalizeResult {
        guard a.count >= 4, let channel = a[a.count - 2] as? String, let pair = a[a.count - 1] as? String else {
            throw Rejection("unknown_format", "array that is not a Kraken v1 channel message")
        }
        let payloads = a[1..<(a.count - 2)]
        if channel.hasPrefix("book") {
            let depth = Int(channel.split(separator: "-").last ?? "") ?? 10
            var book = krakenBooks[pair] ?? KrakenBook()
            for case let p as [String: Any] in payloads {
                if let asks = p["as"] as? [Any], let bids = p["bs"] as? [Any] {
                    book.levels.clear()
                    for l in try parseLevels(bids, "bs", extraFields: true) { book.levels.bids.set(price: l[0], size: l[1]) }
                    for l in try parseLevels(asks, "as", extraFields: true) { book.levels.asks.set(price: l[0], size: l[1]) }
                    book.synced = true
                    continue
                }
                for l in try parseLevels(p["b"] as? [Any] ?? [], "b", extraFields: true) { book.levels.bids.set(price: l[0], size: l[1]) }
                for l in try parseLevels(p["a"] as? [Any] ?? [], "a", extraFields: true) { book.levels.asks.set(price: l[0], size: l[1]) }
            }
            book.levels.bids.truncate(to: depth)
            book.levels.asks.truncate(to: depth)
            krakenBooks[pair] = book
            // An update before the snapshot has nothing to apply to; the book is not served until then.
            guard book.synced, let bid = book.levels.bids.best, let ask = book.levels.asks.best else { return NormalizeResult() }
            let tick = Tick.quote(
                symbol: pair, tsNs: receiveTsNs, bid: bid.price, bidSize: bid.size, ask: ask.price, askSize: ask.size,
                bids: depthLevels > 0 ? book.levels.bids.top(depthLevels) : nil,
                asks: depthLevels > 0 ? book.levels.asks.top(depthLevels) : nil, venue: "kraken")
            return NormalizeResult(ticks: [tick])
        }
        switch channel {
        case "ticker":
            guard let t = payloads.first as? [String: Any] else { throw Rejection("unknown_format", "Kraken ticker without payload") }
            guard let b = t["b"] as? [Any], b.count >= 3 else { throw Rejection("missing_field:bid", "Kraken ticker without b") }
            guard let a = t["a"] as? [Any], a.count >= 3 else { throw Rejection("missing_field:ask", "Kraken ticker without a") }
            let tick = Tick.quote(
                symbol: pair, tsNs: receiveTsNs, bid: try required(b[0], "bid"), bidSize: try required(b[2], "bid_size"),
                ask: try required(a[0], "ask"), askSize: try required(a[2], "ask_size"), venue: "kraken")
            return NormalizeResult(ticks: [tick])
        case "spread":
            guard let s = payloads.first as? [Any], s.count >= 5 else { throw Rejection("unknown_format", "Kraken spread payload") }
            var tick = Tick.quote(
                symbol: pair, tsNs: receiveTsNs, bid: try required(s[0], "bid"), bidSize: try required(s[3], "bid_size"),
                ask: try required(s[1], "ask"), askSize: try required(s[4], "ask_size"), venue: "kraken")
            tick.exchangeTsNs = try number(s[2], "exchange_ts_ns").map { Int64($0 * 1e9) }
            return NormalizeResult(ticks: [tick])
        case "trade":
            guard let trades = payloads.first as? [Any] else { throw Rejection("unknown_format", "Kraken trade without payload") }
            var result = NormalizeResult()
            for case let t as [Any] in trades {
                guard t.count >= 4 else { throw Rejection("unknown_format", "Kraken trade entry too short") }
                guard let sideText = t[3] as? String, sideText == "b" || sideText == "s" else {
                    throw Rejection("missing_field:side", "Kraken trade side must be b or s")
                }
                var tick = Tick.trade(
                    symbol: pair, tsNs: receiveTsNs, price: try required(t[0], "price"), size: try required(t[1], "size"),
                    side: sideText == "b" ? .buy : .sell, venue: "kraken")
                tick.exchangeTsNs = try number(t[2], "exchange_ts_ns").map { Int64($0 * 1e9) }
                result.ticks.append(tick)
            }
            return result
        default:
            throw Rejection("unknown_format", "Kraken channel \(channel)")
        }
    }
}

private struct KrakenBook: Sendable {
    var levels = OrderBook()
    var synced = false
}

// MARK: - Field parsing: venues send numbers as JSON strings

/// A number from a JSON string or number; nil when absent.
private func number(_ value: Any?, _ field: String) throws(Rejection) -> Double? {
    switch value {
    case nil, is NSNull: return nil
    case let s as String:
        guard let d = Double(s) else { throw Rejection("invalid_\(field)", "\(field) is not a number: \"\(s.prefix(40))\"") }
        return d
    case let n as NSNumber:
        return n.doubleValue
    default:
        throw Rejection("invalid_\(field)", "\(field) is not a number")
    }
}

private func required(_ value: Any?, _ field: String) throws(Rejection) -> Double {
    guard let d = try number(value, field) else { throw Rejection("missing_field:\(field)", "\(field) is missing") }
    return d
}

private func int64(_ value: Any?) -> Int64? {
    switch value {
    case let n as NSNumber: return n.int64Value
    case let s as String: return Int64(s)
    default: return nil
    }
}

/// `[[price, size, …], …]` with string or number entries.
private func parseLevels(_ rows: [Any], _ field: String, extraFields: Bool = true) throws(Rejection) -> [[Double]] {
    var out: [[Double]] = []
    out.reserveCapacity(rows.count)
    for row in rows {
        guard let pair = row as? [Any], pair.count >= 2,
            let price = try number(pair[0], field), let size = try number(pair[1], field)
        else { throw Rejection("invalid_level", "\(field) entries must be [price, size]") }
        guard price.isFinite, size.isFinite else { throw Rejection("non_finite", "\(field) level is not finite") }
        guard price > 0, size >= 0 else { throw Rejection("negative_price", "\(field) level [\(price), \(size)]") }
        out.append([price, size])
    }
    return out
}
