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
                """),
        // decision_id (the gateway's UUID per decision) becomes the key; request_id is the client's id,
        // any allowed text, not unique. Existing rows: their request_id was the gateway's UUID, so it
        // becomes their decision_id (a rename keeps the primary key and its index) and is copied back as
        // text. The other AuditRecord columns of DESIGN.md arrive here too, nullable.
        Migration(
            version: 2, name: "decision_id key, text request_id, lineage columns",
            sql: """
                ALTER TABLE decisions RENAME COLUMN request_id TO decision_id;
                ALTER TABLE decisions ADD COLUMN request_id text;
                UPDATE decisions SET request_id = decision_id::text;
                ALTER TABLE decisions ALTER COLUMN request_id SET NOT NULL;
                ALTER TABLE decisions
                    ADD COLUMN feature_snapshot_id text,
                    ADD COLUMN feature_ts_ns bigint,
                    ADD COLUMN trace_id text,
                    ADD COLUMN client text;
                CREATE INDEX decisions_request_id ON decisions (request_id);
                """),
        .outcomesAndRolloutEvents,
        StoreRoles.migration,
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
        /// Records whose decision_id was already in the table (or repeated in the batch).
        public var duplicates: Int

        public init(inserted: Int, duplicates: Int) {
            self.inserted = inserted
            self.duplicates = duplicates
        }

        static func += (a: inout InsertOutcome, b: InsertOutcome) {
            a.inserted += b.inserted
            a.duplicates += b.duplicates
        }
    }

    /// Inserts `records`, all or nothing (on error nothing is inserted and the error is thrown). A batch
    /// whose decision ids are distinct is COPYed straight into `decisions` (one statement, its own
    /// transaction); if some are stored already (a redelivery: unique violation), or the batch repeats an id,
    /// it goes through a session-temporary staging table and `INSERT … SELECT … ON CONFLICT (decision_id) DO
    /// NOTHING` instead.
    public func insert(_ records: [AuditRecord]) async throws -> InsertOutcome {
        guard !records.isEmpty else { return InsertOutcome(inserted: 0, duplicates: 0) }
        var ids = Set<String>(minimumCapacity: records.count)
        if records.allSatisfy({ ids.insert($0.decisionId.lowercased()).inserted }) {
            do {
                let inserted = try await connection.copyFrom(
                    Self.directCopySQL, data: Self.copyPayload(records, decidedAt: true))
                return InsertOutcome(inserted: inserted, duplicates: records.count - inserted)
            } catch {
                // Some of the batch is stored already: the idempotent path below skips those.
                guard error.sqlState == Self.uniqueViolation else { throw error }
            }
        }
        let payload = Self.copyPayload(records)
        return try await connection.withTransaction { tx in
            // One staging table per session, emptied at every commit: no catalog churn per batch.
            try await tx.execute(script: """
                CREATE TEMP TABLE IF NOT EXISTS audit_staging_v2 (
                    decision_id uuid NOT NULL,
                    request_id text NOT NULL,
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
                    feature_snapshot_id text,
                    feature_ts_ns bigint,
                    trace_id text,
                    client text
                ) ON COMMIT DELETE ROWS
                """)
            _ = try await tx.copyFrom(Self.copySQL, data: payload)
            let inserted = try await tx.execute(Self.insertSQL)
            return InsertOutcome(inserted: inserted, duplicates: records.count - inserted)
        }
    }

    static let uniqueViolation = "23505"

    /// Like `insert`, but bad records are set aside instead of failing the batch: first every record
    /// PostgreSQL would reject is found without asking it (`problem(with:)`), so the batch goes in with
    /// one COPY; if PostgreSQL still rejects a batch for its data (SQLSTATE class 22/23), it is split in
    /// halves until the culprits are alone (a few transactions per bad record, not one per record).
    /// Returns each rejected record's index and why. Errors that are not about the data (connection
    /// lost, server shutting down) are thrown.
    public func insertIsolatingBadRecords(
        _ records: [AuditRecord]
    ) async throws -> (outcome: InsertOutcome, rejected: [(index: Int, reason: String)]) {
        var rejected: [(index: Int, reason: String)] = []
        var good: [(Int, AuditRecord)] = []
        good.reserveCapacity(records.count)
        for (index, record) in records.enumerated() {
            if let problem = Self.problem(with: record) {
                rejected.append((index, problem))
            } else {
                good.append((index, record))
            }
        }
        var total = InsertOutcome(inserted: 0, duplicates: 0)
        try await insertBisecting(good[...], total: &total, rejected: &rejected)
        return (total, rejected.sorted { $0.index < $1.index })
    }

    private func insertBisecting(
        _ items: ArraySlice<(Int, AuditRecord)>, total: inout InsertOutcome, rejected: inout [(index: Int, reason: String)]
    ) async throws {
        guard !items.isEmpty else { return }
        do {
            total += try await insert(items.map(\.1))
        } catch let error as PostgresError where error.isDataError {
            if items.count == 1 {
                rejected.append((items[items.startIndex].0, "postgres rejected the record: \(error)"))
                return
            }
            let middle = items.startIndex + items.count / 2
            try await insertBisecting(items[..<middle], total: &total, rejected: &rejected)
            try await insertBisecting(items[middle...], total: &total, rejected: &rejected)
        }
    }

    /// Why PostgreSQL would reject `record`, nil when it would not: decision_id must be a UUID
    /// (8-4-4-4-12 hex digits) and text cannot hold NUL (COPY fails with 22021).
    public static func problem(with record: AuditRecord) -> String? {
        guard isUUID(record.decisionId) else { return "decision_id is not a UUID: \(String(record.decisionId.prefix(64)).debugDescription)" }
        let texts: [(String, String?)] = [
            ("request_id", record.requestId), ("symbol", record.symbol), ("model_name", record.modelName),
            ("model_version", record.modelVersion), ("model_hash", record.modelHash),
            ("canary_version", record.canary?.version), ("canary_mode", record.canary?.mode), ("reason", record.reason),
            ("feature_snapshot_id", record.featureSnapshotId), ("trace_id", record.traceId), ("client", record.client),
        ]
        for case let (column, text?) in texts where text.utf8.contains(0) {
            return "\(column) contains a NUL character, which PostgreSQL text cannot hold"
        }
        return nil
    }

    /// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, hex digits in either case.
    static func isUUID(_ text: String) -> Bool {
        let bytes = text.utf8
        guard bytes.count == 36 else { return false }
        for (i, b) in bytes.enumerated() {
            if i == 8 || i == 13 || i == 18 || i == 23 {
                if b != UInt8(ascii: "-") { return false }
            } else if !((b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66)) {
                return false
            }
        }
        return true
    }

    /// The columns an AuditRecord fills, in COPY order (`copyPayload`); `decided_at` is derived from ts_ns.
    static let recordColumns =
        "decision_id, request_id, ts_ns, symbol, decision, score, source, model_name, model_version, model_hash, features, feature_age_ms, latency_us, canary_version, canary_score, canary_mode, reason, feature_snapshot_id, feature_ts_ns, trace_id, client"

    static let copySQL = "COPY audit_staging_v2 (\(recordColumns)) FROM STDIN"
    static let directCopySQL = "COPY decisions (decided_at, \(recordColumns)) FROM STDIN"

    // decided_at is ts_ns exactly to the microsecond (integer arithmetic, no float rounding), as
    // `decidedAtText` writes it on the direct path.
    static let insertSQL = """
        INSERT INTO decisions (decided_at, \(recordColumns))
        SELECT to_timestamp(0) + (ts_ns / 1000) * interval '1 microsecond', \(recordColumns)
        FROM audit_staging_v2
        ON CONFLICT (decision_id) DO NOTHING
        """

    /// The COPY text payload of `records`, columns in `recordColumns` order, `decided_at` first if asked.
    public static func copyPayload(_ records: [AuditRecord], decidedAt: Bool = false) -> [UInt8] {
        var encoder = CopyTextEncoder(reservingCapacity: records.count * 512)
        for record in records {
            if decidedAt { encoder.append(decidedAtText(tsNs: record.tsNs)) }
            encoder.append(record.decisionId)
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
            encoder.append(record.featureSnapshotId)
            encoder.append(record.featureTsNs.map { String($0) })
            encoder.append(record.traceId)
            encoder.append(record.client)
            encoder.endRow()
        }
        return encoder.bytes
    }

    /// `decided_at` of a record as timestamptz text in UTC, `YYYY-MM-DD HH:MM:SS.ffffff+00`: ts_ns
    /// truncated to the microsecond, the value `insertSQL` computes.
    static func decidedAtText(tsNs: Int64) -> String {
        let micros = tsNs / 1000  // truncates toward zero, as PostgreSQL's bigint division
        let (seconds, fraction) = floorDivide(micros, 1_000_000)
        let (days, secondOfDay) = floorDivide(seconds, 86_400)
        // Days since 1970-01-01 → civil date (H. Hinnant's algorithm).
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        var out = ""
        out.reserveCapacity(32)
        func pad(_ value: Int64, _ width: Int) {
            let digits = String(value)
            for _ in digits.count..<width { out.append("0") }
            out.append(digits)
        }
        pad(year, 4)
        out.append("-")
        pad(month, 2)
        out.append("-")
        pad(day, 2)
        out.append(" ")
        pad(secondOfDay / 3600, 2)
        out.append(":")
        pad(secondOfDay / 60 % 60, 2)
        out.append(":")
        pad(secondOfDay % 60, 2)
        out.append(".")
        pad(fraction, 6)
        out.append("+00")
        return out
    }

    private static func floorDivide(_ a: Int64, _ b: Int64) -> (quotient: Int64, remainder: Int64) {
        let q = a / b
        let r = a % b
        return r < 0 ? (q - 1, r + b) : (q, r)
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
        decision_id, request_id, decided_at, ts_ns, symbol, decision, score, source, model_name, model_version,
        model_hash, features, feature_age_ms, latency_us, canary_version, canary_score, canary_mode, reason,
        feature_snapshot_id, feature_ts_ns, trace_id, client
        """

    /// The most recent `limit` decisions for `symbol`, newest first.
    public func recent(symbol: String, limit: Int) async throws -> [StoredDecision] {
        let result = try await connection.query(
            "SELECT \(Self.selectColumns) FROM decisions WHERE symbol = $1 ORDER BY decided_at DESC, decision_id LIMIT $2",
            [symbol, String(limit)])
        return try result.rows.map { StoredDecision(record: try Self.record(from: $0), decidedAt: $0["decided_at"] ?? "") }
    }

    /// Every stored decision, by ts_ns (for tests and exports of small tables).
    public func all() async throws -> [AuditRecord] {
        let result = try await connection.query(
            "SELECT \(Self.selectColumns) FROM decisions ORDER BY ts_ns, decision_id")
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
        var featureTsNs: Int64?
        if let text = row["feature_ts_ns"] {
            guard let value = Int64(text) else { throw RowDecodingError(column: "feature_ts_ns", value: text) }
            featureTsNs = value
        }
        return AuditRecord(
            decisionId: try required("decision_id"), requestId: try required("request_id"), tsNs: try int64("ts_ns"),
            symbol: try required("symbol"), decision: decision, score: try double("score"), source: source,
            modelName: row["model_name"], modelVersion: row["model_version"], modelHash: row["model_hash"],
            features: features, featureAgeMs: try double("feature_age_ms"), latencyUs: try int64("latency_us"),
            canary: canary, reason: row["reason"], featureSnapshotId: row["feature_snapshot_id"],
            featureTsNs: featureTsNs, traceId: row["trace_id"], client: row["client"])
    }
}
