import ServiceKit
import TEModels

/// `AuditRecord` → `te:audit` stream fields by hand: the same fields, order and scalar text as
/// `StreamFieldEncoder` (v first, nil omitted, scalars as text, nested values as JSON text), which
/// stays the reference (tests compare the two and decode these with `StreamFieldDecoder`). Codable
/// encoding of one record was 7.5 % of the gateway's CPU at 32 connections (perf), on the same two
/// cores as the requests.
public enum AuditFields {
    public static func encode(_ r: AuditRecord) throws -> [(String, String)] {
        // Non-finite numbers cannot be JSON: leave them to the reference encoder (which rejects them).
        if let f = r.features, !f.values.allSatisfy(\.isFinite) { return try StreamFieldEncoder.encode(r) }
        var fields: [(String, String)] = []
        fields.reserveCapacity(20)
        fields.append(("v", String(AuditRecord.schemaVersion)))
        // AuditRecord.CodingKeys order, which the synthesized encoder follows.
        fields.append(("symbol", r.symbol))
        fields.append(("decision", r.decision.rawValue))
        if let score = r.score { fields.append(("score", scalar(score))) }
        fields.append(("source", r.source.rawValue))
        if let f = r.features { fields.append(("features", json(f))) }
        if let c = r.canary { fields.append(("canary", json(c))) }
        if let reason = r.reason { fields.append(("reason", reason)) }
        if let client = r.client { fields.append(("client", client)) }
        fields.append(("decision_id", r.decisionId))
        fields.append(("request_id", r.requestId))
        fields.append(("ts_ns", String(r.tsNs)))
        if let v = r.modelName { fields.append(("model_name", v)) }
        if let v = r.modelVersion { fields.append(("model_version", v)) }
        if let v = r.modelHash { fields.append(("model_hash", v)) }
        if let v = r.featureSnapshotId { fields.append(("feature_snapshot_id", v)) }
        if let v = r.featureTsNs { fields.append(("feature_ts_ns", String(v))) }
        if let age = r.featureAgeMs { fields.append(("feature_age_ms", scalar(age))) }
        fields.append(("latency_us", String(r.latencyUs)))
        if let v = r.traceId { fields.append(("trace_id", v)) }
        return fields
    }

    /// A Double as stream text: integral values as integers, others in Swift's shortest round-trip form.
    static func scalar(_ value: Double) -> String {
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return "\(value)"
    }

    /// Keys sorted, as the reference JSON encoder writes them.
    static func json(_ f: FeatureVector) -> String {
        var s = "{\"depth_imbalance\":\(number(f.depthImbalance)),\"imbalance\":\(number(f.imbalance))"
        s += ",\"microprice_offset_bps\":\(number(f.micropriceOffsetBps)),\"mid_return_bps\":\(number(f.midReturnBps))"
        s += ",\"ofi_norm\":\(number(f.ofiNorm)),\"realized_vol_bps\":\(number(f.realizedVolBps))"
        s += ",\"spread_bps\":\(number(f.spreadBps)),\"tick_rate\":\(number(f.tickRate))}"
        return s
    }

    static func json(_ c: CanaryResult) -> String {
        var s = "{"
        if let mode = c.mode { s += "\"mode\":\"\(JSONText.escape(mode))\"," }
        if let score = c.score, score.isFinite { s += "\"score\":\(number(score))," }
        s += "\"version\":\"\(JSONText.escape(c.version))\"}"
        return s
    }

    /// JSON number (finite by construction); integral values without a fraction, like JSONEncoder.
    static func number(_ value: Double) -> String { scalar(value) }
}
