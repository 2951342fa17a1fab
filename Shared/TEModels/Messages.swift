// The messages of ../shared/DESIGN.md ("Messages"). One Codable type per message; the same type
// decodes a Redis stream entry (StreamFieldDecoder), a Kafka value and an HTTP body (JSONDecoder).

/// A normalized market-data event: what `ingest` writes to `te:ticks`.
public struct Tick: StreamMessage, Equatable {
    public static let schemaVersion = 1

    public enum Kind: String, Codable, Sendable { case quote, trade }

    public var symbol: String
    /// Receive time (ns since epoch): the one clock that orders a symbol's ticks.
    public var tsNs: Int64
    public var kind: Kind
    // Quote
    public var bid: Double?
    public var bidSize: Double?
    public var ask: Double?
    public var askSize: Double?
    /// Top levels, best first, `[[price, size], …]`.
    public var bids: [[Double]]?
    public var asks: [[Double]]?
    // Trade
    public var price: Double?
    public var size: Double?
    public var side: Side?
    // Optional
    public var venue: String?
    public var seq: Int64?
    /// The venue's own event time, on the venue's clock.
    public var exchangeTsNs: Int64?

    enum CodingKeys: String, CodingKey {
        case symbol, kind, bid, ask, bids, asks, price, size, side, venue, seq
        case tsNs = "ts_ns"
        case bidSize = "bid_size"
        case askSize = "ask_size"
        case exchangeTsNs = "exchange_ts_ns"
    }

    public init(
        symbol: String, tsNs: Int64, kind: Kind,
        bid: Double? = nil, bidSize: Double? = nil, ask: Double? = nil, askSize: Double? = nil,
        bids: [[Double]]? = nil, asks: [[Double]]? = nil,
        price: Double? = nil, size: Double? = nil, side: Side? = nil,
        venue: String? = nil, seq: Int64? = nil, exchangeTsNs: Int64? = nil
    ) {
        self.symbol = symbol
        self.tsNs = tsNs
        self.kind = kind
        self.bid = bid
        self.bidSize = bidSize
        self.ask = ask
        self.askSize = askSize
        self.bids = bids
        self.asks = asks
        self.price = price
        self.size = size
        self.side = side
        self.venue = venue
        self.seq = seq
        self.exchangeTsNs = exchangeTsNs
    }

    public static func quote(
        symbol: String, tsNs: Int64, bid: Double, bidSize: Double, ask: Double, askSize: Double,
        bids: [[Double]]? = nil, asks: [[Double]]? = nil, venue: String? = nil
    ) -> Tick {
        Tick(
            symbol: symbol, tsNs: tsNs, kind: .quote, bid: bid, bidSize: bidSize, ask: ask, askSize: askSize,
            bids: bids, asks: asks, venue: venue)
    }

    public static func trade(
        symbol: String, tsNs: Int64, price: Double, size: Double, side: Side, venue: String? = nil
    ) -> Tick {
        Tick(symbol: symbol, tsNs: tsNs, kind: .trade, price: price, size: size, side: side, venue: venue)
    }

    /// Checks what a consumer relies on: the fields of its kind present, finite, positive, and an
    /// uncrossed book. The error names the field and the reason.
    public func validated() throws(MessageDecodingError) -> Tick {
        guard Symbol.isValid(symbol) else {
            throw MessageDecodingError(field: "symbol", reason: "not a valid symbol: \"\(symbol)\"")
        }
        guard tsNs > 0 else { throw MessageDecodingError(field: "ts_ns", reason: "must be positive") }
        func require(_ value: Double?, _ field: String, allowZero: Bool) throws(MessageDecodingError) -> Double {
            guard let value else { throw MessageDecodingError(field: field, reason: "missing for a \(kind.rawValue)") }
            guard value.isFinite else { throw MessageDecodingError(field: field, reason: "not a finite number") }
            guard allowZero ? value >= 0 : value > 0 else {
                throw MessageDecodingError(field: field, reason: allowZero ? "negative" : "not positive")
            }
            return value
        }
        switch kind {
        case .quote:
            let bid = try require(bid, "bid", allowZero: false)
            _ = try require(bidSize, "bid_size", allowZero: true)
            let ask = try require(ask, "ask", allowZero: false)
            _ = try require(askSize, "ask_size", allowZero: true)
            guard ask > bid else {
                throw MessageDecodingError(field: "ask", reason: "crossed or locked book: ask \(ask) <= bid \(bid)")
            }
            for (name, levels) in [("bids", bids), ("asks", asks)] {
                for level in levels ?? [] {
                    guard level.count == 2, level[0].isFinite, level[1].isFinite, level[0] > 0, level[1] >= 0 else {
                        throw MessageDecodingError(field: name, reason: "each level must be [price > 0, size >= 0]")
                    }
                }
            }
        case .trade:
            _ = try require(price, "price", allowZero: false)
            _ = try require(size, "size", allowZero: false)
            guard side != nil else { throw MessageDecodingError(field: "side", reason: "missing for a trade") }
        }
        return self
    }
}

