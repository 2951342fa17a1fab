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
            #expect(try await store.migrate(logger: PostgresTestServer.logger) == [1])
            let schema = try await db.query(Self.schemaQuery).rows.map(\.values)
            let migrations = try await db.query("SELECT version, name, applied_at FROM schema_migrations").rows.map(\.values)
            #expect(try await store.migrate(logger: PostgresTestServer.logger) == [])
            #expect(try await db.query(Self.schemaQuery).rows.map(\.values) == schema)
            #expect(try await db.query("SELECT version, name, applied_at FROM schema_migrations").rows.map(\.values) == migrations)
            let indexes = try await db.query(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'decisions' ORDER BY indexname"
            ).rows.map { $0["indexname"] }
            #expect(indexes == [
                "decisions_model_version_decided_at", "decisions_pkey", "decisions_source_decided_at",
                "decisions_symbol_decided_at",
            ])
        }
    }

    @Test func concurrentMigratorsApplyEachMigrationOnce() async throws {
        try await PostgresTestServer.withDatabase { db, configuration in
            let others = (0..<3).map { _ in PostgresConnection(configuration: configuration, logger: PostgresTestServer.logger) }
            let applied = try await withThrowingTaskGroup(of: [Int].self) { group in
                for connection in others + [db] {
                    group.addTask { try await AuditStore(connection: connection).migrate(logger: PostgresTestServer.logger) }
                }
                var all: [Int] = []
                for try await versions in group { all += versions }
                return all
            }
            #expect(applied == [1])
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
}
