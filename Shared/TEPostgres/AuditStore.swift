import Foundation
import Logging
import TEModels

/// The `decisions` table: its migrations, the idempotent batch insert `audit-writer` uses, and the
/// queries `te audit` runs.
public struct AuditStore: Sendable {
    public let connection: PostgresConnection

    public init(connection: PostgresConnection) {
        self.connection = connection
    }

    public static let migrations: [Migration] = [
        Migration(
            version: 1, name: "create decisions",
            sql: """
                CREATE TABLE decisions (
                    request_id uuid PRIMARY KEY,
                    decided_at timestamptz NOT NULL,
                    ts_ns bigint NOT NULL,
                    symbol text NOT NULL,
                    decision text NOT NULL,
                    score double precision,
                    source text NOT NULL,
                    model_name text,
                    model_version text,
                    model_hash text,
                    features jsonb,
                    feature_age_ms double precision,
                    latency_us bigint NOT NULL,
                    canary_version text,
                    canary_score double precision,
                    canary_mode text,
                    reason text,
                    inserted_at timestamptz NOT NULL DEFAULT now()
                );
                CREATE INDEX decisions_symbol_decided_at ON decisions (symbol, decided_at DESC);
                CREATE INDEX decisions_model_version_decided_at ON decisions (model_version, decided_at);
                CREATE INDEX decisions_source_decided_at ON decisions (source, decided_at);
                """)
    ]

    /// Applies the missing migrations.
    @discardableResult
    public func migrate(logger: Logger) async throws -> [Int] {
        try await Migrator.migrate(connection, migrations: Self.migrations, logger: logger)
    }

    // MARK: Writing

    public struct InsertOutcome: Sendable, Equatable {
        /// New rows.
        public var inserted: Int
        /// Records whose request_id was already in the table (or repeated in the batch).
        public var duplicates: Int

        public init(inserted: Int, duplicates: Int) {
            self.inserted = inserted
            self.duplicates = duplicates
        }
    }

    /// Inserts `records` in one transaction: COPY into a session-temporary staging table, then
    /// `INSERT … SELECT … ON CONFLICT (request_id) DO NOTHING`. All or nothing: on error nothing is
    /// inserted and the error is thrown.
    public func insert(_ records: [AuditRecord]) async throws -> InsertOutcome {
        guard !records.isEmpty else { return InsertOutcome(inserted: 0, duplicates: 0) }
        let payload = Self.copyPayload(records)
        return try await connection.withTransaction { tx in
            // One staging table per session, emptied at every commit: no catalog churn per batch.
            try await tx.execute(script: """
                CREATE TEMP TABLE IF NOT EXISTS audit_staging (
                    request_id uuid NOT NULL,
                    ts_ns bigint NOT NULL,
                    symbol text NOT NULL,
                    decision text NOT NULL,
                    score double precision,
                    source text NOT NULL,
                    model_name text,
                    model_version text,
                    model_hash text,
                    features jsonb,
                    feature_age_ms double precision,
                    latency_us bigint NOT NULL,
                    canary_version text,
                    canary_score double precision,
                    canary_mode text,
                    reason text
                ) ON COMMIT DELETE ROWS
                """)
            _ = try await tx.copyFrom(Self.copySQL, data: payload)
            let inserted = try await tx.execute(Self.insertSQL)
            return InsertOutcome(inserted: inserted, duplicates: records.count - inserted)
        }
    }

    /// Like `insert`, but a batch rejected for its data (SQLSTATE class 22/23) is retried record by
    /// record, so the good records go in and each bad one comes back with the database's message.
    /// Errors that are not about the data (connection lost, server shutting down) are thrown.
    public func insertIsolatingBadRecords(
        _ records: [AuditRecord]
    ) async throws -> (outcome: InsertOutcome, rejected: [(index: Int, error: PostgresError)]) {
        do {
            return (try await insert(records), [])
        } catch let error as PostgresError where error.isDataError && records.count > 1 {
            var total = InsertOutcome(inserted: 0, duplicates: 0)
            var rejected: [(Int, PostgresError)] = []
            for (index, record) in records.enumerated() {
                do {
                    let outcome = try await insert([record])
                    total.inserted += outcome.inserted
                    total.duplicates += outcome.duplicates
                } catch let error as PostgresError where error.isDataError {
                    rejected.append((index, error))
                }
            }
            return (total, rejected)
        } catch let error as PostgresError where error.isDataError {
            return (InsertOutcome(inserted: 0, duplicates: 0), [(0, error)])
        }
    }

    static let columns = [
        "request_id", "ts_ns", "symbol", "decision", "score", "source", "model_name", "model_version",
        "model_hash", "features", "feature_age_ms", "latency_us", "canary_version", "canary_score",
        "canary_mode", "reason",
    ]

    static let copySQL =
        "COPY audit_staging (request_id, ts_ns, symbol, decision, score, source, model_name, model_version, model_hash, features, feature_age_ms, latency_us, canary_version, canary_score, canary_mode, reason) FROM STDIN"

    // decided_at is ts_ns exactly to the microsecond (integer arithmetic, no float rounding).
    static let insertSQL = """
        INSERT INTO decisions (request_id, decided_at, ts_ns, symbol, decision, score, source, model_name,
            model_version, model_hash, features, feature_age_ms, latency_us, canary_version, canary_score,
            canary_mode, reason)
        SELECT request_id, to_timestamp(0) + (ts_ns / 1000) * interval '1 microsecond', ts_ns, symbol, decision,
            score, source, model_name, model_version, model_hash, features, feature_age_ms, latency_us,
            canary_version, canary_score, canary_mode, reason
        FROM audit_staging
        ON CONFLICT (request_id) DO NOTHING
        """

