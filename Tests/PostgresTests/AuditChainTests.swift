import AuditStorage
import Foundation
import TEModels
import TEPostgres
import TERedis
import TestSupport
import Testing

/// The `decisions` hash chain (`AuditChain`): written by the real audit-writer binary as `te_audit_writer`,
/// checked by `te audit verify --chain` as `te_reader` and by the auditor's psql + sha256sum script.
@Suite("audit hash chain", .serialized, .timeLimit(.minutes(6)))
struct AuditChainTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    static func redis() throws -> RedisClient {
        RedisClient(
            configuration: try TestEnv.redisConfiguration(), name: "chain-test", logger: PostgresTestServer.logger)
    }

    /// Records with every character the canonical line escapes, and values jsonb and float8 print their own way.
    static func awkwardRecords(_ count: Int) -> [AuditRecord] {
        var records = AuditRecords.make(count)
        for i in records.indices where i % 7 == 3 {
            records[i].reason = "tab\there\\back\u{08}bs\u{0C}ff\u{0B}vt\rcr\nnl ünï"
            records[i].decisionId = records[i].decisionId.uppercased()  // stored (and hashed) in lower case
            records[i].features = try? FeatureVector([-0.0, 1e-300, -5e-324, 1e300, 123456789012345.0, 0.1, 1e15, -2.5])
            records[i].score = -0.0
        }
        return records
    }

    static func verify(_ url: String, _ extra: [String] = []) async throws -> (
        status: Int32, output: String, json: [String: Any]?
    ) {
        let reader = try StoreUsers.readerPostgresURL(on: url)
        let result = try await runTe(
            ["audit", "verify", "--chain", "-o", "json"] + extra, environment: ["POSTGRES_URL": reader])
        return (result.status, result.output, jsonOutput(result.output) as? [String: Any])
    }

    static func rowsChecked(_ json: [String: Any]?) -> [String: Int] {
        var out: [String: Int] = [:]
        for writer in json?["writers"] as? [[String: Any]] ?? [] {
            if let name = writer["writer"] as? String { out[name] = writer["rows_checked"] as? Int }
        }
        return out
    }

    static func chainSeqs(_ db: PostgresConnection, writer: String) async throws -> [Int64] {
        try await db.query("SELECT chain_seq FROM decisions WHERE chain_writer = $1 ORDER BY chain_seq", [writer])
            .rows.compactMap { $0["chain_seq"].flatMap { Int64($0) } }
    }

    @Test("the writer's canonical line is what PostgreSQL prints for the stored row, and the auditor's script agrees")
    func canonicalLineMatchesTheStoredRow() async throws {
        try await PostgresTestServer.withDatabase { db, configuration in
            let store = AuditStore(connection: db)
            try await store.migrate(logger: PostgresTestServer.logger)
            let records = Self.awkwardRecords(60)
            var chain = AuditChain(writer: "canon\twriter")
            #expect(try await store.insert(records, chain: &chain) == .init(inserted: 60, duplicates: 0))
            let stored = try await db.query(
                AuditChain.canonicalSelect + " WHERE chain_writer = $1 ORDER BY chain_seq", ["canon\twriter"])
            #expect(stored.rows.count == records.count)
            for (i, (row, record)) in zip(stored.rows, records).enumerated() {
                let fromRow = AuditChain.canonicalLine(columns: row.values)
                let fromRecord = AuditChain.canonicalLine(writer: "canon\twriter", seq: Int64(i + 1), record: record)
                #expect(
                    fromRow == fromRecord,
                    "row \(i + 1):\n\(String(decoding: fromRow, as: UTF8.self))\n\(String(decoding: fromRecord, as: UTF8.self))"
                )
            }
            #expect(chain.seq == 60)

            // The auditor's re-check: psql + sha256sum only, on the same SQL text.
            let script = try String(contentsOfFile: Self.root + "/scripts/audit-chain-check.sh", encoding: .utf8)
            #expect(
                script.contains("canonical=\"\(AuditChain.canonicalSelect)\""),
                "scripts/audit-chain-check.sh carries the canonical SQL")
            let readme = try String(contentsOfFile: Self.root + "/deploy/README.md", encoding: .utf8)
            #expect(readme.contains(AuditChain.canonicalSelect), "deploy/README.md documents the canonical SQL")
            let url = try PostgresConfiguration.url(
                try PostgresTestServer.url(), database: try #require(configuration.database))
            let check = try await Self.runScript(["canon\twriter"], url: try StoreUsers.readerPostgresURL(on: url))
            #expect(check.status == 0, "\(check.output)")
            #expect(check.output == "ok canon\twriter 60 \(chain.hash)\n", "\(check.output)")

            try await db.execute(
                "UPDATE decisions SET reason = 'edited' WHERE chain_writer = $1 AND chain_seq = 17", ["canon\twriter"])
            let tampered = try await Self.runScript(["canon\twriter"], url: url)
            #expect(tampered.status == 1)
            #expect(tampered.output.hasPrefix("broken: chain_seq 17 row_hash "), "\(tampered.output)")
        }
    }

    static func runScript(_ arguments: [String], url: String) async throws -> (status: Int32, output: String) {
        let process = try ChildProcess(
            Self.root + "/scripts/audit-chain-check.sh", arguments: arguments,
            environment: ProcessInfo.processInfo.environment.merging(["POSTGRES_URL": url]) { $1 })
        let status = try await process.waitForExit(timeout: .seconds(60))
        return (status, process.output())
    }

    @Test(
        "audit-writer chains what it inserts: redeliveries, a SIGKILL between COMMIT and XACK, a restart and a second replica keep every chain whole; an UPDATE and a DELETE are named"
    )
    func writerChainsAndVerifyNamesTampering() async throws {
        try await PostgresTestServer.withDatabase { db, configuration in
            let harness = try AuditWriterHarness()
            let redis = try Self.redis()
            let url = try PostgresConfiguration.url(
                try PostgresTestServer.url(), database: try #require(configuration.database))
            let records = Self.awkwardRecords(400)

            // Dies by SIGKILL right after its first COMMIT (50 rows), before the XACK.
            try await harness.publish(Array(records[..<200]), redis: redis)
            let crashing = try harness.start(
                postgresURL: url, extra: ["AUDIT_TEST_CRASH_AFTER_COMMIT": "1", "AUDIT_WRITER_ID": "writer-a"])
            #expect(try await crashing.waitForExit(timeout: .seconds(60)) == SIGKILL, "\(crashing.output())")
            #expect(try await Self.chainSeqs(db, writer: "writer-a") == Array(1...50))

            // The restart reads its head back, finds its 50 pending entries stored (not chained again) and
            // continues at 51; the same records published again are duplicates too.
            let writerA = try harness.start(postgresURL: url, extra: ["AUDIT_WRITER_ID": "writer-a"])
            try await harness.publish(Array(records[100..<150]), redis: redis)
            var done = await TestEnv.eventually(timeout: .seconds(60)) {
                let skipped = await harness.metric("te_audit_duplicates_skipped_total")
                let rows = try? await rowCount(db)
                return skipped == 100 && rows == 200
            }
            #expect(done, "writer output:\n\(writerA.output())")
            #expect(try await Self.chainSeqs(db, writer: "writer-a") == Array(1...200))

            // A second replica on the same group: its own chain; together every record once.
            let second = try AuditWriterHarness(sharing: harness)
            let writerB = try second.start(postgresURL: url, extra: ["AUDIT_WRITER_ID": "writer-b"])
            // In waves, so both replicas' blocked reads get some.
            for wave in stride(from: 200, to: records.count, by: 25) {
                try await harness.publish(Array(records[wave..<min(wave + 25, records.count)]), redis: redis)
                try await Task.sleep(for: .milliseconds(150))
            }
            done = await TestEnv.eventually(timeout: .seconds(60)) { (try? await rowCount(db)) == records.count }
            #expect(done, "writer output:\n\(writerA.output())\n\(writerB.output())")
            let a = try await Self.chainSeqs(db, writer: "writer-a")
            let b = try await Self.chainSeqs(db, writer: "writer-b")
            #expect(a == (1...Int64(a.count)).map { $0 })
            #expect(!b.isEmpty && b == (1...Int64(max(b.count, 1))).map { $0 })
            #expect(a.count + b.count == records.count)
            writerA.terminate()
            writerB.terminate()
            #expect(try await writerA.waitForExit(timeout: .seconds(20)) == 0)
            #expect(try await writerB.waitForExit(timeout: .seconds(20)) == 0)

            var result = try await Self.verify(url)
            #expect(result.status == 0, "\(result.output)")
            #expect(result.json?["ok"] as? Bool == true)
            #expect(Self.rowsChecked(result.json) == ["writer-a": a.count, "writer-b": b.count].filter { $0.value > 0 })
            let onlyA = try await Self.verify(url, ["--writer", "writer-a"])
            #expect(Self.rowsChecked(onlyA.json) == ["writer-a": a.count])
            // A period: the chain positions from the first to the last row decided in it.
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            let since = formatter.string(from: Date(timeIntervalSince1970: Double(records[100].tsNs) / 1e9))
            let period = try await Self.verify(url, ["--since", since, "--writer", "writer-a"])
            #expect(period.status == 0, "\(period.output)")
            let checked = Self.rowsChecked(period.json)["writer-a"] ?? 0
            #expect(checked > 0 && checked < a.count, "\(period.output)")

            // The admin (owner role) changes a score: the row is named, with both hashes.
            let victim = try #require(
                try await db.query(
                    "SELECT decision_id::text AS id, row_hash FROM decisions WHERE chain_writer = 'writer-a' AND chain_seq = 120"
                ).rows.first)
            try await db.execute("UPDATE decisions SET score = 0.999 WHERE decision_id = $1", [victim["id"]])
            result = try await Self.verify(url)
            #expect(result.status == 1, "\(result.output)")
            let broken = try #require(result.json?["broken"] as? [String: Any], "\(result.output)")
            #expect(broken["decision_id"] as? String == victim["id"])
            #expect(broken["chain_seq"] as? Int == 120)
            #expect(broken["stored_hash"] as? String == victim["row_hash"])
            #expect(
                (broken["expected_hash"] as? String)?.count == 64
                    && broken["expected_hash"] as? String != victim["row_hash"])
            let text = try await runTe(
                ["audit", "verify", "--chain"], environment: ["POSTGRES_URL": try StoreUsers.readerPostgresURL(on: url)]
            )
            #expect(text.status == 1)
            #expect(
                text.output.contains(
                    "chain broken: writer writer-a, decision_id \(victim["id"] ?? "?"), chain_seq 120"),
                "\(text.output)")

            // Put back, the chain fits again; a deleted row is a gap named at the row after it.
            try await db.execute(
                "UPDATE decisions SET score = $2 WHERE decision_id = $1",
                [victim["id"], records.first { $0.decisionId.lowercased() == victim["id"] }?.score.map { "\($0)" }])
            #expect(try await Self.verify(url).status == 0)
            let next = try await db.query(
                "SELECT decision_id::text AS id FROM decisions WHERE chain_writer = 'writer-a' AND chain_seq = 61"
            ).rows.first?["id"]
            try await db.execute("DELETE FROM decisions WHERE chain_writer = 'writer-a' AND chain_seq = 60")
            result = try await Self.verify(url)
            #expect(result.status == 1)
            let gap = try #require(result.json?["broken"] as? [String: Any], "\(result.output)")
            #expect(gap["chain_seq"] as? Int == 61)
            #expect(gap["decision_id"] as? String == next)
            #expect((gap["problem"] as? String)?.contains("rows 60…60 are missing") == true, "\(result.output)")

            // --writer names a chain: without --chain (the re-score mode) it is refused, not ignored.
            let misplaced = try await runTe(
                ["audit", "verify", "--writer", "writer-a"], environment: ["POSTGRES_URL": url])
            #expect(misplaced.status != 0)
            #expect(misplaced.output.contains("--writer goes with --chain"), "\(misplaced.output)")
            await harness.cleanUp(redis: redis)
        }
    }

    /// The audit writer on the dev Redis Cluster (`REDIS_CLUSTER_URL`) as its own ACL user: the slot map
    /// (CLUSTER SHARDS) and its stream commands are within its grant (deploy/redis/users.acl), writing to
    /// te:audit is not; what it inserts forms one whole chain.
    @Test(
        "audit-writer as its ACL user on the Redis Cluster: reads its stream, writes a whole chain, and is refused outside its grant"
    )
    func auditWriterUserOnTheCluster() async throws {
        guard let cluster = ProcessInfo.processInfo.environment["REDIS_CLUSTER_URL"], !cluster.isEmpty else {
            throw TestSetupError("REDIS_CLUSTER_URL is not set (make dev-up with DEV_REDIS_CLUSTER=1, source .dev/env)")
        }
        try await PostgresTestServer.withDatabase { db, configuration in
            let harness = try AuditWriterHarness()
            let redis = RedisClient(configuration: try RedisConfiguration(url: cluster), name: "chain-cluster")
            let url = try PostgresConfiguration.url(
                try PostgresTestServer.url(), database: try #require(configuration.database))
            let records = AuditRecords.make(120)
            try await harness.publish(records, redis: redis)
            let writer = try harness.start(
                postgresURL: url, extra: ["REDIS_URL": cluster, "AUDIT_WRITER_ID": "cluster-writer"])
            let done = await TestEnv.eventually(timeout: .seconds(60)) {
                let rows = try? await rowCount(db)
                let pending = try? await redis.xpending(harness.stream, group: "audit-writer").count
                return rows == records.count && pending == 0
            }
            #expect(done, "writer output:\n\(writer.output())")
            #expect(try await Self.chainSeqs(db, writer: "cluster-writer") == Array(1...120))
            let verified = try await Self.verify(url, ["--writer", "cluster-writer"])
            #expect(
                verified.status == 0 && Self.rowsChecked(verified.json) == ["cluster-writer": 120], "\(verified.output)"
            )
            #expect(!writer.output().contains("NOPERM"), "\(writer.output())")
            writer.terminate()
            #expect(try await writer.waitForExit(timeout: .seconds(20)) == 0)

            // The same user, by hand on the cluster: the slot map yes, the gateway's stream no.
            let user = RedisClient(
                configuration: try RedisConfiguration(url: StoreUsers.redisURL(for: "audit-writer", on: cluster)),
                name: "audit-writer-user")
            #expect(try await user.clusterSlotMap()?.coversAllSlots == true)
            var refusal: String?
            do {
                if case .error(let message) = try await user.send(
                    RedisCommand("XADD", "te:audit", "*", "decision_id", "forged"))
                {
                    refusal = message
                }
            } catch {
                refusal = "\(error)"
            }
            #expect(refusal?.contains("NOPERM") == true, "\(String(describing: refusal))")
            user.close()
            await harness.cleanUp(redis: redis)
        }
    }
}
