import Foundation
import Logging
import TEModels
import TEPostgres

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
        auditChainMigration
    ]

    /// Version 5: the hash chain's columns (`AuditChain`). Rows from before it keep NULLs (unchained); the
    /// unique index refuses two rows at one place of a writer's chain (a fork) and finds a writer's head.
    static let auditChainMigration = Migration(
        version: 5, name: "decisions hash chain",
        sql: """
            ALTER TABLE decisions
                ADD COLUMN chain_writer text,
                ADD COLUMN chain_seq bigint,
                ADD COLUMN prev_hash text,
                ADD COLUMN row_hash text;
            CREATE UNIQUE INDEX decisions_chain ON decisions (chain_writer, chain_seq);
            """)

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

    /// Inserts `records`, all or nothing (on error nothing is inserted, `chain` is unchanged and the error is
    /// thrown), each new row linked into `chain` (`AuditChain`) in insert order. A batch whose decision ids are
    /// distinct is COPYed straight into `decisions` after `chain`'s head (one statement, its own transaction).
    /// If that meets a unique violation — some records are stored already (a redelivery), or `chain` is
    /// behind the table (a COMMIT whose answer this process never saw, another process with the same writer
    /// id) — or the batch repeats an id, one transaction reads the writer's head and the ids already stored,
    /// and COPYs only the records that are new, chained after that head: only rows actually inserted join
    /// the chain, and a redelivery never forks or gaps it. The unique index on (chain_writer, chain_seq)
    /// refuses a fork at the store; losing such a race to a concurrent insert is retried.
    public func insert(_ records: [AuditRecord], chain: inout AuditChain) async throws -> InsertOutcome {
        guard !records.isEmpty else { return InsertOutcome(inserted: 0, duplicates: 0) }
        var ids = Set<String>(minimumCapacity: records.count)
        if records.allSatisfy({ ids.insert($0.decisionId.lowercased()).inserted }) {
            do {
                let (inserted, rows) = try await connection.copyFrom(
                    Self.directCopySQL, producer: DecisionRows(records: records, chain: chain))
                chain = rows.chain
                return InsertOutcome(inserted: inserted, duplicates: records.count - inserted)
            } catch {
                guard error.sqlState == Self.uniqueViolation else { throw error }
            }
        }
        let writer = chain.writer
        let idArray = "{" + records.map(\.decisionId).joined(separator: ",") + "}"
        var attempt = 0
        while true {
            attempt += 1
            do {
                let (outcome, head) = try await connection.withTransaction { tx in
                    var next = try await Self.chainHead(writer: writer, in: tx)
                    let stored = try await tx.query(
                        "SELECT decision_id::text AS id FROM decisions WHERE decision_id = ANY($1::uuid[])", [idArray])
                    var seen = Set(stored.rows.compactMap { $0["id"] })
                    let fresh = records.filter { seen.insert($0.decisionId.lowercased()).inserted }
                    if !fresh.isEmpty {
                        next = try await tx.copyFrom(
                            Self.directCopySQL, producer: DecisionRows(records: fresh, chain: next)
                        ).producer.chain
                    }
                    return (InsertOutcome(inserted: fresh.count, duplicates: records.count - fresh.count), next)
                }
                chain = head
                return outcome
            } catch let error as PostgresError where error.sqlState == Self.uniqueViolation && attempt < 5 {
                // A concurrent insert of the same id or chain position committed first: look again.
                continue
            }
        }
    }

    /// `writer`'s chain head as stored: its highest chain_seq and that row's hash (`AuditChain.genesis`
    /// and 0 when it has no row yet). Read at start and whenever the in-memory head may be stale.
    public func chainHead(writer: String) async throws -> AuditChain {
        try await Self.chainHead(writer: writer, query: { try await connection.query($0, $1) })
    }

    static func chainHead(writer: String, in tx: PostgresTransaction) async throws -> AuditChain {
        try await chainHead(writer: writer, query: { try await tx.query($0, $1) })
    }

    private static func chainHead(
        writer: String, query: (String, [String?]) async throws -> PostgresQueryResult
    ) async throws -> AuditChain {
        let result = try await query(
            "SELECT chain_seq, row_hash FROM decisions WHERE chain_writer = $1 ORDER BY chain_seq DESC LIMIT 1",
            [writer])
        guard let row = result.rows.first else { return AuditChain(writer: writer) }
        guard let text = row["chain_seq"], let seq = Int64(text), let hash = row["row_hash"] else {
            throw RowDecodingError(column: "chain_seq", value: row["chain_seq"])
        }
        return AuditChain(writer: writer, seq: seq, hash: hash)
    }

    static let uniqueViolation = "23505"

    /// Like `insert`, but bad records are set aside instead of failing the batch: first every record
    /// PostgreSQL would reject is found without asking it (`problem(with:)`), so the batch goes in with
    /// one COPY; if PostgreSQL still rejects a batch for its data (SQLSTATE class 22/23), it is split in
    /// halves until the culprits are alone (a few transactions per bad record, not one per record).
    /// Returns each rejected record's index and why. Errors that are not about the data (connection
    /// lost, server shutting down) are thrown.
    public func insertIsolatingBadRecords(
        _ records: [AuditRecord], chain: inout AuditChain
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
        try await insertBisecting(good[...], chain: &chain, total: &total, rejected: &rejected)
        return (total, rejected.sorted { $0.index < $1.index })
    }

    private func insertBisecting(
        _ items: ArraySlice<(Int, AuditRecord)>, chain: inout AuditChain, total: inout InsertOutcome,
        rejected: inout [(index: Int, reason: String)]
    ) async throws {
        guard !items.isEmpty else { return }
        do {
            total += try await insert(items.map(\.1), chain: &chain)
        } catch let error as PostgresError where error.isDataError {
            if items.count == 1 {
                rejected.append((items[items.startIndex].0, "postgres rejected the record: \(error)"))
                return
            }
            let middle = items.startIndex + items.count / 2
            try await insertBisecting(items[..<middle], chain: &chain, total: &total, rejected: &rejected)
            try await insertBisecting(items[middle...], chain: &chain, total: &total, rejected: &rejected)
        }
    }

    /// Why PostgreSQL would reject `record`, nil when it would not: decision_id must be a UUID
    /// (8-4-4-4-12 hex digits) and text cannot hold NUL (COPY fails with 22021).
    public static func problem(with record: AuditRecord) -> String? {
        guard isUUID(record.decisionId) else {
            return "decision_id is not a UUID: \(String(record.decisionId.prefix(64)).debugDescription)"
        }
        let texts: [(String, String?)] = [
            ("request_id", record.requestId), ("symbol", record.symbol), ("model_name", record.modelName),
            ("model_version", record.modelVersion), ("model_hash", record.modelHash),
            ("canary_version", record.canary?.version), ("canary_mode", record.canary?.mode), ("reason", record.reason),
            ("feature_snapshot_id", record.featureSnapshotId), ("trace_id", record.traceId), ("client", record.client)
        ]
        for case (let column, let text?) in texts where text.utf8.contains(0) {
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

    /// The columns an AuditRecord fills, in COPY order (`DecisionRows`); `decided_at` is derived from ts_ns.
    static let recordColumns =
        "decision_id, request_id, ts_ns, symbol, decision, score, source, model_name, model_version, model_hash, features, feature_age_ms, latency_us, canary_version, canary_score, canary_mode, reason, feature_snapshot_id, feature_ts_ns, trace_id, client"

    static let directCopySQL =
        "COPY decisions (decided_at, \(recordColumns), chain_writer, chain_seq, prev_hash, row_hash) FROM STDIN"

    /// The COPY payload of a batch, made on the connection's thread while it is sent: each record's chain
    /// link (`AuditChain`: its SHA-256 over the head), then its row — `decided_at`, the `recordColumns`, the
    /// link — `rowsPerPiece` rows a piece, so PostgreSQL inserts a piece while the next is hashed and written.
    /// `chain` ends as the head after the last record.
    struct DecisionRows: CopyProducer {
        let records: [AuditRecord]
        var chain: AuditChain
        var index = 0
        var row = CopyTextEncoder(reservingCapacity: 1024)
        var line = CopyTextEncoder(reservingCapacity: 1024)
        static let rowsPerPiece = 64

        init(records: [AuditRecord], chain: AuditChain) {
            self.records = records
            self.chain = chain
        }

        mutating func next(into buffer: inout [UInt8]) -> Bool {
            guard index < records.count else { return false }
            row.removeAll()
            for record in records[index..<min(index + Self.rowsPerPiece, records.count)] {
                let link = chain.append(record, line: &line)
                row.appendVerbatim { AuditStore.appendDecidedAt(tsNs: record.tsNs, to: &$0) }
                AuditStore.appendRecordColumns(record, to: &row, as: .copy)
                row.append(chain.writer)
                row.appendVerbatim { StreamFieldWriter.appendInteger(link.seq, to: &$0) }
                row.append(link.prevHash)
                row.append(link.rowHash)
                row.endRow()
                index += 1
            }
            buffer.append(contentsOf: row.bytes)
            return true
        }
    }

    /// How `appendRecordColumns` writes doubles, the feature vector and the id.
    enum ColumnText {
        /// For COPY: shortest round-trip decimal, the features as JSON.
        case copy
        /// For the hash chain's canonical line: IEEE-754 bits as 16 hex digits (the features as 8 of them,
        /// comma-separated, negative zero as zero: jsonb keeps numbers as numeric, which has none), the
        /// decision id in lower case (as PostgreSQL prints a uuid).
        case canonical
    }

    /// `record`'s columns in `recordColumns` order, numbers written straight into the buffer.
    static func appendRecordColumns(_ record: AuditRecord, to encoder: inout CopyTextEncoder, as mode: ColumnText) {
        func number(_ value: Double?) {
            guard let value else { return encoder.append(nil) }
            switch mode {
            case .copy: encoder.appendVerbatim { StreamFieldWriter.appendDescription(value, to: &$0) }
            case .canonical: encoder.appendVerbatim { appendBits(value, to: &$0) }
            }
        }
        func integer(_ value: Int64?) {
            guard let value else { return encoder.append(nil) }
            encoder.appendVerbatim { StreamFieldWriter.appendInteger(value, to: &$0) }
        }
        switch mode {
        case .copy: encoder.append(record.decisionId)
        case .canonical: encoder.appendLowercasedASCII(record.decisionId)
        }
        encoder.append(record.requestId)
        integer(record.tsNs)
        encoder.append(record.symbol)
        encoder.append(record.decision.rawValue)
        number(record.score)
        encoder.append(record.source.rawValue)
        encoder.append(record.modelName)
        encoder.append(record.modelVersion)
        encoder.append(record.modelHash)
        if let features = record.features {
            switch mode {
            case .copy: encoder.appendVerbatim { appendFeaturesJSON(features, to: &$0) }
            case .canonical:
                encoder.appendVerbatim { bytes in
                    for (i, value) in features.values.enumerated() {
                        if i > 0 { bytes.append(UInt8(ascii: ",")) }
                        appendBits(value == 0 ? 0 : value, to: &bytes)
                    }
                }
            }
        } else {
            encoder.append(nil)
        }
        number(record.featureAgeMs)
        integer(record.latencyUs)
        encoder.append(record.canary?.version)
        number(record.canary?.score)
        encoder.append(record.canary?.mode)
        encoder.append(record.reason)
        encoder.append(record.featureSnapshotId)
        integer(record.featureTsNs)
        encoder.append(record.traceId)
        encoder.append(record.client)
    }

    /// `float8send` as hex: the big-endian IEEE-754 bits, 16 lower-case digits.
    static func appendBits(_ value: Double, to bytes: inout [UInt8]) {
        let bits = value.bitPattern
        for shift in stride(from: 60, through: 0, by: -4) {
            bytes.append(hexDigits[Int((bits >> UInt64(shift)) & 0xF)])
        }
    }

    static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    /// The feature vector as a JSON object by feature name (the stream codec's text; `{}` for a vector
    /// with a non-finite value, which the gateway never records).
    static func appendFeaturesJSON(_ features: FeatureVector, to bytes: inout [UInt8]) {
        let start = bytes.count
        var json = JSONTextWriter(bytes: bytes)
        bytes = []  // `json` now holds the only reference: its appends do not copy the buffer
        let finite = (try? json.features(features)) != nil
        bytes = json.bytes
        if !finite {
            bytes.removeSubrange(start...)
            bytes.append(contentsOf: "{}".utf8)
        }
    }

    /// `decided_at` of a record as timestamptz text in UTC, `YYYY-MM-DD HH:MM:SS.ffffff+00`: ts_ns
    /// truncated to the microsecond (integer arithmetic, no float rounding).
    static func decidedAtText(tsNs: Int64) -> String {
        var bytes: [UInt8] = []
        appendDecidedAt(tsNs: tsNs, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    static func appendDecidedAt(tsNs: Int64, to out: inout [UInt8]) {
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
        func pad(_ value: Int64, _ width: Int) {
            if value < 0 { return StreamFieldWriter.appendInteger(value, to: &out) }
            var digits = 1
            var limit: Int64 = 10
            while value >= limit, digits < 19 {
                digits += 1
                limit = limit &* 10
            }
            for _ in digits..<max(width, digits) { out.append(UInt8(ascii: "0")) }
            StreamFieldWriter.appendInteger(value, to: &out)
        }
        pad(year, 4)
        out.append(UInt8(ascii: "-"))
        pad(month, 2)
        out.append(UInt8(ascii: "-"))
        pad(day, 2)
        out.append(UInt8(ascii: " "))
        pad(secondOfDay / 3600, 2)
        out.append(UInt8(ascii: ":"))
        pad(secondOfDay / 60 % 60, 2)
        out.append(UInt8(ascii: ":"))
        pad(secondOfDay % 60, 2)
        out.append(UInt8(ascii: "."))
        pad(fraction, 6)
        out.append(contentsOf: "+00".utf8)
    }

    private static func floorDivide(_ a: Int64, _ b: Int64) -> (quotient: Int64, remainder: Int64) {
        let q = a / b
        let r = a % b
        return r < 0 ? (q - 1, r + b) : (q, r)
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
        return try result.rows.map {
            StoredDecision(record: try Self.record(from: $0), decidedAt: $0["decided_at"] ?? "")
        }
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
            Count(
                source: $0["source"] ?? "", decision: $0["decision"] ?? "", modelVersion: $0["model_version"],
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
