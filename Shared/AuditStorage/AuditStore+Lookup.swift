import Foundation
import TEModels
import TEPostgres

/// Lookups for `te explain` and `te audit verify`: one decision by id, the model-sourced decisions of a
/// period, and a decision's outcome. Read-only (the `te_reader` role may run them).
extension AuditStore {
    /// The decision `decisionId`, nil when there is no such row (or the id is not a UUID, so none can exist).
    public func decision(id decisionId: String) async throws -> StoredDecision? {
        guard Self.isUUID(decisionId) else { return nil }
        let result = try await connection.query(
            "SELECT \(Self.selectColumns) FROM decisions WHERE decision_id = $1::uuid", [decisionId])
        return try result.rows.first.map {
            StoredDecision(record: try Self.record(from: $0), decidedAt: $0["decided_at"] ?? "")
        }
    }

    /// Decisions answered by the model (`source = model`) with `since <= decided_at < until`, oldest first, at
    /// most `limit`. `since`/`until` are timestamptz text, nil for unbounded.
    public func modelDecisions(since: String?, until: String?, limit: Int?) async throws -> [StoredDecision] {
        let result = try await connection.query(
            """
            SELECT \(Self.selectColumns) FROM decisions
            WHERE source = 'model'
              AND ($1::timestamptz IS NULL OR decided_at >= $1::timestamptz)
              AND ($2::timestamptz IS NULL OR decided_at < $2::timestamptz)
            ORDER BY decided_at, decision_id
            LIMIT $3::bigint
            """, [since, until, limit.map(String.init)])
        return try result.rows.map {
            StoredDecision(record: try Self.record(from: $0), decidedAt: $0["decided_at"] ?? "")
        }
    }

    /// The `outcomes` row of `decisionId` column by column (text as PostgreSQL prints it, nil for NULL); nil
    /// while the outcome is not known yet.
    public func outcome(decisionId: String) async throws -> [(column: String, value: String?)]? {
        guard Self.isUUID(decisionId) else { return nil }
        let result = try await connection.query(
            """
            SELECT horizon_ms, mid_at_decision, mid_at_horizon, spread_bps_at_decision, return_bps, eligible,
                   resolved_ts_ns, reason
            FROM outcomes WHERE decision_id = $1::uuid
            """, [decisionId])
        return result.rows.first.map { row in Array(zip(row.columns, row.values)).map { (column: $0.0, value: $0.1) } }
    }
}
