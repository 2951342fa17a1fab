import GatewayCore
import TEModels
import Testing

/// The gateway's hand-written audit field encoder against hand-computed fields and against the
/// reference `StreamFieldEncoder` (same names, order and scalar text; JSON fields decode to the same).
@Suite struct AuditFieldsTests {
    static let features = FeatureVector(
        spreadBps: 0.5, imbalance: -0.25, depthImbalance: 0, ofiNorm: 1e-7, realizedVolBps: 2, midReturnBps: -3.125,
        tickRate: 10, micropriceOffsetBps: 0.1)

    static let records: [AuditRecord] = [
        AuditRecord(
            decisionId: "00000000-0000-4000-8000-000000000001", requestId: "req-1", tsNs: 1_700_000_000_123_456_789, symbol: "BTCUSDT", decision: .trade, score: 0.75,
            source: .model, modelName: "trade_eligibility", modelVersion: "1", modelHash: "abc", features: features,
            featureAgeMs: 12.5, latencyUs: 640, canary: CanaryResult(version: "2", score: 0.7, mode: "shadow"),
            reason: nil, featureSnapshotId: "1700000000123-7", featureTsNs: 1_700_000_000_100_000_000,
            traceId: "4bf92f3577b34da6a3ce929d0e0e4736", client: "desk-a"),
        AuditRecord(
            decisionId: "00000000-0000-4000-8000-000000000002", requestId: "req-2", tsNs: 1, symbol: "ETHUSDT", decision: .abstain, score: nil, source: .abstain,
            modelName: nil, modelVersion: nil, modelHash: nil, features: nil, featureAgeMs: nil, latencyUs: 0,
            canary: nil, reason: "features_missing,cache_miss"),
        AuditRecord(
            decisionId: "00000000-0000-4000-8000-000000000003", requestId: "req-3", tsNs: 2, symbol: "*", decision: .abstain, score: nil, source: .abstain,
            modelName: "m\"x", modelVersion: "2", modelHash: "h", features: nil, featureAgeMs: 0, latencyUs: 0,
            canary: CanaryResult(version: "2\\n", score: nil, mode: "rollback"), reason: "canary_rollback:p99_ms=30.0"),
        AuditRecord(
            decisionId: "00000000-0000-4000-8000-000000000004", requestId: "req-4", tsNs: 3, symbol: "BTCUSDT-PERP", decision: .noTrade, score: 1e-9, source: .rules,
            modelName: nil, modelVersion: nil, modelHash: nil, features: features, featureAgeMs: 1999.999,
            latencyUs: 12, canary: CanaryResult(version: "2", score: nil, mode: nil), reason: "primary_timeout"),
    ]

    @Test func handComputedFields() throws {
        let fields = try AuditFields.encode(Self.records[0])
        #expect(fields.map(\.0) == [
            "v", "symbol", "decision", "score", "source", "features", "canary", "client", "decision_id", "request_id",
            "ts_ns", "model_name", "model_version", "model_hash", "feature_snapshot_id", "feature_ts_ns", "feature_age_ms",
            "latency_us", "trace_id",
        ])
        let byName = Dictionary(uniqueKeysWithValues: fields)
        #expect(byName["v"] == "2")
        #expect(byName["feature_ts_ns"] == "1700000000100000000")
        #expect(byName["ts_ns"] == "1700000000123456789")
        #expect(byName["decision"] == "trade")
        #expect(byName["score"] == "0.75")
        #expect(byName["feature_age_ms"] == "12.5")
        #expect(byName["latency_us"] == "640")
        #expect(
            byName["features"]
                == #"{"depth_imbalance":0,"imbalance":-0.25,"microprice_offset_bps":0.1,"mid_return_bps":-3.125,"ofi_norm":1e-07,"realized_vol_bps":2,"spread_bps":0.5,"tick_rate":10}"#
        )
        #expect(byName["canary"] == #"{"mode":"shadow","score":0.7,"version":"2"}"#)
    }

    @Test(arguments: records) func matchesReferenceEncoder(_ record: AuditRecord) throws {
        let fast = try AuditFields.encode(record)
        let reference = try StreamFieldEncoder.encode(record)
        #expect(fast.map(\.0) == reference.map(\.0))
        for ((name, a), (_, b)) in zip(fast, reference) where name != "features" && name != "canary" {
            #expect(a == b, "field \(name)")
        }
        #expect(try StreamFieldDecoder.decode(AuditRecord.self, from: fast) == record)
    }

    /// A v1 entry (written before decision_id existed) decodes with decision_id = its request_id.
    @Test func version1EntryDecodesWithRequestIDAsDecisionID() throws {
        var fields = try AuditFields.encode(Self.records[1]).filter { $0.0 != "decision_id" }
        fields[0] = ("v", "1")
        let decoded = try StreamFieldDecoder.decode(AuditRecord.self, from: fields)
        #expect(decoded.decisionId == "req-2")
        #expect(decoded.requestId == "req-2")
    }
}
