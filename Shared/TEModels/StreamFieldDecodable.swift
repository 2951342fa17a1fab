/// A message with a hand-written reader for the hot path (a service reads one per stream entry).
///
/// The reader accepts only what it can decide exactly as the Codable decoder would, and answers nil for
/// anything else — a missing or malformed field, JSON text not in the form `StreamFieldEncoder` writes —
/// so `StreamFieldDecoder` then runs the Codable decoder, which decides and names the field and the reason
/// of any error. Bad input therefore gets the same error either way; good input the same value.
public protocol StreamFieldDecodable: StreamMessage {
    /// The message, or nil when the Codable decoder must decide. `fields` as read from the stream, in order;
    /// a repeated field name counts with its last value (as in the dictionary the Codable decoder reads).
    static func decodeFast(_ fields: [(String, String)]) -> Self?
}

/// The field readers of the fast paths: each mirrors a `FieldsKeyedDecoder` rule, nil where that rule
/// would throw.
enum FastField {
    /// `v`: an integer no newer than `schemaVersion`.
    static func version(_ text: String, schemaVersion: Int) -> Bool {
        guard let v = Int(text) else { return false }
        return v <= schemaVersion
    }

    static func int64(_ text: String) -> Int64? { Int64(text) }

    static func int(_ text: String) -> Int? { Int64(text).map { Int($0) } }

    static func double(_ text: String) -> Double? {
        guard let value = Double(text), value.isFinite else { return nil }
        return value
    }

    /// An optional field: `.some(nil)` for `null` (decodeIfPresent reads it as absent), nil when `read`
    /// declines.
    static func optional<T>(_ text: String, _ read: (String) -> T?) -> T?? {
        if text == "null" { return .some(nil) }
        guard let value = read(text) else { return nil }
        return .some(value)
    }

    static func bool(_ text: String) -> Bool? {
        switch text {
        case "true", "1": return true
        case "false", "0": return false
        default: return nil
        }
    }

    /// `[[p, s], …]` exactly as JSONEncoder writes it (no white space, JSON number grammar); nil for
    /// anything else, including numbers JSONDecoder might read differently from `Double(_:)` (out of range,
    /// underflowing to zero).
    static func levels(_ text: String) -> [[Double]]? {
        var text = text
        return text.withUTF8 { bytes -> [[Double]]? in
            var parser = LevelParser(bytes: bytes)
            return parser.parse()
        }
    }
}

private struct LevelParser {
    let bytes: UnsafeBufferPointer<UInt8>
    var i = 0

    init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    mutating func parse() -> [[Double]]? {
        guard eat(UInt8(ascii: "[")) else { return nil }
        var out: [[Double]] = []
        if eat(UInt8(ascii: "]")) { return i == bytes.count ? out : nil }
        repeat {
            guard let level = inner() else { return nil }
            out.append(level)
        } while eat(UInt8(ascii: ","))
        guard eat(UInt8(ascii: "]")), i == bytes.count else { return nil }
        return out
    }

    private mutating func inner() -> [Double]? {
        guard eat(UInt8(ascii: "[")) else { return nil }
        var level: [Double] = []
        level.reserveCapacity(2)
        if eat(UInt8(ascii: "]")) { return level }
        repeat {
            guard let n = number() else { return nil }
            level.append(n)
        } while eat(UInt8(ascii: ","))
        return eat(UInt8(ascii: "]")) ? level : nil
    }

    private mutating func eat(_ byte: UInt8) -> Bool {
        guard i < bytes.count, bytes[i] == byte else { return false }
        i += 1
        return true
    }

    private func digit(_ at: Int) -> Bool { at < bytes.count && bytes[at] >= 0x30 && bytes[at] <= 0x39 }

    /// A JSON number: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    private mutating func number() -> Double? {
        let start = i
        var nonZeroDigit = false
        if eat(UInt8(ascii: "-")) {}
        guard digit(i) else { return nil }
        if bytes[i] == UInt8(ascii: "0") {
            i += 1
        } else {
            while digit(i) {
                nonZeroDigit = nonZeroDigit || bytes[i] != UInt8(ascii: "0")
                i += 1
            }
        }
        if eat(UInt8(ascii: ".")) {
            guard digit(i) else { return nil }
            while digit(i) {
                nonZeroDigit = nonZeroDigit || bytes[i] != UInt8(ascii: "0")
                i += 1
            }
        }
        if i < bytes.count, bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E") {
            i += 1
            if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") { i += 1 }
            guard digit(i) else { return nil }
            while digit(i) { i += 1 }
        }
        // Short numbers fit a small string: no allocation.
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
        guard let value = Double(text), value.isFinite else { return nil }
        if nonZeroDigit && !value.isNormal { return nil }  // underflow: leave it to JSONDecoder
        return value
    }
}

