import AuditStorage
import Foundation
import TEModels
import TEPostgres
import TERedis
import TestSupport
import Testing

/// `audit-writer` end to end: the built binary, real Redis, real PostgreSQL.
@Suite("audit-writer end to end", .serialized, .timeLimit(.minutes(5)))
struct AuditWriterTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    static func redis() throws -> RedisClient {
        RedisClient(
            configuration: try TestEnv.redisConfiguration(), name: "audit-test", logger: PostgresTestServer.logger)
    }

    static func expectStored(_ db: PostgresConnection, _ records: [AuditRecord]) async throws {
        let stored = try await AuditStore(connection: db).all()
        #expect(stored.count == records.count)
        #expect(stored == records.sorted { ($0.tsNs, $0.decisionId) < ($1.tsNs, $1.decisionId) })
    }

    @Test func everyRecordOnceWithEveryFieldAndBadRecordsDeadLettered() async throws {
        try await PostgresTestServer.withDatabase { db, configuration in
            let harness = try AuditWriterHarness()
            let redis = try Self.redis()
            let url = try PostgresConfiguration.url(
                try PostgresTestServer.url(), database: try #require(configuration.database))
            let records = AuditRecords.make(400)
            var bad = AuditRecords.make(2, startTsNs: 9)
            bad[0].decisionId = "not-a-uuid"
            bad[1].symbol = "NUL\u{0}BYTE"
            try await harness.publish(
                Array(records[..<150]) + [bad[0]] + Array(records[150...]) + [bad[1]], redis: redis)
            let writer = try harness.start(postgresURL: url)
            let done = await TestEnv.eventually(timeout: .seconds(60)) { await rowCountIfReady(db) == records.count }
            let rows = await rowCountIfReady(db)
            #expect(done, "rows: \(rows); writer output:\n\(writer.output())")
            try await Self.expectStored(db, records)

            // Both bad records are dead letters carrying PostgreSQL's message; the rest was acknowledged.
            let dlqDone = await TestEnv.eventually(timeout: .seconds(20)) { (try? await redis.xlen(harness.dlq)) == 2 }
            #expect(dlqDone)
            let letters = try await redis.xrange(harness.dlq).map {
                try StreamFieldDecoder.decode(DeadLetter.self, from: $0.fields)
            }
            #expect(letters.map(\.stage) == ["audit-writer", "audit-writer"])
            #expect(
                letters.map(\.reason) == [
                    #"decision_id is not a UUID: "not-a-uuid""#,
                    "symbol contains a NUL character, which PostgreSQL text cannot hold"
                ])
            // Non-UUID, repeated and 128-character client request ids are stored as sent (checked above).
            #expect(Set(records.map(\.requestId)).contains("same-client-id"))
            let pendingDone = await TestEnv.eventually(timeout: .seconds(20)) {
                (try? await redis.xpending(harness.stream, group: "audit-writer").count) == 0
            }
            #expect(pendingDone)

            // The same records delivered again (as new stream entries): still one row each.
            try await harness.publish(records, redis: redis)
            let skipped = await TestEnv.eventually(timeout: .seconds(60)) {
                await harness.metric("te_audit_duplicates_skipped_total") == Double(records.count)
            }
            let duplicates = await harness.metric("te_audit_duplicates_skipped_total")
            #expect(skipped, "duplicates metric: \(String(describing: duplicates))")
            #expect(await harness.metric("te_audit_rows_inserted_total") == Double(records.count))
            try await Self.expectStored(db, records)

            // Every audit-writer family of deploy/metrics.txt is exported under its name and type, with HELP.
            let exported = await harness.metricsText()
            let contract = try String(contentsOfFile: Self.root + "/deploy/metrics.txt", encoding: .utf8)
            let families = contract.split(separator: "\n").map { $0.split(separator: " ") }
                .filter { $0.count >= 2 && $0[0].hasPrefix("te_audit_") }
            #expect(families.count == 7)
            for family in families {
                #expect(exported.contains("# TYPE \(family[0]) \(family[1])\n"), "\(family[0]) in:\n\(exported)")
                #expect(exported.contains("# HELP \(family[0]) "), "\(family[0]) has no HELP")
            }
            #expect(exported.contains("te_audit_table_rows_inserted_total{table=\"rollout_events\"} 0"))
            #expect(exported.contains("te_audit_batch_rows_bucket{le=\"10000.0\"}"), "\(exported)")
            #expect(exported.contains("te_audit_commit_duration_seconds_bucket{le=\"0.0005\"}"), "\(exported)")

            writer.terminate()
            #expect(try await writer.waitForExit(timeout: .seconds(20)) == 0)
            await harness.cleanUp(redis: redis)
        }
    }

    @Test func sigkillBetweenCommitAndAckThenRestartLosesAndDoublesNothing() async throws {
        try await PostgresTestServer.withDatabase { db, configuration in
            let harness = try AuditWriterHarness()
            let redis = try Self.redis()
            let url = try PostgresConfiguration.url(
                try PostgresTestServer.url(), database: try #require(configuration.database))
            let records = AuditRecords.make(300)
            try await harness.publish(records, redis: redis)

            // Dies by SIGKILL right after its first COMMIT: 50 rows in, nothing acknowledged.
            let crashing = try harness.start(postgresURL: url, extra: ["AUDIT_TEST_CRASH_AFTER_COMMIT": "1"])
            let status = try await crashing.waitForExit(timeout: .seconds(60))
            #expect(status == SIGKILL, "exit status \(status); output:\n\(crashing.output())")
            #expect(try await rowCount(db) == 50)
            // Pending: the committed batch, and the next one if its read-ahead (started with the first batch's
            // COPY) was delivered before the kill.
            let pending = try await redis.xpending(harness.stream, group: "audit-writer")
            #expect(pending.count == 50 || pending.count == 100, "pending: \(pending.count)")

            // The restart (same consumer name) re-reads its pending entries: they are duplicates now.
            let writer = try harness.start(postgresURL: url)
            let done = await TestEnv.eventually(timeout: .seconds(60)) {
                let inserted = await harness.metric("te_audit_rows_inserted_total")
                let pending = try? await redis.xpending(harness.stream, group: "audit-writer").count
                return inserted == 250 && pending == 0
            }
            #expect(done, "writer output:\n\(writer.output())")
            #expect(await harness.metric("te_audit_duplicates_skipped_total") == 50)
            try await Self.expectStored(db, records)
            writer.terminate()
            #expect(try await writer.waitForExit(timeout: .seconds(20)) == 0)
            await harness.cleanUp(redis: redis)
        }
    }

    @Test(
        "SIGKILL during a drain (batches committed, one in its COPY, the next read ahead) then a restart: every record once, one whole chain"
    )
    func sigkillMidDrainThenRestartLosesAndDoublesNothing() async throws {
        try await PostgresTestServer.withDatabase { db, configuration in
            let harness = try AuditWriterHarness()
            let redis = try Self.redis()
            let url = try PostgresConfiguration.url(
                try PostgresTestServer.url(), database: try #require(configuration.database))
            let records = AuditRecords.make(20_000)
            try await harness.publish(records, redis: redis)
            let settings = ["AUDIT_WRITER_ID": "killed", "AUDIT_BATCH_SIZE": "500"]

            // Killed as soon as its first rows are in: wherever it is then, nothing acknowledged without its
            // COMMIT, nothing committed twice.
            let first = try harness.start(postgresURL: url, extra: settings)
            let writing = await TestEnv.eventually(timeout: .seconds(60)) { await rowCountIfReady(db) > 0 }
            #expect(writing, "writer output:\n\(first.output())")
            first.kill9()
            #expect(try await first.waitForExit(timeout: .seconds(20)) == SIGKILL)
            let storedAtKill = try await rowCount(db)
            print("audit-writer SIGKILLed with \(storedAtKill) of \(records.count) rows stored")

            // The restart (same consumer) re-reads its pending entries first: the stored ones are duplicates.
            let writer = try harness.start(postgresURL: url, extra: settings)
            let done = await TestEnv.eventually(timeout: .seconds(120)) {
                let pending = try? await redis.xpending(harness.stream, group: "audit-writer").count
                return await rowCountIfReady(db) == records.count && pending == 0
            }
            let rows = await rowCountIfReady(db)
            #expect(done, "rows: \(rows); writer output:\n\(writer.output())")
            #expect(await harness.metric("te_audit_rows_inserted_total") == Double(records.count - storedAtKill))
            try await Self.expectStored(db, records)
            #expect(try await checkedChain(db, writer: "killed") == .success(records.count))
            #expect(try await redis.xlen(harness.dlq) == 0)
            writer.terminate()
            #expect(try await writer.waitForExit(timeout: .seconds(20)) == 0)
            await harness.cleanUp(redis: redis)
        }
    }

    @Test func postgresStoppedForAWhileThenBackLosesNothing() async throws {
        let cluster = try await PrivatePostgresCluster()
        do {
            try await postgresStoppedForAWhile(cluster)
            await cluster.destroy()
        } catch {
            await cluster.destroy()
            throw error
        }
    }

    func postgresStoppedForAWhile(_ cluster: PrivatePostgresCluster) async throws {
        let harness = try AuditWriterHarness()
        let redis = try Self.redis()
        let db = PostgresConnection(
            configuration: try PostgresConfiguration(url: cluster.url), logger: PostgresTestServer.logger)
        let records = AuditRecords.make(600)
        let writer = try harness.start(postgresURL: cluster.url, extra: ["AUDIT_WRITER_ID": "outage"])

        try await harness.publish(Array(records[..<200]), redis: redis)
        let first = await TestEnv.eventually(timeout: .seconds(60)) { await rowCountIfReady(db) == 200 }
        #expect(first, "writer output:\n\(writer.output())")

        try await cluster.stop()
        try await harness.publish(Array(records[200...]), redis: redis)
        // The writer keeps retrying, acknowledges nothing and stays up.
        let retried = await TestEnv.eventually(timeout: .seconds(30)) {
            (await harness.metric("te_audit_retries_total") ?? 0) >= 3
        }
        #expect(retried, "writer output:\n\(writer.output())")
        #expect(writer.isRunning)
        // /readyz answers at once while PostgreSQL is down: 503, naming it.
        let t0 = ContinuousClock.now
        let (status, body) = try await harness.readyz()
        print("audit-writer /readyz with PostgreSQL stopped answered in \(ContinuousClock.now - t0): \(body)")
        #expect(status == 503)
        #expect(body.contains("\"down\":{\"postgres\""))
        let pendingWhileDown = try await redis.xpending(harness.stream, group: "audit-writer").count
        #expect(pendingWhileDown > 0)
        #expect(try await redis.xlen(harness.dlq) == 0)

        try await cluster.start()
        #expect(await TestEnv.eventually(timeout: .seconds(30)) { (try? await harness.readyz())?.status == 200 })
        let done = await TestEnv.eventually(timeout: .seconds(90)) { await rowCountIfReady(db) == records.count }
        let rows = await rowCountIfReady(db)
        #expect(done, "rows: \(rows); writer output:\n\(writer.output())")
        try await Self.expectStored(db, records)
        let acked = await TestEnv.eventually(timeout: .seconds(20)) {
            (try? await redis.xpending(harness.stream, group: "audit-writer").count) == 0
        }
        #expect(acked)
        #expect(try await redis.xlen(harness.dlq) == 0)
        // The batches held through the outage joined the chain once each.
        #expect(try await checkedChain(db, writer: "outage") == .success(records.count))

        writer.terminate()
        #expect(try await writer.waitForExit(timeout: .seconds(20)) == 0)
        await db.close()
        await harness.cleanUp(redis: redis)
    }
}
