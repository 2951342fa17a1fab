import AuditStorage
import Foundation
import TEPostgres
import Testing

@Suite("Migrations (real server)", .timeLimit(.minutes(2)))
struct MigrationTests {
    static let schemaQuery = """
        SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns
        WHERE table_schema = 'public' ORDER BY table_name, ordinal_position
        """

    @Test func runningTwiceChangesNothing() async throws {
        try await PostgresTestServer.withDatabase { db, _ in
            let store = AuditStore(connection: db)
            #expect(try await store.migrate(logger: PostgresTestServer.logger) == [1, 2, 3, 4, 5])
            let schema = try await db.query(Self.schemaQuery).rows.map(\.values)
            let migrations = try await db.query("SELECT version, name, applied_at FROM schema_migrations").rows.map(
                \.values)
            #expect(try await store.migrate(logger: PostgresTestServer.logger) == [])
            #expect(try await db.query(Self.schemaQuery).rows.map(\.values) == schema)
            #expect(
                try await db.query("SELECT version, name, applied_at FROM schema_migrations").rows.map(\.values)
                    == migrations)
            let indexes = try await db.query(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'decisions' ORDER BY indexname"
            ).rows.map { $0["indexname"] }
            #expect(
                indexes == [
                    "decisions_chain", "decisions_model_version_decided_at", "decisions_pkey", "decisions_request_id",
                    "decisions_source_decided_at", "decisions_symbol_decided_at"
                ])
        }
    }

    @Test func concurrentMigratorsApplyEachMigrationOnce() async throws {
        try await PostgresTestServer.withDatabase { db, configuration in
            let others = (0..<3).map { _ in
                PostgresConnection(configuration: configuration, logger: PostgresTestServer.logger)
            }
            let applied = try await withThrowingTaskGroup(of: [Int].self) { group in
                for connection in others + [db] {
                    group.addTask {
                        try await AuditStore(connection: connection).migrate(logger: PostgresTestServer.logger)
                    }
                }
                var all: [Int] = []
                for try await versions in group { all += versions }
                return all
            }
            #expect(applied.sorted() == [1, 2, 3, 4, 5])
            for connection in others { await connection.close() }
        }
    }

    @Test func failingMigrationLeavesTheDatabaseAsItWas() async throws {
        try await PostgresTestServer.withDatabase { db, _ in
            let good = Migration(version: 1, name: "good", sql: "CREATE TABLE a (id int)")
            let bad = Migration(
                version: 2, name: "bad",
                sql: """
                    CREATE TABLE b (id int);
                    ALTER TABLE a ADD COLUMN extra text;
                    INSERT INTO a VALUES (1);
                    SELECT no_such_function();
                    """)
            try await Migrator.migrate(db, migrations: [good], logger: PostgresTestServer.logger)
            let before = try await db.query(Self.schemaQuery).rows.map(\.values)
            let error = try await #require(throws: MigrationError.self) {
                try await Migrator.migrate(db, migrations: [good, bad], logger: PostgresTestServer.logger)
            }
            #expect(error.version == 2)
            #expect(error.underlying.sqlState == "42883")
            #expect(try await db.query(Self.schemaQuery).rows.map(\.values) == before)
            #expect(try await db.query("SELECT count(*) AS n FROM a").rows.first?["n"] == "0")
            #expect(try await db.query("SELECT version FROM schema_migrations").rows.map { $0["version"] } == ["1"])
        }
    }

    /// A database at schema version 1 (request_id uuid key) with rows: migrating keeps every row, its
    /// request_id becomes its decision_id (the key) and stays its request_id as text; the new columns are
    /// null; afterwards non-UUID request ids go in and a repeated decision_id does not.
    @Test func fromVersion1KeepsRowsAndTheirIDs() async throws {
        try await PostgresTestServer.withDatabase { db, _ in
            let store = AuditStore(connection: db)
            try await Migrator.migrate(db, migrations: [AuditStore.migrations[0]], logger: PostgresTestServer.logger)
            let old = (0..<3).map { _ in UUID().uuidString.lowercased() }
            for (i, id) in old.enumerated() {
                try await db.execute(
                    """
                    INSERT INTO decisions (request_id, decided_at, ts_ns, symbol, decision, score, source, model_name,
                        model_version, model_hash, features, feature_age_ms, latency_us, reason)
                    VALUES ($1, to_timestamp(0) + ($2::bigint / 1000) * interval '1 microsecond', $2::bigint, 'BTCUSDT',
                        'trade', 0.75, 'model', 'trade_eligibility', '1', 'abc', '{"depth_imbalance":0.2,"imbalance":0.3,"microprice_offset_bps":0.05,"mid_return_bps":0.1,"ofi_norm":1,"realized_vol_bps":2,"spread_bps":0.5,"tick_rate":10}', 2.5, 640, NULL)
                    """, [id, String(1_723_161_254_087_891_268 + i)])
            }
            let before = try await db.query(
                "SELECT request_id::text AS id, decided_at, ts_ns, symbol, score, features FROM decisions ORDER BY ts_ns"
            )
            #expect(try await store.migrate(logger: PostgresTestServer.logger) == [2, 3, 4, 5])

            let after = try await db.query(
                """
                SELECT decision_id::text AS id, request_id, decided_at, ts_ns, symbol, score, features, feature_snapshot_id,
                    feature_ts_ns, trace_id, client
                FROM decisions ORDER BY ts_ns
                """)
            #expect(after.rows.count == 3)
            #expect(after.rows.map { $0["id"] } == old)
            #expect(after.rows.map { $0["request_id"] } == old)
            for (a, b) in zip(after.rows, before.rows) {
                for column in ["decided_at", "ts_ns", "symbol", "score", "features"] {
                    #expect(a[column] == b[column], "\(column)")
                }
                for column in ["feature_snapshot_id", "feature_ts_ns", "trace_id", "client"] {
                    #expect(a[column] == nil)
                }
            }
            let types = try await db.query(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'decisions' AND column_name IN ('decision_id', 'request_id') ORDER BY column_name"
            ).rows.map { [$0["column_name"], $0["data_type"]] }
            #expect(types == [["decision_id", "uuid"], ["request_id", "text"]])
            let key = try await db.query(
                """
                SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                WHERE i.indrelid = 'decisions'::regclass AND i.indisprimary
                """
            ).rows.map { $0["attname"] }
            #expect(key == ["decision_id"])

            var records = AuditRecords.make(4)
            records[1].decisionId = old[0]  // an old row's key again: skipped
            #expect(try await store.insert(records) == .init(inserted: 3, duplicates: 1))
            let stored = try await store.all()
            #expect(stored.count == 6)
            #expect(stored.contains { $0.requestId == "same-client-id" })
            #expect(!stored.contains { $0.requestId == "client-1_X" })  // its decision_id was taken: skipped
            #expect(stored.filter { old.contains($0.decisionId) }.allSatisfy { $0.requestId == $0.decisionId })
        }
    }
}