public enum Side: String, Codable, Sendable { case buy, sell }

public enum Direction: String, Codable, Sendable { case buy, sell }

public enum Symbol {
    /// Upper-case letters and digits, optionally one separator (`-`, `/`, `_`), 2–32 characters:
    /// `BTCUSDT`, `XBT/USD`, `BTC-USD`.
    public static func isValid(_ symbol: String) -> Bool {
        let utf8 = symbol.utf8
        guard utf8.count >= 2, utf8.count <= 32 else { return false }
        var separators = 0
        for byte in utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): continue
            case UInt8(ascii: "-"), UInt8(ascii: "/"), UInt8(ascii: "_"), UInt8(ascii: "."): separators += 1
            default: return false
            }
        }
        return separators <= 1 && utf8.first != UInt8(ascii: "-") && utf8.last != UInt8(ascii: "-")
    }
}

/// The model's input contract, FP32[8] in this order (DESIGN.md "Feature vector").
public struct FeatureVector: Codable, Sendable, Equatable {
    public static let names = [
        "spread_bps", "imbalance", "depth_imbalance", "ofi_norm",
        "realized_vol_bps", "mid_return_bps", "tick_rate", "microprice_offset_bps"
    ]
    public static let count = 8

    public var spreadBps: Double
    public var imbalance: Double
    public var depthImbalance: Double
    public var ofiNorm: Double
    public var realizedVolBps: Double
    public var midReturnBps: Double
    public var tickRate: Double
    public var micropriceOffsetBps: Double

    enum CodingKeys: String, CodingKey {
        case imbalance
        case spreadBps = "spread_bps"
        case depthImbalance = "depth_imbalance"
        case ofiNorm = "ofi_norm"
        case realizedVolBps = "realized_vol_bps"
        case midReturnBps = "mid_return_bps"
        case tickRate = "tick_rate"
        case micropriceOffsetBps = "microprice_offset_bps"
    }

    public init(
        spreadBps: Double, imbalance: Double, depthImbalance: Double, ofiNorm: Double,
        realizedVolBps: Double, midReturnBps: Double, tickRate: Double, micropriceOffsetBps: Double
    ) {
        self.spreadBps = spreadBps
        self.imbalance = imbalance
        self.depthImbalance = depthImbalance
        self.ofiNorm = ofiNorm
        self.realizedVolBps = realizedVolBps
        self.midReturnBps = midReturnBps
        self.tickRate = tickRate
        self.micropriceOffsetBps = micropriceOffsetBps
    }

    /// From 8 values in model order.
    public init(_ values: [Double]) throws(MessageDecodingError) {
        guard values.count == Self.count else {
            throw MessageDecodingError(field: "features", reason: "expected \(Self.count) numbers, got \(values.count)")
        }
        for (i, v) in values.enumerated() where !v.isFinite {
            throw MessageDecodingError(field: "features[\(i)]", reason: "not a finite number")
        }
        self.init(
            spreadBps: values[0], imbalance: values[1], depthImbalance: values[2], ofiNorm: values[3],
            realizedVolBps: values[4], midReturnBps: values[5], tickRate: values[6], micropriceOffsetBps: values[7])
    }

    /// The 8 values in model order.
    public var values: [Double] {
        [spreadBps, imbalance, depthImbalance, ofiNorm, realizedVolBps, midReturnBps, tickRate, micropriceOffsetBps]
    }
}

/// One per quote tick, on `te:features` and (latest) in `te:online:{SYMBOL}`. The feature vector's
/// values are top-level fields by name, so `redis-cli XRANGE` shows them directly.
public struct FeatureSnapshot: StreamMessage, Equatable {
    public static let schemaVersion = 1

