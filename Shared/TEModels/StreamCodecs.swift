// The codec of each hot message: fields written straight into bytes (StreamFieldWriter) and read by a
// hand-written reader (StreamFieldDecodable). Field order and text are those of the Codable encoding
// (CodingKeys order, `nil` omitted), which is the contract; ModelsTests compares the two.

/// A message with its own writer. `StreamFieldEncoder` and `StreamFieldWriter(encoding:)` use it.
public protocol StreamFieldEncodable: StreamMessage {
    /// The message's fields after `v`, in CodingKeys order.
    func writeFields(to writer: inout StreamFieldWriter) throws(MessageEncodingError)
}

extension StreamFieldEncodable {
    /// `v` then the message's fields.
    public func streamFields(capacity: Int = 256) throws(MessageEncodingError) -> StreamFieldWriter {
        var writer = StreamFieldWriter(capacity: capacity)
        writer.field("v", int: Self.schemaVersion)
        try writeFields(to: &writer)
        return writer
    }
}

extension Tick: StreamFieldEncodable {
    public func writeFields(to w: inout StreamFieldWriter) throws(MessageEncodingError) {
        w.field("symbol", symbol)
        w.field("kind", kind.rawValue)
        if let bid { w.field("bid", double: bid) }
        if let ask { w.field("ask", double: ask) }
        if let bids {
            try w.field("bids") { (j: inout JSONTextWriter) throws(MessageEncodingError) in try j.levels(bids) }
        }
        if let asks {
            try w.field("asks") { (j: inout JSONTextWriter) throws(MessageEncodingError) in try j.levels(asks) }
        }
        if let price { w.field("price", double: price) }
        if let size { w.field("size", double: size) }
        if let side { w.field("side", side.rawValue) }
        if let venue { w.field("venue", venue) }
        if let seq { w.field("seq", int: seq) }
        w.field("ts_ns", int: tsNs)
        if let bidSize { w.field("bid_size", double: bidSize) }
        if let askSize { w.field("ask_size", double: askSize) }
        if let exchangeTsNs { w.field("exchange_ts_ns", int: exchangeTsNs) }
    }
}

extension FeatureVector {
    /// The vector's values as top-level fields, in FeatureVector.CodingKeys order.
    func writeFields(to w: inout StreamFieldWriter) {
        w.field("imbalance", double: imbalance)
        w.field("spread_bps", double: spreadBps)
        w.field("depth_imbalance", double: depthImbalance)
        w.field("ofi_norm", double: ofiNorm)
        w.field("realized_vol_bps", double: realizedVolBps)
        w.field("mid_return_bps", double: midReturnBps)
        w.field("tick_rate", double: tickRate)
        w.field("microprice_offset_bps", double: micropriceOffsetBps)
    }

    /// The vector as a JSON object by feature name, keys sorted (a signal's and an audit record's
    /// `features`, the `decisions.features` column); nil when a value is not finite.
    public var jsonText: String? {
        var json = JSONTextWriter()
        guard (try? json.features(self)) != nil else { return nil }
        return json.text
    }
}

extension FeatureSnapshot: StreamFieldEncodable {
    public func writeFields(to w: inout StreamFieldWriter) throws(MessageEncodingError) {
        w.field("symbol", symbol)
        w.field("ts_ns", int: tsNs)
        w.field("window_ms", int: windowMs)
        w.field("n_quotes", int: nQuotes)
        w.field("n_trades", int: nTrades)
        w.field("trade_volume", double: tradeVolume)
        w.field("last_price", double: lastPrice)
        w.field("warm", bool: warm)
        features.writeFields(to: &w)
    }
}

extension Signal: StreamFieldEncodable {
    public func writeFields(to w: inout StreamFieldWriter) throws(MessageEncodingError) {
        w.field("id", id)
        w.field("symbol", symbol)
        w.field("strategy", strategy)
        w.field("direction", direction.rawValue)
        w.field("confidence", double: confidence)
        try w.field("features") { (j: inout JSONTextWriter) throws(MessageEncodingError) in try j.features(features) }
        w.field("ts_ns", int: tsNs)
    }
}

extension Opportunity: StreamFieldEncodable {
    public func writeFields(to w: inout StreamFieldWriter) throws(MessageEncodingError) {
        w.field("id", id)
        w.field("symbol", symbol)
        w.field("direction", direction.rawValue)
        w.field("confidence", double: confidence)
        try w.field("strategies") { (j: inout JSONTextWriter) throws(MessageEncodingError) in j.strings(strategies) }
        w.field("count", int: count)
        if let conflict { w.field("conflict", bool: conflict) }
        try w.field("signal_ids") { (j: inout JSONTextWriter) throws(MessageEncodingError) in j.strings(signalIds) }
        w.field("first_ts_ns", int: firstTsNs)
        w.field("last_ts_ns", int: lastTsNs)
        if let emitReason { w.field("emit_reason", emitReason) }
    }
}

extension AuditRecord: StreamFieldEncodable {
    public func writeFields(to w: inout StreamFieldWriter) throws(MessageEncodingError) {
        w.field("symbol", symbol)
        w.field("decision", decision.rawValue)
        if let score { w.field("score", double: score) }
        w.field("source", source.rawValue)
        if let features {
            try w.field("features") { (j: inout JSONTextWriter) throws(MessageEncodingError) in try j.features(features)
            }
        }
        if let canary {
            try w.field("canary") { (j: inout JSONTextWriter) throws(MessageEncodingError) in
                // Keys sorted; a score that is not a number is left out (the gateway records no NaN).
                j.raw("{")
                if let mode = canary.mode {
                    j.raw("\"mode\":")
                    j.string(mode)
                    j.raw(",")
                }
                if let score = canary.score, score.isFinite {
                    j.raw("\"score\":")
                    try j.number(score)
                    j.raw(",")
                }
                j.raw("\"version\":")
                j.string(canary.version)
                j.raw("}")
            }
        }
        if let reason { w.field("reason", reason) }
        if let client { w.field("client", client) }
        w.field("decision_id", decisionId)
        w.field("request_id", requestId)
        w.field("ts_ns", int: tsNs)
        if let modelName { w.field("model_name", modelName) }
        if let modelVersion { w.field("model_version", modelVersion) }
        if let modelHash { w.field("model_hash", modelHash) }
        if let featureSnapshotId { w.field("feature_snapshot_id", featureSnapshotId) }
        if let featureTsNs { w.field("feature_ts_ns", int: featureTsNs) }
        if let featureAgeMs { w.field("feature_age_ms", double: featureAgeMs) }
        w.field("latency_us", int: latencyUs)
        if let traceId { w.field("trace_id", traceId) }
    }
}
