import TECore

/// A message with a hand-written reader for the hot path (a service reads one per stream entry).
///
/// The reader accepts only what it can decide exactly as the Codable decoder would, and answers nil for
/// anything else — a missing or malformed field, JSON text not in the form `StreamFieldEncoder` writes —
/// so `StreamFieldDecoder` then runs the Codable decoder, which decides and names the field and the reason
/// of any error. Bad input therefore gets the same error either way; good input the same value.
public protocol StreamFieldDecodable: StreamMessage {
    /// The message, or nil when the Codable decoder must decide. `fields` as read from the stream, in order,
    /// as bytes; a repeated field name counts with its last value (as in the dictionary the Codable decoder
    /// reads).
    static func decodeFast(_ fields: StreamFieldsView) -> Self?
}

extension StreamFieldDecodable {
    /// The hand-written reader over text pairs (tests and tools; the services read entries' bytes).
    public static func decodeFast(_ pairs: [(String, String)]) -> Self? {
        StreamFields(pairs).withView { decodeFast($0) }
    }
}

/// The field readers of the fast paths: each mirrors a `FieldsKeyedDecoder` rule, nil where that rule
/// would throw.
enum FastField {
    /// `v`: an integer no newer than `schemaVersion`.
    static func version(_ text: FieldBytes, schemaVersion: Int) -> Bool {
        guard let v = FastNumber.int64(text) else { return false }
        return v <= schemaVersion
    }

    static func int64(_ text: FieldBytes) -> Int64? { FastNumber.int64(text) }

    static func int(_ text: FieldBytes) -> Int? { FastNumber.int64(text).map { Int($0) } }

    static func double(_ text: FieldBytes) -> Double? {
        guard let value = FastNumber.double(text.buffer), value.isFinite else { return nil }
        return value
    }

    /// Text of a field; nil for `null` (an optional string field's absent value).
    static func text(_ text: FieldBytes) -> String? { isNull(text) ? nil : text.string }

    static func isNull(_ text: FieldBytes) -> Bool { text.equals("null") }

    /// An optional field: `.some(nil)` for `null` (decodeIfPresent reads it as absent), nil when `read`
    /// declines.
    static func optional<T>(_ text: FieldBytes, _ read: (FieldBytes) -> T?) -> T?? {
        if isNull(text) { return .some(nil) }
        guard let value = read(text) else { return nil }
        return .some(value)
    }

    static func bool(_ text: FieldBytes) -> Bool? {
        switch text {
        case "true", "1": return true
        case "false", "0": return false
        default: return nil
        }
    }

    /// A raw value of a string enum.
    static func raw<T: RawRepresentable<String>>(_ text: FieldBytes) -> T? { T(rawValue: text.string) }

    /// `[[p, s], …]` exactly as JSONEncoder writes it (no white space, JSON number grammar); nil for
    /// anything else, including numbers JSONDecoder might read differently from `Double(_:)` (out of range,
    /// underflowing to zero).
    static func levels(_ text: FieldBytes) -> [[Double]]? {
        FastJSON.read(text) { (p: inout FastJSON) in p.levels() }
    }

    /// A feature vector as `JSONTextWriter.features` writes it (keys sorted, no white space).
    static func features(_ text: FieldBytes) -> FeatureVector? {
        FastJSON.read(text) { (p: inout FastJSON) in p.features() }
    }

    /// `["a","b",…]` of strings without escapes.
    static func strings(_ text: FieldBytes) -> [String]? {
        FastJSON.read(text) { (p: inout FastJSON) in p.strings() }
    }

    /// A canary result as the audit codec writes it: `{"mode":…,"score":…,"version":…}`, mode and
    /// score optional.
    static func canary(_ text: FieldBytes) -> CanaryResult? {
        FastJSON.read(text) { (p: inout FastJSON) -> CanaryResult? in
            guard p.eat(UInt8(ascii: "{")) else { return nil }
            var mode: String?
            var score: Double?
            if p.key("mode") {
                guard let m = p.string(), p.eat(UInt8(ascii: ",")) else { return nil }
                mode = m
            }
            if p.key("score") {
                guard let s = p.number(), p.eat(UInt8(ascii: ",")) else { return nil }
                score = s
            }
            guard p.key("version"), let version = p.string(), p.eat(UInt8(ascii: "}")) else { return nil }
            return CanaryResult(version: version, score: score, mode: mode)
        }
    }
}

/// A reader of the few JSON shapes the codecs write, exactly as written: anything else (white space,
/// another key order, escapes) answers nil and the Codable decoder decides.
struct FastJSON {
    let bytes: UnsafeBufferPointer<UInt8>
    var i = 0