    public var symbol: String
    /// Of the last tick in the window.
    public var tsNs: Int64
    public var windowMs: Int
    public var nQuotes: Int
    public var nTrades: Int
    public var tradeVolume: Double
    public var lastPrice: Double
    /// True once the window holds a full W of the symbol's history (or the service rebuilt it);
    /// strategies emit nothing on a cold window.
    public var warm: Bool
    public var features: FeatureVector

    enum CodingKeys: String, CodingKey {
        case symbol, warm
        case tsNs = "ts_ns"
        case windowMs = "window_ms"
        case nQuotes = "n_quotes"
        case nTrades = "n_trades"
        case tradeVolume = "trade_volume"
        case lastPrice = "last_price"
    }

    public init(
        symbol: String, tsNs: Int64, windowMs: Int, nQuotes: Int, nTrades: Int, tradeVolume: Double,
        lastPrice: Double, warm: Bool, features: FeatureVector
    ) {
        self.symbol = symbol
        self.tsNs = tsNs
        self.windowMs = windowMs
        self.nQuotes = nQuotes
        self.nTrades = nTrades
        self.tradeVolume = tradeVolume
        self.lastPrice = lastPrice
        self.warm = warm
        self.features = features
    }

    // The feature vector is flattened into the snapshot's own fields.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        symbol = try c.decode(String.self, forKey: .symbol)
        tsNs = try c.decode(Int64.self, forKey: .tsNs)
        windowMs = try c.decode(Int.self, forKey: .windowMs)
        nQuotes = try c.decode(Int.self, forKey: .nQuotes)
        nTrades = try c.decode(Int.self, forKey: .nTrades)
        tradeVolume = try c.decode(Double.self, forKey: .tradeVolume)
        lastPrice = try c.decode(Double.self, forKey: .lastPrice)
        warm = try c.decodeIfPresent(Bool.self, forKey: .warm) ?? true
        features = try FeatureVector(from: decoder)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(symbol, forKey: .symbol)
        try c.encode(tsNs, forKey: .tsNs)
        try c.encode(windowMs, forKey: .windowMs)
        try c.encode(nQuotes, forKey: .nQuotes)
        try c.encode(nTrades, forKey: .nTrades)
        try c.encode(tradeVolume, forKey: .tradeVolume)
        try c.encode(lastPrice, forKey: .lastPrice)
        try c.encode(warm, forKey: .warm)
        try features.encode(to: encoder)
    }
}

/// Emitted by `strategy-engine` to `te:signals`.
public struct Signal: StreamMessage, Equatable {
    public static let schemaVersion = 1

    /// Deterministic from (symbol, strategy, ts_ns): a redelivered snapshot yields the same id.
    public var id: String
    public var symbol: String
    public var strategy: String
    public var direction: Direction
    /// In [0, 1].
    public var confidence: Double
    public var tsNs: Int64
    public var features: FeatureVector

    enum CodingKeys: String, CodingKey {
        case id, symbol, strategy, direction, confidence, features
        case tsNs = "ts_ns"
    }

    public init(
        id: String, symbol: String, strategy: String, direction: Direction, confidence: Double, tsNs: Int64,
        features: FeatureVector
    ) {
        self.id = id
        self.symbol = symbol
        self.strategy = strategy
        self.direction = direction
        self.confidence = confidence
        self.tsNs = tsNs
        self.features = features
    }

    public static func makeID(symbol: String, strategy: String, tsNs: Int64) -> String {
        "\(symbol):\(strategy):\(tsNs)"
    }
}

/// Emitted by `opportunity-aggregator` to `te:opportunities`.
public struct Opportunity: StreamMessage, Equatable {
    public static let schemaVersion = 1

    public var id: String
    public var symbol: String
    public var direction: Direction
    public var confidence: Double
    public var strategies: [String]
    public var signalIds: [String]
    public var firstTsNs: Int64
    public var lastTsNs: Int64
    public var count: Int
    /// Why this entry was emitted (`first`, `upgrade`, `close`), so a reader can keep the latest per id.
    public var emitReason: String?
    /// Set when a signal of the opposite direction for the symbol arrived inside the window.
    public var conflict: Bool?

    enum CodingKeys: String, CodingKey {
        case id, symbol, direction, confidence, strategies, count, conflict
        case signalIds = "signal_ids"
        case firstTsNs = "first_ts_ns"
        case lastTsNs = "last_ts_ns"
        case emitReason = "emit_reason"
    }

