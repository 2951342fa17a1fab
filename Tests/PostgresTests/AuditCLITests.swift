import AuditStorage
import Foundation
import TEModels
import TEPostgres
import TestSupport
import Testing

@Suite("te audit", .serialized, .timeLimit(.minutes(2)))
struct AuditCLITests {
    @Test(
        "te audit recent and counts: tables, -o json with DESIGN's field names, and a clear line when PostgreSQL is down"
    )
    func recentAndCounts() async throws {
        try await PostgresTestServer.withDatabase { db, configuration in
            let store = AuditStore(connection: db)
            _ = try await store.migrate(logger: PostgresTestServer.logger)
            let records = AuditRecords.make(12, symbol: "CLITEST")
            _ = try await store.insert(records)
            let url = try PostgresConfiguration.url(
                try PostgresTestServer.url(), database: try #require(configuration.database))
            let environment = ["POSTGRES_URL": url]

            let newest = records.filter { $0.symbol == "CLITEST" }.sorted { $0.tsNs > $1.tsNs }.prefix(3)
            let json = try await runTe(
                ["audit", "recent", "--symbol", "CLITEST", "-n", "3", "-o", "json"], environment: environment)
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
            #expect(
                groups.filter { $0["source"] as? String == "model" }.reduce(0) { $0 + ($1["count"] as? Int ?? 0) }
                    == modelRows)

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

    @Test(
        "te model: per version outcomes, base rate, coverage, precision, Brier vs the constant, ECE; period and version filters"
    )
    func model() async throws {
        try await PostgresTestServer.withDatabase { db, configuration in
            let store = AuditStore(connection: db)
            _ = try await store.migrate(logger: PostgresTestServer.logger)
            // version 1: scores 0.95/0.85 traded (eligible, not), 0.25/0.15 not traded (not, eligible);
            // version 2: one labelled, one without a label (left out). resolved on 2024-08-08 / 2024-08-10.
            let day8: Int64 = 1_723_161_254_087_891_268
            let day10: Int64 = day8 + 2 * 86_400 * 1_000_000_000
            let rows: [(String, Double, String, String?, Int64)] = [
                ("1", 0.95, "trade", "true", day8), ("1", 0.85, "trade", "false", day8),
                ("1", 0.25, "no_trade", "false", day8), ("1", 0.15, "no_trade", "true", day8),
                ("2", 0.6, "trade", "true", day10), ("2", 0.6, "trade", nil, day10)
            ]
            for (version, score, decision, eligible, resolved) in rows {
                _ = try await db.execute(
                    """
                    INSERT INTO outcomes (decision_id, symbol, model_version, score, decision, horizon_ms, eligible, resolved_ts_ns)
                    VALUES ($1::uuid, 'BTCUSDT', $2, $3::float8, $4, 5000, $5::boolean, $6::bigint)
                    """, [UUID().uuidString.lowercased(), version, String(score), decision, eligible, String(resolved)])
            }
            let url = try PostgresConfiguration.url(
                try PostgresTestServer.url(), database: try #require(configuration.database))
            let environment = ["POSTGRES_URL": url]
            let json = try await runTe(["model", "-o", "json"], environment: environment)
            #expect(json.status == 0, "\(json.output)")
            let versions = try #require(jsonOutput(json.output) as? [[String: Any]], "\(json.output)")
            #expect(versions.map { $0["version"] as? String } == ["1", "2"])
            let v1 = versions[0]
            #expect(v1["outcomes"] as? Int == 4)
            #expect(v1["base_rate"] as? Double == 0.5)
            #expect(v1["coverage"] as? Double == 0.5)
            #expect(v1["precision"] as? Double == 0.5)
            // Brier: (0.05² + 0.85² + 0.25² + 0.85²) / 4; the constant 0.5 scores 0.25.
            #expect(abs((v1["brier"] as? Double ?? 0) - (0.0025 + 0.7225 + 0.0625 + 0.7225) / 4) < 1e-12)
            #expect(v1["constant_brier"] as? Double == 0.25)
            // One outcome per bin: ECE = mean of |score - eligible| = (0.05 + 0.85 + 0.25 + 0.85) / 4.
            #expect(abs((v1["ece"] as? Double ?? 0) - 0.5) < 1e-12)
            #expect(versions[1]["outcomes"] as? Int == 1, "the unlabelled outcome is left out")

            let table = try await runTe(["model", "--reliability"], environment: environment)
            #expect(table.status == 0, "\(table.output)")
            #expect(table.output.contains("reliability, version 1"), "\(table.output)")
            let v1Row = try #require(table.output.split(separator: "\n").first { $0.hasPrefix("1 ") })
            #expect(
                v1Row.split(separator: " ").contains("no"),
                "Brier 0.38 does not beat the constant's 0.25: no edge: \(v1Row)")

            let later = try await runTe(
                ["model", "--since", "2024-08-09T00:00:00Z", "-o", "json"], environment: environment)
            #expect(
                (jsonOutput(later.output) as? [[String: Any]])?.map { $0["version"] as? String } == ["2"],
                "\(later.output)")
            let only1 = try await runTe(["model", "--version", "1", "-o", "json"], environment: environment)
            #expect(
                (jsonOutput(only1.output) as? [[String: Any]])?.map { $0["version"] as? String } == ["1"],
                "\(only1.output)")
            let none = try await runTe(["model", "--version", "9"], environment: environment)
            #expect(none.output == "no labelled outcomes for version 9 in the period\n", "\(none.output)")
        }
    }
}
