import AuditStorage
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
            #expect(stored.filter { $0.requestId == "same-client-id" }.count == 62)
            // Redelivery of everything, plus a batch that repeats a record within itself.
            #expect(try await store.insert(records) == .init(inserted: 0, duplicates: 250))
            let more = AuditRecords.make(3, startTsNs: 2_000_000_000_000_000_000)
            #expect(try await store.insert(more + [more[0], records[5]]) == .init(inserted: 3, duplicates: 2))
            #expect(try await db.query("SELECT count(*) AS n FROM decisions").rows.first?["n"] == "253")
            // decided_at is ts_ns to the microsecond.
            let first = try #require(records.first)
            let decidedAt = try await db.query(
                "SELECT (extract(epoch FROM decided_at) * 1000000)::bigint AS us FROM decisions WHERE decision_id = $1",
                [first.decisionId]
            ).rows.first?["us"]
            #expect(decidedAt == String(first.tsNs / 1000))
        }
    }

    @Test func directCopyAndRedeliveryPathStoreTheSameDecidedAt() async throws {
        try await PostgresTestServer.withDatabase { db, _ in
            let store = AuditStore(connection: db)
            try await store.migrate(logger: PostgresTestServer.logger)
            // Before 1970 (floor, not truncation, of days and seconds), a leap day, sub-microsecond
            // remainders, ±(2^53 − 1) µs: past that PostgreSQL's `bigint * interval` goes through float8 and
            // rounds, where the direct path stays exact.
            let times: [Int64] = [
                0, 999, 1_000, -1, -999, -1_001, -86_400_000_000_001, 951_782_400_123_456_789,
                1_723_075_200_000_000_001,
                9_007_199_254_740_991_999, -9_007_199_254_740_991_999
            ]
            var direct = AuditRecords.make(times.count)
            for (i, t) in times.enumerated() { direct[i].tsNs = t }
            #expect(try await store.insert(direct) == .init(inserted: times.count, duplicates: 0))
            // Same times again under new ids, with a redelivered record: the redelivery path.
            var staged = AuditRecords.make(times.count, startTsNs: 5)
            for (i, t) in times.enumerated() { staged[i].tsNs = t }
            #expect(try await store.insert(staged + [direct[0]]) == .init(inserted: times.count, duplicates: 1))
            let mismatches = try await db.query(
                "SELECT count(*) AS n FROM decisions WHERE decided_at <> to_timestamp(0) + (ts_ns / 1000) * interval '1 microsecond'"
            )
            #expect(mismatches.rows.first?["n"] == "0")
            #expect(
                try await db.query("SELECT count(*) AS n FROM decisions").rows.first?["n"] == String(2 * times.count))
        }
    }

    @Test("a batch that meets stored or repeated ids falls back and stores every other record once, in one whole chain")
    func conflictsFallBackAndKeepTheChainWhole() async throws {
        try await PostgresTestServer.withDatabase { db, _ in
            let store = AuditStore(connection: db)
            try await store.migrate(logger: PostgresTestServer.logger)
            let records = AuditRecords.make(300)
            var chain = AuditChain(writer: "w")
            #expect(
                try await store.insert(Array(records[..<100]), chain: &chain) == .init(inserted: 100, duplicates: 0))
            // New records around one stored already: the direct COPY meets the unique violation and the
            // fallback stores the other 200, chained after the head.
            let mixed = Array(records[100..<200]) + [records[42]] + Array(records[200...])
            #expect(try await store.insert(mixed, chain: &chain) == .init(inserted: 200, duplicates: 1))
            #expect(chain.seq == 300)
            // Repeats inside one batch (of a new and of a stored record): each stored once.
            let more = AuditRecords.make(2, startTsNs: 7)
            #expect(
                try await store.insert([more[0], more[0], records[7], more[1], more[1]], chain: &chain)
                    == .init(inserted: 2, duplicates: 3))
            // A replay of everything adds nothing and leaves the chain's head where it was.
            let head = chain
            #expect(try await store.insert(records + more, chain: &chain) == .init(inserted: 0, duplicates: 302))
            #expect(chain == head)
            // A stale head (another process with this writer id went on): the COPY meets the chain's unique
            // index, the fallback re-reads the head and continues after it.
            var stale = AuditChain(writer: "w", seq: 100, hash: head.hash)
            let late = AuditRecords.make(3, startTsNs: 9)
            #expect(try await store.insert(late, chain: &stale) == .init(inserted: 3, duplicates: 0))
            #expect(stale.seq == 305)

            let stored = try await store.all()
            #expect(stored == (records + more + late).sorted { ($0.tsNs, $0.decisionId) < ($1.tsNs, $1.decisionId) })
            #expect(try await checkedChain(db, writer: "w") == .success(305))
        }
    }

    @Test func badRecordsAreIsolatedWithTheirReasonAndTheRestGoesIn() async throws {
        try await PostgresTestServer.withDatabase { db, _ in
            let store = AuditStore(connection: db)
            try await store.migrate(logger: PostgresTestServer.logger)
            // A rule only the database knows (the validation cannot): found by bisection.
            try await db.execute(
                script: "ALTER TABLE decisions ADD CONSTRAINT no_rejects CHECK (symbol <> 'REJECT-ME')")
            var records = AuditRecords.make(1000)
            records[3].decisionId = "not-a-uuid"
            records[7].symbol = "NUL\u{0}BYTE"  // text cannot hold NUL: 22021 from COPY
            records[500].symbol = "REJECT-ME"
            records[998].symbol = "REJECT-ME"
            let (outcome, rejected) = try await store.insertIsolatingBadRecords(records)
            #expect(outcome == .init(inserted: 996, duplicates: 0))
            #expect(rejected.map(\.index) == [3, 7, 500, 998])
            #expect(rejected[0].reason == #"decision_id is not a UUID: "not-a-uuid""#)
            #expect(rejected[1].reason.contains("symbol contains a NUL"))
            #expect(rejected[2].reason.contains("23514") && rejected[2].reason.contains("no_rejects"))
            #expect(try await db.query("SELECT count(*) AS n FROM decisions").rows.first?["n"] == "996")
            // Redelivered with the bad ones again: nothing new, the same rejections.
            let again = try await store.insertIsolatingBadRecords(records)
            #expect(again.outcome == .init(inserted: 0, duplicates: 996))
            #expect(again.rejected.map(\.index) == [3, 7, 500, 998])
        }
    }

    @Test func validationFindsWhatPostgresWouldReject() {
        var record = AuditRecords.make(1)[0]
        #expect(AuditStore.problem(with: record) == nil)
        record.decisionId = record.decisionId.uppercased()
        #expect(AuditStore.problem(with: record) == nil)
        for bad in [
            "", "6f9619ff8b86d011b42d00c04fc964ff", "6f9619ff-8b86-d011-b42d-00c04fc964fg",
            "{6f9619ff-8b86-d011-b42d-00c04fc964ff}"
        ] {
            record.decisionId = bad
            #expect(AuditStore.problem(with: record)?.hasPrefix("decision_id is not a UUID") == true, "\(bad)")
        }
        record = AuditRecords.make(1)[0]
        record.canary = CanaryResult(version: "2\u{0}", score: nil)
        #expect(
            AuditStore.problem(with: record)
                == "canary_version contains a NUL character, which PostgreSQL text cannot hold")
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