    public init(
        id: String, symbol: String, direction: Direction, confidence: Double, strategies: [String],
        signalIds: [String], firstTsNs: Int64, lastTsNs: Int64, count: Int, emitReason: String? = nil,
        conflict: Bool? = nil
    ) {
        self.id = id
        self.symbol = symbol
        self.direction = direction
        self.confidence = confidence
        self.strategies = strategies
        self.signalIds = signalIds
        self.firstTsNs = firstTsNs
        self.lastTsNs = lastTsNs
        self.count = count
        self.emitReason = emitReason
        self.conflict = conflict
    }
}

/// Body of `POST /v1/score`.
public struct ScoreRequest: Codable, Sendable, Equatable {
    public var symbol: String
    public var tsNs: Int64?
    /// 8 numbers in model order; without them the gateway uses its latest features for the symbol.
    public var features: [Double]?
    /// Upper bound on the age of the gateway's own features.
    public var freshnessMs: Int?

    enum CodingKeys: String, CodingKey {
        case symbol, features
        case tsNs = "ts_ns"
        case freshnessMs = "freshness_ms"
    }

    public init(symbol: String, tsNs: Int64? = nil, features: [Double]? = nil, freshnessMs: Int? = nil) {
        self.symbol = symbol
        self.tsNs = tsNs
        self.features = features
        self.freshnessMs = freshnessMs
    }
}

public enum Decision: String, Codable, Sendable {
    case trade
    case noTrade = "no_trade"
    case abstain
}

public enum ScoreSource: String, Codable, Sendable, CaseIterable { case model, cache, rules, abstain }

public struct ModelIdentity: Codable, Sendable, Equatable, Hashable {
    public var name: String
    public var version: String
    public var hash: String

    public init(name: String, version: String, hash: String) {
        self.name = name
        self.version = version
        self.hash = hash
    }
}

/// Response 200 of `POST /v1/score`.
public struct ScoreResponse: Codable, Sendable, Equatable {
    /// The audit key of this decision (`decisions.decision_id`).
    public var decisionId: String
    public var requestId: String
    public var symbol: String
    public var decision: Decision
    public var score: Double?
    public var source: ScoreSource
    public var model: ModelIdentity?
    public var featureAgeMs: Double?
    public var latencyUs: Int64
    /// Why the earlier links of the fallback chain did not answer (e.g. `primary_timeout,breaker_open`).
    public var reason: String?

    enum CodingKeys: String, CodingKey {
        case symbol, decision, score, source, model, reason
        case decisionId = "decision_id"
        case requestId = "request_id"
        case featureAgeMs = "feature_age_ms"
        case latencyUs = "latency_us"
    }

    public init(
        decisionId: String, requestId: String, symbol: String, decision: Decision, score: Double?, source: ScoreSource,
        model: ModelIdentity?, featureAgeMs: Double?, latencyUs: Int64, reason: String? = nil
    ) {
        self.decisionId = decisionId
        self.requestId = requestId
        self.symbol = symbol
        self.decision = decision
        self.score = score
        self.source = source
        self.model = model
        self.featureAgeMs = featureAgeMs
        self.latencyUs = latencyUs
        self.reason = reason
    }
}

public struct CanaryResult: Codable, Sendable, Equatable {
    public var version: String
    public var score: Double?
    /// `shadow` (scored beside the primary) or `canary` (answered the request).
    public var mode: String?

    public init(version: String, score: Double?, mode: String? = nil) {
        self.version = version
        self.score = score
        self.mode = mode
    }
}

/// One per gateway decision, on `te:audit`, persisted by `audit-writer`. `decisionId` is the audit key
/// (a UUID the gateway makes for every decision); `requestId` is the client's id, not necessarily unique.
public struct AuditRecord: StreamMessage, Equatable {
    /// 2: `decision_id`, `feature_snapshot_id`, `feature_ts_ns`, `trace_id`, `client`. A v1 entry (no
    /// `decision_id`; its request_id was always a gateway-made UUID) decodes with decision_id = request_id.
    public static let schemaVersion = 2

