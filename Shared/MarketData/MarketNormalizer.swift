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
        "non_positive_size", "negative_size", "invalid_value"
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
/// trade arrays; Hyperliquid `l2Book` snapshots and `trades`. Binance USD-M futures messages (recognised by
/// their futures-only fields) are a different instrument from spot with the same name, so their symbol gets
/// the suffix `-PERP` and venue `binance-usdm`; COIN-M contracts keep their names (`BTCUSD_PERP`, venue
/// `binance-coinm`); each keeps its own book. Messages are read with `JSONTape`, our own byte-level parser:
/// no `[String: Any]`, numbers decoded from their text exactly as `Double(String)` does.
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
    /// Reused across messages: its node storage stays allocated.
    private var tape = JSONTape()
    private var symbolCache: [(raw: [UInt8], market: BinanceMarket, symbol: String)] = []
    private static let symbolCacheSize = 16
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
        payload.withUnsafeBufferPointer { bytes in
            guard tape.parse(bytes) else {
                return .rejected(NormalizeRejection(code: "bad_json", detail: "not valid JSON"))
            }
            let json = JSONView(bytes: bytes, tape: tape)
            do {
                if json.kind(json.root) == .object {
                    return try normalizeObject(json, payload: payload, receiveTsNs: receiveTsNs, key: key)
                }
                return try normalizeKraken(json, receiveTsNs: receiveTsNs)
            } catch let rejection as NormalizeRejection {
                return .rejected(rejection)
            } catch let error as MessageDecodingError {
                return .rejected(Self.rejection(error))
            } catch {
                return .rejected(NormalizeRejection(code: "unknown_format", detail: "\(error)"))
            }
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

    typealias Value = JSONView.Value

    // MARK: - Objects: Binance, Hyperliquid and normalized Tick JSON

    private mutating func normalizeObject(_ json: JSONView, payload: [UInt8], receiveTsNs: Int64, key: String?) throws
        -> NormalizeResult
    {
        let root = json.root
        if let stream = json.member(root, "stream"), json.kind(stream) == .string {
            guard let data = json.member(root, "data"), json.kind(data) == .object else {
                throw MessageDecodingError(field: "data", reason: "missing in a combined-stream message")
            }
            return try normalizeBinance(json, stream: stream, data, receiveTsNs: receiveTsNs)
        }
        if json.has(root, "lastUpdateId") {
            return try binanceSnapshot(json, key: key, receiveTsNs: receiveTsNs)
        }
        if let event = json.member(root, "event"), let name = json.string(event) {
            return .ignored("event \(name)")
        }
        if let channel = json.member(root, "channel"), json.kind(channel) == .string {
            return try normalizeHyperliquid(json, channel: channel, receiveTsNs: receiveTsNs)
        }
        if json.has(root, "kind") {
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

    /// The channel of a combined stream name, `<symbol>@<channel>[@<options>]`.
    private enum BinanceChannel {
        case bookTicker, trade, other

        init(_ json: JSONView, _ stream: Value) {
            let bytes = json.rawBytes(stream)
            guard let at = bytes.firstIndex(of: UInt8(ascii: "@")) else {
                self = .other
                return
            }
            let rest = bytes[(at + 1)...]
            let channel = rest.prefix(while: { $0 != UInt8(ascii: "@") })
            if channel.elementsEqual("bookTicker".utf8) {
                self = .bookTicker
            } else if channel.elementsEqual("trade".utf8) || channel.elementsEqual("aggTrade".utf8) {
                self = .trade
            } else {
                self = .other
            }
        }
    }

    private mutating func normalizeBinance(_ json: JSONView, stream: Value, _ data: Value, receiveTsNs: Int64) throws
        -> NormalizeResult
    {
        let channel = BinanceChannel(json, stream)
        let market = Self.binanceMarket(channel: channel, json, data)
        let symbol = try binanceSymbol(json, try Self.stringField(json, data, "s"), market: market)
        switch channel {
        case .bookTicker:
            let bid = try Self.number(json, data, "b")
            let bidSize = try Self.number(json, data, "B")
            let ask = try Self.number(json, data, "a")
            var tick = Tick.quote(
                symbol: symbol, tsNs: receiveTsNs, bid: bid, bidSize: bidSize, ask: ask,
                askSize: try Self.number(json, data, "A"), venue: market.venue)
            tick.seq = Self.int(json, json.member(data, "u"))
            tick.exchangeTsNs = Self.nanoseconds(
                milliseconds: Self.int(json, json.member(data, "T") ?? json.member(data, "E")))
            if depthLevels > 0, let book = binanceBooks[symbol], book.isSynced {
                tick.bids = [[bid, bidSize]] + book.bids.levels(after: bid, limit: depthLevels - 1)
                tick.asks = [[ask, tick.askSize!]] + book.asks.levels(after: ask, limit: depthLevels - 1)
            }
            return .ticks([try tick.validated()])
        case .trade:
            let buyerIsMaker = json.member(data, "m").map { json.kind($0) == .boolTrue } ?? false
            var tick = Tick.trade(
                symbol: symbol, tsNs: receiveTsNs, price: try Self.number(json, data, "p"),
                size: try Self.number(json, data, "q"),
                // The buyer was the maker, so the aggressor sold.
                side: buyerIsMaker ? .sell : .buy, venue: market.venue)
            tick.seq = Self.int(json, json.member(data, "t") ?? json.member(data, "a"))
            tick.exchangeTsNs = Self.nanoseconds(milliseconds: Self.int(json, json.member(data, "T")))
            return .ticks([try tick.validated()])
        case .other:
            guard let event = json.member(data, "e"), json.isString(event, "depthUpdate") else {
                let name = json.string(stream) ?? ""
                let channelName = name.split(separator: "@").dropFirst().first.map(String.init) ?? ""
                if channelName.hasPrefix("kline") || channelName.hasPrefix("ticker")
                    || channelName.hasPrefix("miniTicker")
                {
                    return .ignored("binance \(channelName)")
                }
                throw NormalizeRejection(code: "unknown_format", detail: "unknown Binance stream \(name)")
            }
            guard let firstU = Self.int(json, json.member(data, "U")) else {
                throw MessageDecodingError(field: "U", reason: "missing")
            }
            guard let lastU = Self.int(json, json.member(data, "u")) else {
                throw MessageDecodingError(field: "u", reason: "missing")
            }
            let diff = BinanceOrderBook.Diff(
                firstU: firstU, lastU: lastU, previousU: Self.int(json, json.member(data, "pu")), tsNs: receiveTsNs,
                bids: try Self.levels(json, json.member(data, "b"), field: "b"),
                asks: try Self.levels(json, json.member(data, "a"), field: "a"))
            let outcome = binanceBooks[symbol, default: BinanceOrderBook(snapshotTimeoutNs: snapshotTimeoutNs)].apply(
                diff)
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

    private mutating func binanceSnapshot(_ json: JSONView, key: String?, receiveTsNs: Int64) throws -> NormalizeResult
    {
        guard let key, !key.isEmpty else {
            throw MessageDecodingError(
                field: "symbol", reason: "missing: a bare depth snapshot needs the symbol as its key")
        }
        let root = json.root
        // Only the futures snapshot carries a transaction time; COIN-M names carry an underscore.
        let futures = json.has(root, "T")
        let market: BinanceMarket = key.utf8.contains(UInt8(ascii: "_")) ? .coinM : futures ? .usdM : .spot
        let symbol = try Self.binanceSymbol(key, market: market)
        guard let lastUpdateId = Self.int(json, json.member(root, "lastUpdateId")) else {
            throw MessageDecodingError(field: "lastUpdateId", reason: "expected an integer")
        }
        let bids = try Self.levels(json, json.member(root, "bids"), field: "bids")
        let asks = try Self.levels(json, json.member(root, "asks"), field: "asks")
        let outcome = binanceBooks[symbol, default: BinanceOrderBook(snapshotTimeoutNs: snapshotTimeoutNs)]
            .applySnapshot(
                lastUpdateId: lastUpdateId, tsNs: receiveTsNs, bids: bids, asks: asks)
        changedBooks.insert(symbol)
        switch outcome {
        case .synced: break
        case .resynced(let waited): record(symbol, .resynced(waitedNs: waited))
        case .gap(let expected): record(symbol, .gap(expectedAfter: expected, firstU: nil, lastU: nil, previousU: nil))
        }
        return .ignored("depth snapshot")
    }

    /// Binance's markets share symbol names (spot and USD-M both have BTCUSDT), so each gets its own rule
    /// (DESIGN.md "Tick"): spot as is, USD-M with `-PERP`, COIN-M as is (its names — `BTCUSD_PERP`,
    /// `ETHUSD_240927` — carry an underscore no spot or USD-M name has; sizes are contracts).
    enum BinanceMarket: Sendable {
        case spot, usdM, coinM

        var venue: String {
            switch self {
            case .spot: "binance"
            case .usdM: "binance-usdm"
            case .coinM: "binance-coinm"
            }
        }
    }

    private static func binanceMarket(channel: BinanceChannel, _ json: JSONView, _ data: Value) -> BinanceMarket {
        if let s = json.member(data, "s"), json.rawBytes(s).contains(UInt8(ascii: "_")) { return .coinM }
        let futures: Bool
        switch channel {
        case .bookTicker: futures = json.has(data, "e") || json.has(data, "T")
        case .trade: futures = json.has(data, "X")
        case .other: futures = json.has(data, "pu")
        }
        return futures ? .usdM : .spot
    }

    static func binanceSymbol(_ raw: String, market: BinanceMarket) throws(MessageDecodingError) -> String {
        let symbol = raw.uppercased() + (market == .usdM ? "-PERP" : "")
        guard Symbol.isValid(symbol) else {
            throw MessageDecodingError(field: "symbol", reason: "not a valid symbol: \"\(raw)\"")
        }
        return symbol
    }

    /// `binanceSymbol` of a message's `s`, remembered per raw name (a feed has a few symbols and sends each
    /// thousands of times: no `String` work per message).
    private mutating func binanceSymbol(_ json: JSONView, _ raw: Value, market: BinanceMarket) throws -> String {
        let bytes = json.rawBytes(raw)
        for entry in symbolCache where entry.market == market && entry.raw.elementsEqual(bytes) { return entry.symbol }
        let symbol = try Self.binanceSymbol(json.string(raw) ?? "", market: market)
        if symbolCache.count == Self.symbolCacheSize { symbolCache.removeFirst() }
        symbolCache.append((Array(bytes), market, symbol))
        return symbol
    }

    // MARK: - Hyperliquid: {"channel": "l2Book" | "trades", "data": …}

    /// Hyperliquid perpetuals are named by their coin (`BTC`): the symbol is `BTC-PERP`, venue `hyperliquid`.
    /// An `l2Book` message is the whole book (no diffs, so no state): a quote with its top levels.
    private func normalizeHyperliquid(_ json: JSONView, channel: Value, receiveTsNs: Int64) throws -> NormalizeResult {
        let data = json.member(json.root, "data")
        if json.isString(channel, "l2Book") {
            guard let data, json.kind(data) == .object else {
                throw MessageDecodingError(field: "data", reason: "missing in an l2Book message")
            }
            let symbol = try Self.hyperliquidSymbol(json, data)
            guard let levels = json.member(data, "levels") else {
                throw MessageDecodingError(field: "levels", reason: "missing")
            }
            var sides = json.elements(levels)
            guard json.kind(levels) == .array, sides.count == 2, let bidList = sides.next(), let askList = sides.next()
            else {
                throw MessageDecodingError(field: "levels", reason: "expected [bids, asks]")
            }
            let bids = try Self.hyperliquidLevels(json, bidList, field: "levels[0]", descending: true)
            let asks = try Self.hyperliquidLevels(json, askList, field: "levels[1]", descending: false)
            guard let bestBid = bids.first, let bestAsk = asks.first else {
                return .ignored("hyperliquid book one-sided")
            }
            var tick = Tick.quote(
                symbol: symbol, tsNs: receiveTsNs, bid: bestBid[0], bidSize: bestBid[1], ask: bestAsk[0],
                askSize: bestAsk[1],
                bids: depthLevels > 0 ? Array(bids.prefix(depthLevels)) : nil,
                asks: depthLevels > 0 ? Array(asks.prefix(depthLevels)) : nil, venue: "hyperliquid")
            tick.exchangeTsNs = Self.nanoseconds(milliseconds: Self.int(json, json.member(data, "time")))
            return .ticks([try tick.validated()])
        }
        if json.isString(channel, "trades") {
            guard let data, json.kind(data) == .array else {
                throw MessageDecodingError(field: "data", reason: "expected an array of trades")
            }
            var ticks: [Tick] = []
            for (i, trade) in json.elements(data).enumerated() {
                guard json.kind(trade) == .object else {
                    throw MessageDecodingError(field: "data[\(i)]", reason: "expected a trade object")
                }
                let side: Side
                switch json.member(trade, "side") {
                case let v? where json.isString(v, "B"): side = .buy
                case let v? where json.isString(v, "A"): side = .sell
                case nil: throw MessageDecodingError(field: "side", reason: "missing")
                default: throw MessageDecodingError(field: "side", reason: "expected B or A")
                }
                var tick = Tick.trade(
                    symbol: try Self.hyperliquidSymbol(json, trade), tsNs: receiveTsNs,
                    price: try Self.number(json, trade, "px"),
                    size: try Self.number(json, trade, "sz"), side: side, venue: "hyperliquid")
                tick.seq = Self.int(json, json.member(trade, "tid"))
                tick.exchangeTsNs = Self.nanoseconds(milliseconds: Self.int(json, json.member(trade, "time")))
                ticks.append(try tick.validated())
            }
            return .ticks(ticks)
        }
        let name = json.string(channel) ?? ""
        switch name {
        case "subscriptionResponse", "pong", "post", "error": return .ignored("hyperliquid \(name)")
        default: throw NormalizeRejection(code: "unknown_format", detail: "unknown Hyperliquid channel \(name)")
        }
    }

    private static func hyperliquidSymbol(_ json: JSONView, _ object: Value) throws(MessageDecodingError) -> String {
        let coin = try string(json, object, "coin")
        let symbol = coin.uppercased() + "-PERP"
        guard Symbol.isValid(symbol) else {
            throw MessageDecodingError(field: "coin", reason: "not a valid symbol: \"\(coin)\"")
        }
        return symbol
    }

    /// `[{"px": "…", "sz": "…", "n": …}, …]` as `[[price, size]]`, best first as sent.
    /// A side's levels, best first: bids strictly descending, asks strictly ascending (a snapshot out of order
    /// would put a worse price at the top of the book, so it is refused, not sorted).
    private static func hyperliquidLevels(
        _ json: JSONView, _ list: Value, field: String, descending: Bool
    ) throws(MessageDecodingError) -> [[Double]] {
        guard json.kind(list) == .array else {
            throw MessageDecodingError(field: field, reason: "expected an array of levels")
        }
        var out: [[Double]] = []
        for (i, level) in json.elements(list).enumerated() {
            guard json.kind(level) == .object else {
                throw MessageDecodingError(field: "\(field)[\(i)]", reason: "expected {px, sz, n}")
            }
            let price = try number(json, level, "px")
            let size = try number(json, level, "sz")
            guard price > 0, size >= 0 else {
                throw MessageDecodingError(field: "\(field)[\(i)]", reason: "negative or zero price, or negative size")
            }
            if let previous = out.last?[0], descending ? price >= previous : price <= previous {
                throw MessageDecodingError(field: "\(field)[\(i)]", reason: "levels out of order")
            }
            out.append([price, size])
        }
        return out
    }

    // MARK: - Kraken v1 arrays: [channelID, payload…, channelName, pair]

    private mutating func normalizeKraken(_ json: JSONView, receiveTsNs: Int64) throws -> NormalizeResult {
        let array = Array(json.elements(json.root))
        guard array.count >= 4, let channel = json.string(array[array.count - 2]),
            let pair = json.string(array[array.count - 1])
        else {
            throw NormalizeRejection(code: "unknown_format", detail: "an array that is no Kraken v1 message")
        }
        guard Symbol.isValid(pair) else {
            throw MessageDecodingError(field: "pair", reason: "not a valid symbol: \"\(pair)\"")
        }
        let payloads = array[1..<(array.count - 2)]
        if channel == "trade" {
            guard let trades = payloads.first, json.kind(trades) == .array else {
                throw MessageDecodingError(field: "trade", reason: "expected an array")
            }
            var ticks: [Tick] = []
            for (i, entry) in json.elements(trades).enumerated() {
                let fields = Array(json.elements(entry))
                guard json.kind(entry) == .array, fields.count >= 4 else {
                    throw MessageDecodingError(field: "trade[\(i)]", reason: "expected [price, volume, time, side, …]")
                }
                var tick = Tick.trade(
                    symbol: pair, tsNs: receiveTsNs,
                    price: try Self.number(json, fields[0], field: "trade[\(i)].price"),
                    size: try Self.number(json, fields[1], field: "trade[\(i)].volume"),
                    side: json.isString(fields[3], "s") ? .sell : .buy, venue: "kraken")
                tick.exchangeTsNs = (try? Self.number(json, fields[2], field: "time")).flatMap(
                    Self.nanoseconds(seconds:))
                ticks.append(try tick.validated())
            }
            return .ticks(ticks)
        }
        if channel == "ticker" {
            guard let ticker = payloads.first, let a = json.member(ticker, "a"), let b = json.member(ticker, "b"),
                json.kind(a) == .array, json.kind(b) == .array
            else {
                throw MessageDecodingError(field: "ticker", reason: "expected a and b as [price, wholeLot, lotVolume]")
            }
            let av = Array(json.elements(a))
            let bv = Array(json.elements(b))
            guard av.count >= 3, bv.count >= 3 else {
                throw MessageDecodingError(field: "ticker", reason: "expected a and b as [price, wholeLot, lotVolume]")
            }
            let tick = Tick.quote(
                symbol: pair, tsNs: receiveTsNs, bid: try Self.number(json, bv[0], field: "b.price"),
                bidSize: try Self.number(json, bv[2], field: "b.volume"),
                ask: try Self.number(json, av[0], field: "a.price"),
                askSize: try Self.number(json, av[2], field: "a.volume"), venue: "kraken")
            return .ticks([try tick.validated()])
        }
        if channel.hasPrefix("book") {
            var book = krakenBooks[pair] ?? (BookSide(descending: true), BookSide(descending: false))
            var sawSnapshot = krakenBooks[pair] != nil
            for part in payloads where json.kind(part) == .object {
                if json.has(part, "as") || json.has(part, "bs") {
                    book.bids.removeAll()
                    book.asks.removeAll()
                    sawSnapshot = true
                }
                for (isBid, raw, field) in [
                    (true, json.member(part, "bs"), "bs"), (false, json.member(part, "as"), "as"),
                    (true, json.member(part, "b"), "b"), (false, json.member(part, "a"), "a")
                ] {
                    guard let raw else { continue }
                    for level in try Self.levels(json, raw, field: field) {
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
            guard let bestBid = book.bids.best, let bestAsk = book.asks.best else {
                return .ignored("kraken book one-sided")
            }
            let tick = Tick.quote(
                symbol: pair, tsNs: receiveTsNs, bid: bestBid.price, bidSize: bestBid.size, ask: bestAsk.price,
                askSize: bestAsk.size, bids: depthLevels > 0 ? book.bids.top(depthLevels) : nil,
                asks: depthLevels > 0 ? book.asks.top(depthLevels) : nil, venue: "kraken")
            return .ticks([try tick.validated()])
        }
        throw NormalizeRejection(code: "unknown_format", detail: "unknown Kraken channel \(channel)")
    }

    // MARK: - Field access that names the field

    static func stringField(_ json: JSONView, _ object: Value, _ field: StaticString) throws(MessageDecodingError)
        -> Value
    {
        guard let value = json.member(object, field) else {
            throw MessageDecodingError(field: "\(field)", reason: "missing")
        }
        guard json.kind(value) == .string else {
            throw MessageDecodingError(field: "\(field)", reason: "expected a string")
        }
        return value
    }

    static func string(_ json: JSONView, _ object: Value, _ field: StaticString) throws(MessageDecodingError) -> String
    {
        json.string(try stringField(json, object, field)) ?? ""
    }

    static func number(_ json: JSONView, _ object: Value, _ field: StaticString) throws(MessageDecodingError) -> Double
    {
        guard let value = json.member(object, field) else {
            throw MessageDecodingError(field: "\(field)", reason: "missing")
        }
        return try number(json, value, field: "\(field)")
    }

    /// Venues send prices as strings ("61837.63000000") or numbers.
    static func number(_ json: JSONView, _ value: Value, field: @autoclosure () -> String) throws(MessageDecodingError)
        -> Double
    {
        let parsed: Double?
        switch json.kind(value) {
        case .string:
            parsed =
                json.isEscaped(value)
                ? json.string(value).flatMap { Double($0) } : DecimalText.double(json.rawBytes(value))
        case .number: parsed = json.jsonNumber(value)
        default: parsed = nil
        }
        guard let parsed else {
            throw MessageDecodingError(field: field(), reason: "expected a number, got \(json.describe(value))")
        }
        guard parsed.isFinite else { throw MessageDecodingError(field: field(), reason: "not a finite number") }
        return parsed
    }

    /// An integer field: a JSON number (truncated) or the decimal text of a string.
    static func int(_ json: JSONView, _ value: Value?) -> Int64? {
        guard let value else { return nil }
        switch json.kind(value) {
        case .number: return json.jsonInteger(value)
        case .string:
            if !json.isEscaped(value), let fast = DecimalText.int64(json.rawBytes(value)) { return fast }
            return json.string(value).flatMap { Int64($0) }
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

    static func levels(_ json: JSONView, _ raw: Value?, field: StaticString) throws(MessageDecodingError)
        -> [BinanceOrderBook.Level]
    {
        try levels(json, raw, field: "\(field)")
    }

    static func levels(_ json: JSONView, _ raw: Value?, field: String) throws(MessageDecodingError) -> [BinanceOrderBook
        .Level]
    {
        guard let raw else { return [] }
        guard json.kind(raw) == .array else {
            throw MessageDecodingError(field: field, reason: "expected an array of levels")
        }
        var out: [BinanceOrderBook.Level] = []
        out.reserveCapacity(json.elements(raw).count)
        for (i, entry) in json.elements(raw).enumerated() {
            var parts = json.elements(entry)
            guard json.kind(entry) == .array, let p = parts.next(), let q = parts.next() else {
                throw MessageDecodingError(field: "\(field)[\(i)]", reason: "expected [price, size]")
            }
            let price = try number(json, p, field: "\(field)[\(i)]")
            let size = try number(json, q, field: "\(field)[\(i)]")
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
