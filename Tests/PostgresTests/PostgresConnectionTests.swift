import Foundation
import TEPostgres
import Testing

@Suite("PostgreSQL connection (real server)", .timeLimit(.minutes(2)))
struct PostgresConnectionTests {
    @Test func parametersIncludingNullsAndUnicode() async throws {
        try await PostgresTestServer.withDatabase { db, _ in
            let result = try await db.query(
                "SELECT $1::text AS a, $2::text AS b, $3::int + 1 AS c, $4::double precision AS d",
                ["ünïcødé ✓ 日本 🚀", nil, "41", "0.1"])
            #expect(result.columns == ["a", "b", "c", "d"])
            #expect(result.rows.count == 1)
            let row = try #require(result.rows.first)
            #expect(row["a"] == "ünïcødé ✓ 日本 🚀")
            #expect(row["b"] == nil)
            #expect(row["c"] == "42")
            #expect(row["d"] == "0.1")
            // A value that looks like SQL stays a value.
            try await db.execute(script: "CREATE TABLE t (v text)")
            let evil = "'); DROP TABLE t; --"
            #expect(try await db.execute("INSERT INTO t VALUES ($1)", [evil]) == 1)
            #expect(try await db.query("SELECT v FROM t").rows.map { $0["v"] } == [evil])
        }
    }

    @Test func copyWithAwkwardCharacters() async throws {
        try await PostgresTestServer.withDatabase { db, _ in
            try await db.execute(script: "CREATE TABLE c (id int, v text, w text)")
            let values: [String?] = [
                "tab\there", "new\nline", "back\\slash", "\\N", nil, "cr\rlf\r\n", "", "ünï ✓ 🚀", "quote ' \""
            ]
            var encoder = CopyTextEncoder()
            for (i, v) in values.enumerated() { encoder.appendRow([String(i), v, v == nil ? "x" : nil]) }
            let copied = try await db.copyFrom("COPY c (id, v, w) FROM STDIN", data: encoder.bytes)
            #expect(copied == values.count)
            let rows = try await db.query("SELECT v, w FROM c ORDER BY id").rows
            #expect(rows.map { $0["v"] } == values)
            #expect(rows.map { $0["w"] } == values.map { $0 == nil ? "x" : nil })
        }
    }

    @Test func copyRejectsBadDataWithSQLState() async throws {
        try await PostgresTestServer.withDatabase { db, _ in
            try await db.execute(script: "CREATE TABLE u (id uuid)")
            var encoder = CopyTextEncoder()
            encoder.appendRow(["not-a-uuid"])
            let error = try await #require(throws: PostgresError.self) {
                try await db.copyFrom("COPY u (id) FROM STDIN", data: encoder.bytes)
            }
            #expect(error.sqlState == "22P02")
            #expect(error.isDataError)
            // The connection is usable afterwards.
            #expect(try await db.query("SELECT count(*) AS n FROM u").rows.first?["n"] == "0")
        }
    }

    @Test func transactionCommitsAndRollsBackOnError() async throws {
        struct Boom: Error {}
        try await PostgresTestServer.withDatabase { db, _ in
            try await db.execute(script: "CREATE TABLE t (v int PRIMARY KEY)")
            try await db.withTransaction { tx in
                try await tx.execute("INSERT INTO t VALUES ($1)", ["1"])
            }
            await #expect(throws: Boom.self) {
                try await db.withTransaction { tx in
                    try await tx.execute("INSERT INTO t VALUES ($1)", ["2"])
                    throw Boom()
                }
            }
            let error = try await #require(throws: PostgresError.self) {
                try await db.withTransaction { tx in
                    try await tx.execute("INSERT INTO t VALUES ($1)", ["3"])
                    try await tx.execute("INSERT INTO t VALUES ($1)", ["1"])  // duplicate key
                }
            }
            #expect(error.sqlState == "23505")
            #expect(error.detail?.contains("(v)=(1)") == true)
            #expect(try await db.query("SELECT v FROM t ORDER BY v").rows.map { $0["v"] } == ["1"])
        }
    }

    @Test func serverErrorsCarrySQLStateAndMessage() async throws {
        try await PostgresTestServer.withDatabase { db, _ in
            let error = try await #require(throws: PostgresError.self) {
                try await db.query("SELECT * FROM no_such_table")
            }
            #expect(error.code == .server)
            #expect(error.sqlState == "42P01")
            #expect(error.message.contains("no_such_table"))
            #expect(!error.isRetriable)
            let cast = try await #require(throws: PostgresError.self) { try await db.query("SELECT $1::int", ["x"]) }
            #expect(cast.sqlState == "22P02")
        }
    }

    @Test func wrongPasswordFailsWithoutLeakingIt() async throws {
        var components = try #require(URLComponents(string: try PostgresTestServer.url()))
        components.password = "Wr0ngPassw0rdXYZ"
        let db = PostgresConnection(
            configuration: try PostgresConfiguration(url: try #require(components.string)),
            logger: PostgresTestServer.logger)
        let error = try await #require(throws: PostgresError.self) { try await db.connect() }
        #expect(error.code == .connection)
        #expect(error.isRetriable)
        #expect(!error.description.contains("Wr0ngPassw0rdXYZ"))
        #expect(error.message.contains("password authentication failed"))
        await db.close()
    }

    @Test func reconnectsAfterTheBackendIsKilled() async throws {
        try await PostgresTestServer.withDatabase { db, _ in
            let pid = try #require(try await db.query("SELECT pg_backend_pid() AS pid").rows.first?["pid"])
            let admin = PostgresConnection(
                configuration: try PostgresConfiguration(url: try PostgresTestServer.url()),
                logger: PostgresTestServer.logger)
            _ = try await admin.query("SELECT pg_terminate_backend($1::int)", [pid])
            await admin.close()
            // The first statement after the kill fails as a lost (retriable) connection…
            let error = try await #require(throws: PostgresError.self) { try await db.query("SELECT 1") }
            #expect(error.isRetriable)
            // …and the next one reconnects.
            let newPid = try await db.query("SELECT pg_backend_pid() AS pid").rows.first?["pid"]
            #expect(newPid != nil && newPid != pid)
        }
    }

    @Test func closedConnectionRefusesWork() async throws {
        let db = PostgresConnection(
            configuration: try PostgresConfiguration(url: try PostgresTestServer.url()),
            logger: PostgresTestServer.logger)
        #expect(try await db.query("SELECT 1 AS one").rows.first?["one"] == "1")
        await db.close()
        let error = try await #require(throws: PostgresError.self) { try await db.query("SELECT 1") }
        #expect(error.code == .closed)
    }
}