    init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    /// `body` over the whole text; nil unless it consumed all of it.
    static func read<T>(_ text: FieldBytes, _ body: (inout FastJSON) -> T?) -> T? {
        var p = FastJSON(bytes: text.buffer)
        guard let value = body(&p), p.i == text.count else { return nil }
        return value
    }

    mutating func levels() -> [[Double]]? {
        guard eat(UInt8(ascii: "[")) else { return nil }
        var out: [[Double]] = []
        if eat(UInt8(ascii: "]")) { return out }
        repeat {
            guard let level = level() else { return nil }
            out.append(level)
        } while eat(UInt8(ascii: ","))
        guard eat(UInt8(ascii: "]")) else { return nil }
        return out
    }

    private mutating func level() -> [Double]? {
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

    mutating func features() -> FeatureVector? {
        guard eat(UInt8(ascii: "{")) else { return nil }
        var f = FeatureVector(
            spreadBps: 0, imbalance: 0, depthImbalance: 0, ofiNorm: 0, realizedVolBps: 0, midReturnBps: 0,
            tickRate: 0, micropriceOffsetBps: 0)
        guard key("depth_imbalance"), let v0 = number(), eat(UInt8(ascii: ",")) else { return nil }
        guard key("imbalance"), let v1 = number(), eat(UInt8(ascii: ",")) else { return nil }
        guard key("microprice_offset_bps"), let v2 = number(), eat(UInt8(ascii: ",")) else { return nil }
        guard key("mid_return_bps"), let v3 = number(), eat(UInt8(ascii: ",")) else { return nil }
        guard key("ofi_norm"), let v4 = number(), eat(UInt8(ascii: ",")) else { return nil }
        guard key("realized_vol_bps"), let v5 = number(), eat(UInt8(ascii: ",")) else { return nil }
        guard key("spread_bps"), let v6 = number(), eat(UInt8(ascii: ",")) else { return nil }
        guard key("tick_rate"), let v7 = number(), eat(UInt8(ascii: "}")) else { return nil }
        f.depthImbalance = v0
        f.imbalance = v1
        f.micropriceOffsetBps = v2
        f.midReturnBps = v3
        f.ofiNorm = v4
        f.realizedVolBps = v5
        f.spreadBps = v6
        f.tickRate = v7
        return f
    }

    mutating func strings() -> [String]? {
        guard eat(UInt8(ascii: "[")) else { return nil }
        var out: [String] = []
        if eat(UInt8(ascii: "]")) { return out }
        repeat {
            guard let s = string() else { return nil }
            out.append(s)
        } while eat(UInt8(ascii: ","))
        return eat(UInt8(ascii: "]")) ? out : nil
    }

    /// `"name":` at the cursor; the cursor moves only when it matches.
    mutating func key(_ name: StaticString) -> Bool {
        let n = name.utf8CodeUnitCount
        guard i + n + 3 <= bytes.count, bytes[i] == UInt8(ascii: "\""), bytes[i + n + 1] == UInt8(ascii: "\""),
            bytes[i + n + 2] == UInt8(ascii: ":")
        else { return false }
        let matches = name.withUTF8Buffer { expected in
            for k in 0..<n where bytes[i + 1 + k] != expected[k] { return false }
            return true
        }
        guard matches else { return false }
        i += n + 3
        return true
    }

    /// A string without escapes or control characters.
    mutating func string() -> String? {
        guard eat(UInt8(ascii: "\"")) else { return nil }
        let start = i
        while i < bytes.count, bytes[i] != UInt8(ascii: "\"") {
            guard bytes[i] >= 0x20, bytes[i] != UInt8(ascii: "\\") else { return nil }
            i += 1
        }
        guard i < bytes.count else { return nil }
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
        i += 1
        return text
    }

    mutating func eat(_ byte: UInt8) -> Bool {
        guard i < bytes.count, bytes[i] == byte else { return false }
        i += 1
        return true
    }

    private func digit(_ at: Int) -> Bool { at < bytes.count && bytes[at] >= 0x30 && bytes[at] <= 0x39 }

    /// A JSON number: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    mutating func number() -> Double? {
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
        guard let value = FastNumber.double(UnsafeBufferPointer(rebasing: bytes[start..<i])), value.isFinite else {
            return nil
        }
        if nonZeroDigit && !value.isNormal { return nil }  // underflow: leave it to JSONDecoder
        return value
    }
}

