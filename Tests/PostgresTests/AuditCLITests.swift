import Foundation
import TEModels
import TEPostgres
import TestSupport
import Testing

@Suite("te audit", .serialized, .timeLimit(.minutes(2)))
struct AuditCLITests {
    @Test("te audit recent and counts: tables, -o json with DESIGN's field names, and a clear line when PostgreSQL is down")
    func recentAndCounts() async throws {
        try await PostgresTestServer.withDatabase { db, configuration in
            let store = AuditStore(connection: db)
            _ = try await store.migrate(logger: PostgresTestServer.logger)
            let records = AuditRecords.make(12, symbol: "CLITEST")
            _ = try await store.insert(records)
            let url = try PostgresConfiguration.url(try PostgresTestServer.url(), database: try #require(configuration.database))
            let environment = ["POSTGRES_URL": url]

            let newest = records.filter { $0.symbol == "CLITEST" }.sorted { $0.tsNs > $1.tsNs }.prefix(3)
            let json = try await runTe(["audit", "recent", "--symbol", "CLITEST", "-n", "3", "-o", "json"], environment: environment)
            #expect(json.status == 0, "\(json.output)")
            let rows = try #require(jsonOutput(json.output) as? [[String: Any]], "\(json.output)")
            #expect(rows.map { $0["decision_id"] as? String } == newest.map(\.decisionId))
            #expect(rows.map { $0["request_id"] as? String } == newest.map(\.requestId))
            #expect(rows.map { $0["latency_us"] as? Int } == newest.map { Int($0.latencyUs) })
            #expect(rows.allSatisfy { ($0["decided_at"] as? String)?.hasPrefix("2024-08-0") == true }, "\(json.output)")

            let table = try await runTe(["audit", "recent", "--symbol", "CLITEST", "-n", "3"], environment: environment)
            #expect(table.status == 0, "\(table.output)")
            for record in newest { #expect(table.output.contains(record.decisionId), "\(table.output)") }

            let period = ["--since", "2024-08-01 00:00:00+00", "--until", "2024-09-01 00:00:00+00"]
            let counts = try await runTe(["audit", "counts"] + period + ["-o", "json"], environment: environment)
            #expect(counts.status == 0, "\(counts.output)")
            let summary = try #require(jsonOutput(counts.output) as? [String: Any], "\(counts.output)")
            #expect(summary["total"] as? Int == records.count)
            let groups = try #require(summary["counts"] as? [[String: Any]])
            #expect(groups.reduce(0) { $0 + ($1["count"] as? Int ?? 0) } == records.count)
            let modelRows = records.filter { $0.source == .model }.count
            #expect(groups.filter { $0["source"] as? String == "model" }.reduce(0) { $0 + ($1["count"] as? Int ?? 0) } == modelRows)

            let empty = try await runTe(["audit", "recent", "--symbol", "NOSUCH"], environment: environment)
            #expect(empty.status == 0)
            #expect(empty.output == "no decisions for NOSUCH\n", "\(empty.output)")
        }
        let down = "postgres://te:secret@127.0.0.1:\(try TestEnv.freePort())/te"
        let result = try await runTe(["audit", "counts"], environment: ["POSTGRES_URL": down])
        #expect(result.status == 1)
        #expect(result.output.hasPrefix("te: postgres connection: "), "\(result.output)")
        #expect(result.output.contains("Connection refused"), "\(result.output)")
        #expect(!result.output.contains("secret"), "the password never shows: \(result.output)")
    }
}