    /// The COPY text payload of `records`, columns in `columns` order.
    public static func copyPayload(_ records: [AuditRecord]) -> [UInt8] {
        var encoder = CopyTextEncoder(reservingCapacity: records.count * 400)
        for record in records {
            encoder.append(record.requestId)
            encoder.append(String(record.tsNs))
            encoder.append(record.symbol)
            encoder.append(record.decision.rawValue)
            encoder.append(record.score.map(text))
            encoder.append(record.source.rawValue)
            encoder.append(record.modelName)
            encoder.append(record.modelVersion)
            encoder.append(record.modelHash)
            encoder.append(record.features.map(featuresJSON))
            encoder.append(record.featureAgeMs.map(text))
            encoder.append(String(record.latencyUs))
            encoder.append(record.canary?.version)
            encoder.append(record.canary?.score.map(text))
            encoder.append(record.canary?.mode)
            encoder.append(record.reason)
            encoder.endRow()
        }
        return encoder.bytes
    }

    /// Shortest text that reads back as the same double (PostgreSQL's float8 input is exact).
    static func text(_ value: Double) -> String { "\(value)" }

    private static let jsonEncoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }()

    /// The feature vector as a JSON object by feature name.
    static func featuresJSON(_ features: FeatureVector) -> String {
        // Encoding 8 finite doubles cannot fail.
        String(decoding: (try? jsonEncoder.encode(features)) ?? Data("{}".utf8), as: UTF8.self)
    }

    // MARK: Reading

    /// A stored decision: the record as sent plus the times the table adds.
    public struct StoredDecision: Sendable {
        public var record: AuditRecord
        /// `decided_at` as PostgreSQL prints it.
        public var decidedAt: String
    }

    static let selectColumns = """
        request_id, decided_at, ts_ns, symbol, decision, score, source, model_name, model_version, model_hash,
        features, feature_age_ms, latency_us, canary_version, canary_score, canary_mode, reason
        """

    /// The most recent `limit` decisions for `symbol`, newest first.
    public func recent(symbol: String, limit: Int) async throws -> [StoredDecision] {
        let result = try await connection.query(
            "SELECT \(Self.selectColumns) FROM decisions WHERE symbol = $1 ORDER BY decided_at DESC, request_id LIMIT $2",
            [symbol, String(limit)])
        return try result.rows.map { StoredDecision(record: try Self.record(from: $0), decidedAt: $0["decided_at"] ?? "") }
    }

    /// Every stored decision, by ts_ns (for tests and exports of small tables).
    public func all() async throws -> [AuditRecord] {
        let result = try await connection.query(
            "SELECT \(Self.selectColumns) FROM decisions ORDER BY ts_ns, request_id")
        return try result.rows.map(Self.record(from:))
    }

    public struct Count: Sendable, Equatable {
        public var source: String
        public var decision: String
        public var modelVersion: String?
        public var count: Int
    }

    /// Decisions with `since <= decided_at < until`, counted by source, decision and model version.
    /// `since`/`until` are timestamptz text (`2024-08-09 00:00:00+00`), nil for unbounded.
    public func counts(since: String?, until: String?) async throws -> [Count] {
        let result = try await connection.query(
            """
            SELECT source, decision, model_version, count(*) AS n FROM decisions
            WHERE ($1::timestamptz IS NULL OR decided_at >= $1::timestamptz)
              AND ($2::timestamptz IS NULL OR decided_at < $2::timestamptz)
            GROUP BY source, decision, model_version
            ORDER BY source, decision, model_version NULLS LAST
            """, [since, until])
        return result.rows.map {
            Count(source: $0["source"] ?? "", decision: $0["decision"] ?? "", modelVersion: $0["model_version"],
                  count: Int($0["n"] ?? "") ?? 0)
        }
    }

    public struct RowDecodingError: Error, CustomStringConvertible {
        public var column: String
        public var value: String?
        public var description: String { "decisions.\(column): unexpected value \(value ?? "NULL")" }
    }

    /// Rebuilds the AuditRecord a row was written from.
    public static func record(from row: PostgresRow) throws -> AuditRecord {
        func required(_ column: String) throws -> String {
            guard let value = row[column] else { throw RowDecodingError(column: column, value: nil) }
            return value
        }
        func double(_ column: String) throws -> Double? {
            guard let text = row[column] else { return nil }
            guard let value = Double(text) else { throw RowDecodingError(column: column, value: text) }
            return value
        }
        func int64(_ column: String) throws -> Int64 {
            let text = try required(column)
            guard let value = Int64(text) else { throw RowDecodingError(column: column, value: text) }
            return value
        }
        let decisionText = try required("decision")
        guard let decision = Decision(rawValue: decisionText) else {
            throw RowDecodingError(column: "decision", value: decisionText)
        }
        let sourceText = try required("source")
        guard let source = ScoreSource(rawValue: sourceText) else {
            throw RowDecodingError(column: "source", value: sourceText)
        }
        var features: FeatureVector?
        if let json = row["features"] {
            do {
                features = try JSONDecoder().decode(FeatureVector.self, from: Data(json.utf8))
            } catch {
                throw RowDecodingError(column: "features", value: json)
            }
        }
        let canary = row["canary_version"].map {
            CanaryResult(version: $0, score: try? double("canary_score"), mode: row["canary_mode"])
        }
        return AuditRecord(
            requestId: try required("request_id"), tsNs: try int64("ts_ns"), symbol: try required("symbol"),
            decision: decision, score: try double("score"), source: source, modelName: row["model_name"],
            modelVersion: row["model_version"], modelHash: row["model_hash"], features: features,
            featureAgeMs: try double("feature_age_ms"), latencyUs: try int64("latency_us"), canary: canary,
            reason: row["reason"])
    }
}