    public var decisionId: String
    public var requestId: String
    public var tsNs: Int64
    public var symbol: String
    public var decision: Decision
    public var score: Double?
    public var source: ScoreSource
    public var modelName: String?
    public var modelVersion: String?
    public var modelHash: String?
    /// The snapshot used, by feature name.
    public var features: FeatureVector?
    /// The `te:features` entry id the features came from; nil when they came in the request (or from
    /// `te:online`, which has no entry id).
    public var featureSnapshotId: String?
    /// That snapshot's `ts_ns`.
    public var featureTsNs: Int64?
    public var featureAgeMs: Double?
    public var latencyUs: Int64
    public var canary: CanaryResult?
    public var reason: String?
    /// W3C trace id (32 hex) when the request carried or started a trace.
    public var traceId: String?
    /// The API key's client name; nil when auth is off.
    public var client: String?

    enum CodingKeys: String, CodingKey {
        case symbol, decision, score, source, features, canary, reason, client
        case decisionId = "decision_id"
        case requestId = "request_id"
        case tsNs = "ts_ns"
        case modelName = "model_name"
        case modelVersion = "model_version"
        case modelHash = "model_hash"
        case featureSnapshotId = "feature_snapshot_id"
        case featureTsNs = "feature_ts_ns"
        case featureAgeMs = "feature_age_ms"
        case latencyUs = "latency_us"
        case traceId = "trace_id"
    }

    public init(
        decisionId: String, requestId: String, tsNs: Int64, symbol: String, decision: Decision, score: Double?,
        source: ScoreSource, modelName: String?, modelVersion: String?, modelHash: String?, features: FeatureVector?,
        featureAgeMs: Double?, latencyUs: Int64, canary: CanaryResult? = nil, reason: String? = nil,
        featureSnapshotId: String? = nil, featureTsNs: Int64? = nil, traceId: String? = nil, client: String? = nil
    ) {
        self.decisionId = decisionId
        self.requestId = requestId
        self.tsNs = tsNs
        self.symbol = symbol
        self.decision = decision
        self.score = score
        self.source = source
        self.modelName = modelName
        self.modelVersion = modelVersion
        self.modelHash = modelHash
        self.features = features
        self.featureAgeMs = featureAgeMs
        self.latencyUs = latencyUs
        self.canary = canary
        self.reason = reason
        self.featureSnapshotId = featureSnapshotId
        self.featureTsNs = featureTsNs
        self.traceId = traceId
        self.client = client
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        requestId = try c.decode(String.self, forKey: .requestId)
        decisionId = try c.decodeIfPresent(String.self, forKey: .decisionId) ?? requestId
        tsNs = try c.decode(Int64.self, forKey: .tsNs)
        symbol = try c.decode(String.self, forKey: .symbol)
        decision = try c.decode(Decision.self, forKey: .decision)
        score = try c.decodeIfPresent(Double.self, forKey: .score)
        source = try c.decode(ScoreSource.self, forKey: .source)
        modelName = try c.decodeIfPresent(String.self, forKey: .modelName)
        modelVersion = try c.decodeIfPresent(String.self, forKey: .modelVersion)
        modelHash = try c.decodeIfPresent(String.self, forKey: .modelHash)
        features = try c.decodeIfPresent(FeatureVector.self, forKey: .features)
        featureSnapshotId = try c.decodeIfPresent(String.self, forKey: .featureSnapshotId)
        featureTsNs = try c.decodeIfPresent(Int64.self, forKey: .featureTsNs)
        featureAgeMs = try c.decodeIfPresent(Double.self, forKey: .featureAgeMs)
        latencyUs = try c.decode(Int64.self, forKey: .latencyUs)
        canary = try c.decodeIfPresent(CanaryResult.self, forKey: .canary)
        reason = try c.decodeIfPresent(String.self, forKey: .reason)
        traceId = try c.decodeIfPresent(String.self, forKey: .traceId)
        client = try c.decodeIfPresent(String.self, forKey: .client)
    }
}

/// An entry of `te:dlq`: what a stage could not use, why, and the raw payload.
///
/// The payload is kept byte-exact so that `te dlq redrive` sends back exactly what was received: bytes
/// that are valid UTF-8 are stored as that text (`encoding` absent); anything else (a binary Kafka value,
/// invalid UTF-8) is stored as standard base64 with `encoding` = `base64`. `payloadBytes` gives the
/// original bytes back either way.
public struct DeadLetter: StreamMessage, Equatable {
    public static let schemaVersion = 1