extension Tick: StreamFieldDecodable {
    public static func decodeFast(_ fields: StreamFieldsView) -> Tick? {
        var versioned = false
        var symbol: String?
        var tsNs: Int64?
        var kind: Kind?
        var tick = Tick(symbol: "", tsNs: 0, kind: .quote)
        // An optional field reads as absent when its text is `null` (decodeIfPresent's rule).
        for f in 0..<fields.count {
            let (name, text) = (fields.name(f), fields.value(f))
            switch name {
            case "v":
                guard FastField.version(text, schemaVersion: schemaVersion) else { return nil }
                versioned = true
            case "symbol": symbol = text.string
            case "ts_ns":
                guard let v = FastField.int64(text) else { return nil }
                tsNs = v
            case "kind":
                guard let v = FastField.raw(text) as Kind? else { return nil }
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
                guard let v = FastField.optional(text, { FastField.raw($0) as Side? }) else { return nil }
                tick.side = v
            case "venue": tick.venue = FastField.text(text)
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
    public static func decodeFast(_ fields: StreamFieldsView) -> FeatureSnapshot? {
        var versioned = false
        var symbol: String?
        var tsNs: Int64?
        var windowMs: Int?
        var nQuotes: Int?
        var nTrades: Int?
        var tradeVolume: Double?
        var lastPrice: Double?
        var warm = true
        // Bit i set once feature i (model order, FeatureVector.names) is read.
        var seen: UInt8 = 0
        var features = FeatureVector(
            spreadBps: 0, imbalance: 0, depthImbalance: 0, ofiNorm: 0, realizedVolBps: 0, midReturnBps: 0,
            tickRate: 0, micropriceOffsetBps: 0)
        for f in 0..<fields.count {
            let (name, text) = (fields.name(f), fields.value(f))
            switch name {
            case "v":
                guard FastField.version(text, schemaVersion: schemaVersion) else { return nil }
                versioned = true
            case "symbol": symbol = text.string
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
            case "spread_bps":
                guard let v = FastField.double(text) else { return nil }
                features.spreadBps = v
                seen |= 1 << 0
            case "imbalance":
                guard let v = FastField.double(text) else { return nil }
                features.imbalance = v
                seen |= 1 << 1
            case "depth_imbalance":
                guard let v = FastField.double(text) else { return nil }
                features.depthImbalance = v
                seen |= 1 << 2
            case "ofi_norm":
                guard let v = FastField.double(text) else { return nil }
                features.ofiNorm = v
                seen |= 1 << 3
            case "realized_vol_bps":
                guard let v = FastField.double(text) else { return nil }
                features.realizedVolBps = v
                seen |= 1 << 4
            case "mid_return_bps":
                guard let v = FastField.double(text) else { return nil }
                features.midReturnBps = v
                seen |= 1 << 5
            case "tick_rate":
                guard let v = FastField.double(text) else { return nil }
                features.tickRate = v
                seen |= 1 << 6
            case "microprice_offset_bps":
                guard let v = FastField.double(text) else { return nil }
                features.micropriceOffsetBps = v
                seen |= 1 << 7
            default: continue
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

extension Signal: StreamFieldDecodable {
    public static func decodeFast(_ fields: StreamFieldsView) -> Signal? {
        var versioned = false
        var id: String?
        var symbol: String?
        var strategy: String?
        var direction: Direction?
        var confidence: Double?
        var features: FeatureVector?
        var tsNs: Int64?
        for f in 0..<fields.count {
            let (name, text) = (fields.name(f), fields.value(f))
            switch name {
            case "v":
                guard FastField.version(text, schemaVersion: schemaVersion) else { return nil }
                versioned = true
            case "id": id = text.string
            case "symbol": symbol = text.string
            case "strategy": strategy = text.string
            case "direction":
                guard let v = FastField.raw(text) as Direction? else { return nil }
                direction = v
            case "confidence":
                guard let v = FastField.double(text) else { return nil }
                confidence = v
            case "features":
                guard let v = FastField.features(text) else { return nil }
                features = v
            case "ts_ns":
                guard let v = FastField.int64(text) else { return nil }
                tsNs = v
            default: continue
            }
        }
        guard versioned, let id, let symbol, let strategy, let direction, let confidence, let features, let tsNs else {
            return nil
        }
        return Signal(
            id: id, symbol: symbol, strategy: strategy, direction: direction, confidence: confidence, tsNs: tsNs,
            features: features)
    }
}

extension Opportunity: StreamFieldDecodable {
    public static func decodeFast(_ fields: StreamFieldsView) -> Opportunity? {
        var versioned = false
        var id: String?
        var symbol: String?
        var direction: Direction?
        var confidence: Double?
        var strategies: [String]?
        var signalIds: [String]?
        var firstTsNs: Int64?
        var lastTsNs: Int64?
        var count: Int?
        var emitReason: String?
        var conflict: Bool?
        for f in 0..<fields.count {
            let (name, text) = (fields.name(f), fields.value(f))
            switch name {
            case "v":
                guard FastField.version(text, schemaVersion: schemaVersion) else { return nil }
                versioned = true
            case "id": id = text.string
            case "symbol": symbol = text.string
            case "direction":
                guard let v = FastField.raw(text) as Direction? else { return nil }
                direction = v
            case "confidence":
                guard let v = FastField.double(text) else { return nil }
                confidence = v
            case "strategies":
                guard let v = FastField.strings(text) else { return nil }
                strategies = v
            case "signal_ids":
                guard let v = FastField.strings(text) else { return nil }
                signalIds = v
            case "first_ts_ns":
                guard let v = FastField.int64(text) else { return nil }
                firstTsNs = v
            case "last_ts_ns":
                guard let v = FastField.int64(text) else { return nil }
                lastTsNs = v
            case "count":
                guard let v = FastField.int(text) else { return nil }
                count = v
            case "emit_reason": emitReason = FastField.text(text)
            case "conflict":
                guard let v = FastField.optional(text, FastField.bool) else { return nil }
                conflict = v
            default: continue
            }
        }
        guard versioned, let id, let symbol, let direction, let confidence, let strategies, let signalIds,
            let firstTsNs, let lastTsNs, let count
        else { return nil }
        return Opportunity(
            id: id, symbol: symbol, direction: direction, confidence: confidence, strategies: strategies,
            signalIds: signalIds, firstTsNs: firstTsNs, lastTsNs: lastTsNs, count: count, emitReason: emitReason,
            conflict: conflict)
    }
}

extension AuditRecord: StreamFieldDecodable {
    public static func decodeFast(_ fields: StreamFieldsView) -> AuditRecord? {
        var versioned = false
        var requestId: String?
        var decisionId: String?
        var tsNs: Int64?
        var symbol: String?
        var decision: Decision?
        var source: ScoreSource?
        var latencyUs: Int64?
        var r = AuditRecord(
            decisionId: "", requestId: "", tsNs: 0, symbol: "", decision: .abstain, score: nil, source: .abstain,
            modelName: nil, modelVersion: nil, modelHash: nil, features: nil, featureAgeMs: nil, latencyUs: 0)
        // An optional field reads as absent when its text is `null` (decodeIfPresent's rule).
        let optionalText = FastField.text
        for f in 0..<fields.count {
            let (name, text) = (fields.name(f), fields.value(f))
            switch name {
            case "v":
                guard FastField.version(text, schemaVersion: schemaVersion) else { return nil }
                versioned = true
            case "request_id": requestId = text.string
            case "decision_id": decisionId = optionalText(text)
            case "ts_ns":
                guard let v = FastField.int64(text) else { return nil }
                tsNs = v
            case "symbol": symbol = text.string
            case "decision":
                guard let v = FastField.raw(text) as Decision? else { return nil }
                decision = v
            case "score":
                guard let v = FastField.optional(text, FastField.double) else { return nil }
                r.score = v
            case "source":
                guard let v = FastField.raw(text) as ScoreSource? else { return nil }
                source = v
            case "model_name": r.modelName = optionalText(text)
            case "model_version": r.modelVersion = optionalText(text)
            case "model_hash": r.modelHash = optionalText(text)
            case "features":
                guard let v = FastField.optional(text, FastField.features) else { return nil }
                r.features = v
            case "feature_snapshot_id": r.featureSnapshotId = optionalText(text)
            case "feature_ts_ns":
                guard let v = FastField.optional(text, FastField.int64) else { return nil }
                r.featureTsNs = v
            case "feature_age_ms":
                guard let v = FastField.optional(text, FastField.double) else { return nil }
                r.featureAgeMs = v
            case "latency_us":
                guard let v = FastField.int64(text) else { return nil }
                latencyUs = v
            case "canary":
                guard let v = FastField.optional(text, FastField.canary) else { return nil }
                r.canary = v
            case "reason": r.reason = optionalText(text)
            case "trace_id": r.traceId = optionalText(text)
            case "client": r.client = optionalText(text)
            default: continue
            }
        }
        guard versioned, let requestId, let tsNs, let symbol, let decision, let source, let latencyUs else {
            return nil
        }
        r.requestId = requestId
        r.decisionId = decisionId ?? requestId
        r.tsNs = tsNs
        r.symbol = symbol
        r.decision = decision
        r.source = source
        r.latencyUs = latencyUs
        return r
    }
}