extension Tick: StreamFieldDecodable {
    public static func decodeFast(_ fields: [(String, String)]) -> Tick? {
        var versioned = false
        var symbol: String?
        var tsNs: Int64?
        var kind: Kind?
        var tick = Tick(symbol: "", tsNs: 0, kind: .quote)
        // An optional field reads as absent when its text is `null` (decodeIfPresent's rule).
        for (name, text) in fields {
            switch name {
            case "v":
                guard FastField.version(text, schemaVersion: schemaVersion) else { return nil }
                versioned = true
            case "symbol": symbol = text
            case "ts_ns":
                guard let v = FastField.int64(text) else { return nil }
                tsNs = v
            case "kind":
                guard let v = Kind(rawValue: text) else { return nil }
                kind = v
            case "bid":
                guard let v = FastField.optional(text, FastField.double) else { return nil }
                tick.bid = v
            case "bid_size":
                guard let v = FastField.optional(text, FastField.double) else { return nil }
                tick.bidSize = v
            case "ask":
                guard let v = FastField.optional(text, FastField.double) else { return nil }
                tick.ask = v
            case "ask_size":
                guard let v = FastField.optional(text, FastField.double) else { return nil }
                tick.askSize = v
            case "price":
                guard let v = FastField.optional(text, FastField.double) else { return nil }
                tick.price = v
            case "size":
                guard let v = FastField.optional(text, FastField.double) else { return nil }
                tick.size = v
            case "bids":
                guard let v = FastField.optional(text, FastField.levels) else { return nil }
                tick.bids = v
            case "asks":
                guard let v = FastField.optional(text, FastField.levels) else { return nil }
                tick.asks = v
            case "side":
                guard let v = FastField.optional(text, Side.init(rawValue:)) else { return nil }
                tick.side = v
            case "venue": tick.venue = text == "null" ? nil : text
            case "seq":
                guard let v = FastField.optional(text, FastField.int64) else { return nil }
                tick.seq = v
            case "exchange_ts_ns":
                guard let v = FastField.optional(text, FastField.int64) else { return nil }
                tick.exchangeTsNs = v
            default: continue
            }
        }
        guard versioned, let symbol, let tsNs, let kind else { return nil }
        tick.symbol = symbol
        tick.tsNs = tsNs
        tick.kind = kind
        return tick
    }
}

extension FeatureSnapshot: StreamFieldDecodable {
    public static func decodeFast(_ fields: [(String, String)]) -> FeatureSnapshot? {
        var versioned = false
        var symbol: String?
        var tsNs: Int64?
        var windowMs: Int?
        var nQuotes: Int?
        var nTrades: Int?
        var tradeVolume: Double?
        var lastPrice: Double?
        var warm = true
        // Bit i set once feature i (model order) is read.
        var seen: UInt8 = 0
        var features = FeatureVector(
            spreadBps: 0, imbalance: 0, depthImbalance: 0, ofiNorm: 0, realizedVolBps: 0, midReturnBps: 0,
            tickRate: 0, micropriceOffsetBps: 0)
        for (name, text) in fields {
            switch name {
            case "v":
                guard FastField.version(text, schemaVersion: schemaVersion) else { return nil }
                versioned = true
            case "symbol": symbol = text
            case "ts_ns":
                guard let v = FastField.int64(text) else { return nil }
                tsNs = v
            case "window_ms":
                guard let v = FastField.int(text) else { return nil }
                windowMs = v
            case "n_quotes":
                guard let v = FastField.int(text) else { return nil }
                nQuotes = v
            case "n_trades":
                guard let v = FastField.int(text) else { return nil }
                nTrades = v
            case "trade_volume":
                guard let v = FastField.double(text) else { return nil }
                tradeVolume = v
            case "last_price":
                guard let v = FastField.double(text) else { return nil }
                lastPrice = v
            case "warm":
                guard let v = FastField.optional(text, FastField.bool) else { return nil }
                warm = v ?? true
            default:
                guard let feature = FeatureVector.fieldsByName[name] else { continue }
                guard let v = FastField.double(text) else { return nil }
                features[keyPath: feature.path] = v
                seen |= 1 << feature.index
            }
        }
        guard versioned, seen == 0xFF, let symbol, let tsNs, let windowMs, let nQuotes, let nTrades, let tradeVolume,
            let lastPrice
        else { return nil }
        return FeatureSnapshot(
            symbol: symbol, tsNs: tsNs, windowMs: windowMs, nQuotes: nQuotes, nTrades: nTrades,
            tradeVolume: tradeVolume, lastPrice: lastPrice, warm: warm,
            features: features)
    }
}

extension FeatureVector {
    /// Each feature's stream field name → its position in model order (`names`) and its property, so a
    /// reader fills the vector by name without a case per feature.
    static let fieldsByName: [String: (index: Int, path: WritableKeyPath<FeatureVector, Double> & Sendable)] = {
        let paths: [WritableKeyPath<FeatureVector, Double> & Sendable] = [
            \.spreadBps, \.imbalance, \.depthImbalance, \.ofiNorm, \.realizedVolBps, \.midReturnBps, \.tickRate,
            \.micropriceOffsetBps,
        ]
        var byName: [String: (index: Int, path: WritableKeyPath<FeatureVector, Double> & Sendable)] = [:]
        for (index, name) in names.enumerated() { byName[name] = (index, paths[index]) }
        return byName
    }()
}