    public var stage: String
    public var reason: String
    /// The raw payload as received (a Kafka value, or a stream entry's fields as JSON), as text; base64 of
    /// it when `encoding` is `base64`.
    public var payload: String
    /// Absent: `payload` is the payload itself. `base64`: `payload` is the base64 of bytes that are not
    /// valid UTF-8.
    public var encoding: String?
    /// Where it came from: a stream key or `kafka:<topic>/<partition>@<offset>`.
    public var source: String?
    /// The id of the source stream entry, for `te dlq redrive`.
    public var sourceId: String?
    public var deliveries: Int?
    public var tsNs: Int64

    public static let base64Encoding = "base64"

    enum CodingKeys: String, CodingKey {
        case stage, reason, payload, encoding, source, deliveries
        case sourceId = "source_id"
        case tsNs = "ts_ns"
    }

    public init(
        stage: String, reason: String, payload: String, source: String? = nil, sourceId: String? = nil,
        deliveries: Int? = nil, tsNs: Int64
    ) {
        self.stage = stage
        self.reason = reason
        self.payload = payload
        self.source = source
        self.sourceId = sourceId
        self.deliveries = deliveries
        self.tsNs = tsNs
    }

    /// A letter for raw bytes: as text when they are valid UTF-8, else base64 with `encoding` = `base64`.
    public init(
        stage: String, reason: String, payloadBytes: [UInt8], source: String? = nil, sourceId: String? = nil,
        deliveries: Int? = nil, tsNs: Int64
    ) {
        self.init(
            stage: stage, reason: reason, payload: "", source: source, sourceId: sourceId, deliveries: deliveries,
            tsNs: tsNs)
        if let text = String(validating: payloadBytes, as: UTF8.self) {
            payload = text
        } else {
            payload = Base64.encode(payloadBytes)
            encoding = Self.base64Encoding
        }
    }

    /// The payload's original bytes; nil when `encoding` is unknown or its base64 is damaged.
    public var payloadBytes: [UInt8]? {
        switch encoding {
        case nil: Array(payload.utf8)
        case Self.base64Encoding?: Base64.decode(payload)
        default: nil
        }
    }
}

/// Standard base64 (RFC 4648 §4, with padding), for binary dead-letter payloads.
public enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    public static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i < bytes.count {
            let n = min(3, bytes.count - i)
            let b0 = UInt32(bytes[i])
            let b1 = n > 1 ? UInt32(bytes[i + 1]) : 0
            let b2 = n > 2 ? UInt32(bytes[i + 2]) : 0
            let v = b0 << 16 | b1 << 8 | b2
            out.append(alphabet[Int(v >> 18 & 63)])
            out.append(alphabet[Int(v >> 12 & 63)])
            out.append(n > 1 ? alphabet[Int(v >> 6 & 63)] : UInt8(ascii: "="))
            out.append(n > 2 ? alphabet[Int(v & 63)] : UInt8(ascii: "="))
            i += 3
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Nil unless `text` is padded standard base64.
    public static func decode(_ text: String) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count % 4 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(chars.count / 4 * 3)
        func value(_ c: UInt8) -> UInt32? {
            switch c {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): UInt32(c - UInt8(ascii: "A"))
            case UInt8(ascii: "a")...UInt8(ascii: "z"): UInt32(c - UInt8(ascii: "a") + 26)
            case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt32(c - UInt8(ascii: "0") + 52)
            case UInt8(ascii: "+"): 62
            case UInt8(ascii: "/"): 63
            default: nil
            }
        }
        var i = 0
        while i < chars.count {
            let last = i + 4 == chars.count
            let pad = last ? (chars[i + 3] == UInt8(ascii: "=") ? (chars[i + 2] == UInt8(ascii: "=") ? 2 : 1) : 0) : 0
            guard let a = value(chars[i]), let b = value(chars[i + 1]) else { return nil }
            let c = pad >= 2 ? 0 : value(chars[i + 2])
            let d = pad >= 1 ? 0 : value(chars[i + 3])
            guard let c, let d else { return nil }
            let v = a << 18 | b << 12 | c << 6 | d
            out.append(UInt8(v >> 16 & 255))
            if pad < 2 { out.append(UInt8(v >> 8 & 255)) }
            if pad < 1 { out.append(UInt8(v & 255)) }
            i += 4
        }
        return out
    }
}
