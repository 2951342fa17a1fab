import TEModels
import TEPostgres
import Testing

@Suite("Audit store (real server)", .timeLimit(.minutes(2)))
struct AuditStoreTests {
    @Test func everyFieldAsSentAndRedeliveryAddsNothing() async throws {
        try await PostgresTestServer.withDatabase { db, _ in
            let store = AuditStore(connection: db)
            try await store.migrate(logger: PostgresTestServer.logger)
            let records = AuditRecords.make(250)
            #expect(try await store.insert(records) == .init(inserted: 250, duplicates: 0))
            let stored = try await store.all()
            #expect(stored.count == 250)
            #expect(stored == records.sorted { $0.tsNs < $1.tsNs })
            // Redelivery of everything, plus a batch that repeats a record within itself.
            #expect(try await store.insert(records) == .init(inserted: 0, duplicates: 250))
            let more = AuditRecords.make(3, startTsNs: 2_000_000_000_000_000_000)
            #expect(try await store.insert(more + [more[0], records[5]]) == .init(inserted: 3, duplicates: 2))
            #expect(try await db.query("SELECT count(*) AS n FROM decisions").rows.first?["n"] == "253")
            // decided_at is ts_ns to the microsecond.
            let first = try #require(records.first)
            let decidedAt = try await db.query(
                "SELECT (extract(epoch FROM decided_at) * 1000000)::bigint AS us FROM decisions WHERE request_id = $1",
                [first.requestId]
            ).rows.first?["us"]
            #expect(decidedAt == String(first.tsNs / 1000))
        }
    }

    @Test func badRecordsAreIsolatedWithTheDatabaseMessage() async throws {
        try await PostgresTestServer.withDatabase { db, _ in
            let store = AuditStore(connection: db)
            try await store.migrate(logger: PostgresTestServer.logger)
            var records = AuditRecords.make(10)
            records[3].requestId = "not-a-uuid"
            records[7].symbol = "NUL\u{0}BYTE"  // text cannot hold NUL: 22021 from COPY
            let (outcome, rejected) = try await store.insertIsolatingBadRecords(records)
            #expect(outcome == .init(inserted: 8, duplicates: 0))
            #expect(rejected.map(\.index) == [3, 7])
            #expect(rejected[0].error.sqlState == "22P02")
            #expect(rejected[0].error.message.contains("uuid"))
            #expect(rejected[1].error.isDataError)
            #expect(try await db.query("SELECT count(*) AS n FROM decisions").rows.first?["n"] == "8")
        }
    }

    @Test func recentAndCounts() async throws {
        try await PostgresTestServer.withDatabase { db, _ in
            let store = AuditStore(connection: db)
            try await store.migrate(logger: PostgresTestServer.logger)
            let records = AuditRecords.make(40)
            _ = try await store.insert(records)
            let recent = try await store.recent(symbol: "BTCUSDT", limit: 5)
            let expected = records.filter { $0.symbol == "BTCUSDT" }.sorted { $0.tsNs > $1.tsNs }.prefix(5)
            #expect(recent.map(\.record) == Array(expected))
            let counts = try await store.counts(since: nil, until: nil)
            #expect(counts.reduce(0) { $0 + $1.count } == 40)
            // i % 4 == 0 → model; of those, full ones (i % 3 != 2) have model_version 1 + i % 2 = 1.
            let modelV1 = records.filter { $0.source == .model && $0.modelVersion == "1" }
            let row = counts.first { $0.source == "model" && $0.modelVersion == "1" && $0.decision == "trade" }
            #expect(row?.count == modelV1.filter { $0.decision == .trade }.count)
            let none = try await store.counts(since: "2100-01-01 00:00:00+00", until: nil)
            #expect(none.isEmpty)
        }
    }
}
