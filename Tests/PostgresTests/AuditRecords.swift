import AuditStorage
import Foundation
import TEModels
import TEPostgres

/// Varied AuditRecords: every optional field both present and absent, awkward text, extreme numbers.
enum AuditRecords {
    static func make(_ count: Int, symbol: String = "BTCUSDT", startTsNs: Int64 = 1_723_161_254_087_891_268)
        -> [AuditRecord]
    {
        (0..<count).map { i in
            let full = i % 3 != 2
            let features =
                full
                ? FeatureVector(
                    spreadBps: 0.1 + Double(i), imbalance: -0.25, depthImbalance: 1e-7, ofiNorm: -12345.678,
                    realizedVolBps: 3.0e10, midReturnBps: -0.0001, tickRate: 42, micropriceOffsetBps: Double(i) / 7)
                : nil
            let decisionID = UUID().uuidString.lowercased()
            // Client ids of every allowed shape, some repeated (request_id is not unique), or none.
            let requestID = [decisionID, "client-\(i)_X", "same-client-id", String(repeating: "z", count: 128)][i % 4]
            return AuditRecord(
                decisionId: decisionID, requestId: requestID,
                tsNs: startTsNs + Int64(i) * 1_000_003,
                symbol: i % 5 == 4 ? "ETH/USD" : symbol,
                decision: [Decision.trade, .noTrade, .abstain][i % 3],
                score: full ? Double(i % 100) / 97 : nil,
                source: ScoreSource.allCases[i % 4],
                modelName: full ? "trade_eligibility" : nil,
                modelVersion: full ? String(1 + i % 2) : nil,
                modelHash: full ? "sha256:ab\tc\\d\ne" : nil,
                features: features,
                featureAgeMs: full ? 12.5 + Double(i) : nil,
                latencyUs: Int64(100 + i),
                canary: i % 4 == 0
                    ? CanaryResult(version: "2", score: i % 8 == 0 ? 0.123456789012345 : nil, mode: "shadow") : nil,
                reason: i % 6 == 1 ? "primary_timeout,breaker_open — ünï" : nil,
                featureSnapshotId: full ? "1723161254087-\(i)" : nil, featureTsNs: full ? startTsNs - 1_000 : nil,
                traceId: i % 5 == 0 ? "4bf92f3577b34da6a3ce929d0e0e4736" : nil, client: i % 2 == 0 ? "desk-a" : nil)
        }
    }
}

extension AuditStore {
    /// Writer id of the tests that insert through the store directly.
    static let testWriter = "test-writer"

    /// Inserts as `testWriter`, continuing its chain from the table (as a writer does at start).
    func insert(_ records: [AuditRecord]) async throws -> InsertOutcome {
        var chain = try await chainHead(writer: Self.testWriter)
        return try await insert(records, chain: &chain)
    }

    func insertIsolatingBadRecords(
        _ records: [AuditRecord]
    ) async throws -> (outcome: InsertOutcome, rejected: [(index: Int, reason: String)]) {
        var chain = try await chainHead(writer: Self.testWriter)
        return try await insertIsolatingBadRecords(records, chain: &chain)
    }
}
