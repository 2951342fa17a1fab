import AuditStorage
import Foundation
import TEModels
import TEPostgres
import TestSupport
import Testing

/// Migration 4's roles: the audit writer appends and reads, never rewrites history; the reader only reads.
@Suite("Store roles (real server)", .timeLimit(.minutes(2)))
struct StoreRolesTests {
    static func connect(_ url: String, database: String) throws -> PostgresConnection {
        var configuration = try PostgresConfiguration(url: url)
        configuration.database = database
        return PostgresConnection(configuration: configuration, logger: PostgresTestServer.logger)
    }

    static func refusal(_ body: () async throws -> Void) async -> PostgresError? {
        do {
            try await body()
            return nil
        } catch let error as PostgresError {
            return error
        } catch {
            return nil
        }
    }

    @Test func auditWriterAppendsButNeverUpdatesOrDeletes() async throws {
        try await PostgresTestServer.withDatabase { owner, configuration in
            try await AuditStore(connection: owner).migrate(logger: PostgresTestServer.logger)
            let database = configuration.database!
            let writer = try Self.connect(
                StoreUsers.auditWriterPostgresURL(on: PostgresTestServer.url()), database: database)
            let store = AuditStore(connection: writer)
            let records = AuditRecords.make(3)
            #expect(try await store.insert(records).inserted == 3)
            // Idempotence still works under the role: a replay inserts nothing.
            #expect(try await store.insert(records).duplicates == 3)
            for statement in [
                "UPDATE decisions SET score = 0", "DELETE FROM decisions", "TRUNCATE decisions",
                "ALTER TABLE decisions DROP COLUMN client", "DROP TABLE decisions"
            ] {
                let error = await Self.refusal { _ = try await writer.execute(statement) }
                // 42501 insufficient_privilege (also what a DDL statement by a non-owner gets).
                #expect(error?.sqlState == "42501", "\(statement): \(String(describing: error))")
            }
            #expect(try await owner.query("SELECT count(*) AS n FROM decisions").rows.first?["n"] == "3")
            await writer.close()
        }
    }

    @Test func readerOnlyReads() async throws {
        try await PostgresTestServer.withDatabase { owner, configuration in
            try await AuditStore(connection: owner).migrate(logger: PostgresTestServer.logger)
            _ = try await AuditStore(connection: owner).insert(AuditRecords.make(2))
            let readerURL = try StoreUsers.readerPostgresURL()
            let reader = try Self.connect(readerURL, database: configuration.database!)
            #expect(try await reader.query("SELECT count(*) AS n FROM decisions").rows.first?["n"] == "2")
            let insert = await Self.refusal {
                _ = try await AuditStore(connection: reader).insert(AuditRecords.make(1))
            }
            #expect(insert?.sqlState == "42501", "\(String(describing: insert))")
            let delete = await Self.refusal { _ = try await reader.execute("DELETE FROM decisions") }
            #expect(delete?.sqlState == "42501", "\(String(describing: delete))")
            await reader.close()
        }
    }
}
