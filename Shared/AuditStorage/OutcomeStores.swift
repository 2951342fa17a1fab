import Foundation
import TEModels
import TEPostgres

/// A table `audit-writer` fills from a stream, idempotently on the message's key: rows already there
/// (redeliveries, an outcome written twice) are skipped.
public protocol StreamRowStore: Sendable {
    associatedtype Row: StreamMessage
    var connection: PostgresConnection { get }
    /// Why PostgreSQL would reject `row`, nil when it would not.
    static func problem(with row: Row) -> String?
    /// Inserts `rows` (all checked by `problem`) in one statement; returns the rows inserted.
    func insert(_ rows: [Row]) async throws -> Int
}

extension StreamRowStore {
    /// Inserts in one transaction per batch of at most `chunk` rows; rows with a `problem` are returned
    /// (index, reason) instead. Returns the rows inserted.
    public func insertSkippingBadRows(_ rows: [Row]) async throws -> (
        inserted: Int, rejected: [(index: Int, reason: String)]
    ) {
        var rejected: [(index: Int, reason: String)] = []
        var good: [Row] = []
        for (index, row) in rows.enumerated() {
            if let problem = Self.problem(with: row) { rejected.append((index, problem)) } else { good.append(row) }
        }
        guard !good.isEmpty else { return (0, rejected) }
        return (try await insert(good), rejected)
    }

    /// `INSERT INTO table (columns) VALUES (…), (…) ON CONFLICT (key) DO NOTHING` for `rows` rows; each
    /// column's value is its `values` template with `#` standing for the row's parameter ($n).
    static func insertSQL(table: String, columns: [String], values: [String], key: String, rows: Int) -> String {
        var sql = "INSERT INTO \(table) (\(columns.joined(separator: ", "))) VALUES "
        var n = 0
        for r in 0..<rows {
            if r > 0 { sql += ", " }
            sql += "("
            for c in columns.indices {
                n += 1
                if c > 0 { sql += ", " }
                sql += values[c].replacingOccurrences(of: "#", with: "$\(n)")
            }
            sql += ")"
        }
        return sql + " ON CONFLICT (\(key)) DO NOTHING"
    }

    /// Text of a double that PostgreSQL reads back exactly.
    static func text(_ value: Double?) -> String? { value.map { "\($0)" } }

    static func textProblem(_ texts: [(String, String?)]) -> String? {
        for case (let column, let text?) in texts where text.utf8.contains(0) {
            return "\(column) contains a NUL character, which PostgreSQL text cannot hold"
        }
        return nil
    }
}

/// `outcomes`: one row per decision's Outcome, keyed on `decision_id`.
public struct OutcomeStore: StreamRowStore {
    public let connection: PostgresConnection

    public init(connection: PostgresConnection) {
        self.connection = connection
    }

    static let columns = [
        "decision_id", "symbol", "model_version", "score", "decision", "horizon_ms", "mid_at_decision",
        "mid_at_horizon", "spread_bps_at_decision", "return_bps", "eligible", "resolved_ts_ns", "reason"
    ]
    static let values = [
        "#::uuid", "#", "#", "#::float8", "#", "#::integer", "#::float8", "#::float8", "#::float8",
        "#::float8", "#::boolean", "#::bigint", "#"
    ]

    public static func problem(with row: Outcome) -> String? {
        guard AuditStore.isUUID(row.decisionId) else {
            return "decision_id is not a UUID: \(String(row.decisionId.prefix(64)).debugDescription)"
        }
        return textProblem([("symbol", row.symbol), ("model_version", row.modelVersion), ("reason", row.reason)])
    }

    public func insert(_ rows: [Outcome]) async throws -> Int {
        var inserted = 0
        // 13 parameters per row: 500 rows stay far below PostgreSQL's 65535 parameters per statement.
        for start in stride(from: 0, to: rows.count, by: 500) {
            let chunk = rows[start..<min(start + 500, rows.count)]
            var parameters: [String?] = []
            parameters.reserveCapacity(chunk.count * Self.columns.count)
            for o in chunk {
                parameters += [
                    o.decisionId, o.symbol, o.modelVersion, Self.text(o.score), o.decision.rawValue,
                    String(o.horizonMs),
                    Self.text(o.midAtDecision), Self.text(o.midAtHorizon), Self.text(o.spreadBpsAtDecision),
                    Self.text(o.returnBps), o.eligible.map { $0 ? "true" : "false" }, String(o.resolvedTsNs), o.reason
                ]
            }
            inserted += try await connection.execute(
                Self.insertSQL(
                    table: "outcomes", columns: Self.columns, values: Self.values, key: "decision_id", rows: chunk.count
                ),
                parameters)
        }
        return inserted
    }
}

/// `rollout_events`: one row per RolloutEvent, keyed on `event_id`.
public struct RolloutEventStore: StreamRowStore {
    public let connection: PostgresConnection

    public init(connection: PostgresConnection) {
        self.connection = connection
    }

    static let columns = [
        "event_id", "ts_ns", "occurred_at", "kind", "model_name", "from_version", "to_version", "metric", "value",
        "\"limit\"", "replica"
    ]
    // occurred_at is ts_ns to the microsecond (integer arithmetic, as decisions.decided_at).
    static let values = [
        "#::uuid", "#::bigint", "to_timestamp(0) + (#::bigint / 1000) * interval '1 microsecond'", "#",
        "#", "#", "#", "#", "#::float8", "#::float8", "#"
    ]

    public static func problem(with row: RolloutEvent) -> String? {
        guard AuditStore.isUUID(row.eventId) else {
            return "event_id is not a UUID: \(String(row.eventId.prefix(64)).debugDescription)"
        }
        return textProblem([
            ("model_name", row.modelName), ("from_version", row.fromVersion), ("to_version", row.toVersion),
            ("metric", row.metric), ("replica", row.replica)
        ])
    }

    public func insert(_ rows: [RolloutEvent]) async throws -> Int {
        var parameters: [String?] = []
        for e in rows {
            parameters += [
                e.eventId, String(e.tsNs), String(e.tsNs), e.kind.rawValue, e.modelName, e.fromVersion, e.toVersion,
                e.metric, Self.text(e.value), Self.text(e.limit), e.replica
            ]
        }
        let sql = Self.insertSQL(
            table: "rollout_events", columns: Self.columns, values: Self.values, key: "event_id", rows: rows.count)
        return try await connection.execute(sql, parameters)
    }
}
