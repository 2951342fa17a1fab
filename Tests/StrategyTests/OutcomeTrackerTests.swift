import FeatureEngine
import Foundation
import Logging
import TEModels
import TEPostgres
import TERedis
import TestSupport
import Testing

/// `outcome-tracker` on a real recording: `te replay` → ingest → te:ticks, decisions on the recording's own
/// feature snapshots written to te:audit as the gateway writes them, outcomes → audit-writer → PostgreSQL.
@Suite("outcome-tracker on a recording", .serialized, .timeLimit(.minutes(8)))
struct OutcomeTrackerTests {
    static let recording = RecordedData.path("binance/usdm_btcusdt_20240718.gz")
    static let horizonMs: Int64 = 5000
    static let costBps = 4.0

    /// Decisions on every 20th quote snapshot of the recording, market time = the snapshot's ts_ns.
    static func decisions(_ ticks: [Tick]) -> [AuditRecord] {
        var engine = FeatureEngine(windowMs: 5000)
        var out: [AuditRecord] = []
        var n = 0
        for tick in ticks {
            guard case .snapshot(let s) = engine.apply(tick) else { continue }
            n += 1
            guard n % 20 == 0 else { continue }
            let score = Double(out.count % 10) / 10 + 0.05
            let id = UUID().uuidString.lowercased()
            out.append(
                AuditRecord(
                    decisionId: id, requestId: id, tsNs: s.tsNs + 1_000_000, symbol: s.symbol,
                    decision: score >= 0.5 ? .trade : .noTrade, score: score, source: .model,
                    modelName: "trade_eligibility", modelVersion: "1", modelHash: "test", features: s.features,
                    featureAgeMs: 1, latencyUs: 100, featureSnapshotId: "0-\(n)", featureTsNs: s.tsNs))
        }
        return out
    }

    /// The label of a decision at t, computed here by a plain scan of the symbol's quotes (independent of
    /// FeatureEngine's QuoteHistory): nil when no quote after t + H exists.
    static func expectedLabel(_ quotes: [Tick], t: Int64) -> (returnBps: Double, eligible: Bool)? {
        let horizon = t + horizonMs * 1_000_000
        guard quotes.contains(where: { $0.tsNs > horizon }) else { return nil }
        guard let d = quotes.last(where: { $0.tsNs <= t }), let h = quotes.last(where: { $0.tsNs <= horizon }) else {
            return nil
        }
        func mid(_ q: Tick) -> Double { (q.bid! + q.ask!) / 2 }
        let spread = (d.ask! - d.bid!) / mid(d) * 1e4
        let r = log(mid(h) / mid(d)) * 1e4
        return (r, abs(r) > spread / 2 + costBps)
    }

    /// `te features --label` over the recording: (return_bps, eligible) by ts_ns.
    static func offlineLabels() async throws -> [Int64: (Double?, Int?)] {
        let csv = FileManager.default.temporaryDirectory.appendingPathComponent("labels-\(UUID().uuidString).csv")
        let te = try ChildProcess.built(
            "te",
            arguments: [
                "features", "--label", "--horizon-ms", String(horizonMs), "--cost-bps", "4", "-o", csv.path,
                recording
            ])
        #expect(try await te.waitForExit(timeout: .seconds(120)) == 0, "\(te.output())")
        var out: [Int64: (Double?, Int?)] = [:]
        for line in try String(contentsOf: csv, encoding: .utf8).split(separator: "\n").dropFirst() {
            let cells = line.split(separator: ",", omittingEmptySubsequences: false)
            guard let ts = Int64(cells[1]) else { continue }
            out[ts] = (Double(cells[cells.count - 2]), Int(cells[cells.count - 1]))
        }
        try? FileManager.default.removeItem(at: csv)
        return out
    }

    struct Setup {
        let pipeline: LivePipeline
        let database: String
        let admin: PostgresConnection
        let db: PostgresConnection
        let postgresURL: String
    }

    static func setUp(_ name: String) async throws -> Setup {
        guard let base = ProcessInfo.processInfo.environment["POSTGRES_URL"], !base.isEmpty else {
            throw TestFailure("POSTGRES_URL is not set: run `make dev-up` and `source .dev/env`")
        }
        var logger = Logger(label: "outcome-tests")
        logger.logLevel = .warning
        let admin = PostgresConnection(configuration: try PostgresConfiguration(url: base), logger: logger)
        let database = "te_outcomes_\(UInt32.random(in: 0...UInt32.max))"
        try await admin.createDatabase(database)
        var configuration = try PostgresConfiguration(url: base)
        configuration.database = database
        guard var url = URLComponents(string: base) else { throw TestFailure("unparseable POSTGRES_URL") }
        url.path = "/" + database
        return Setup(
            pipeline: try await LivePipeline(name), database: database, admin: admin,
            db: PostgresConnection(configuration: configuration, logger: logger), postgresURL: url.string ?? base)
    }

    static func tearDown(_ s: Setup) async {
        await s.db.close()
        try? await s.admin.dropDatabase(s.database)
        await s.admin.close()
        await s.pipeline.close()
    }

    static func publish(_ records: [AuditRecord], redis: RedisClient) async throws {
        let commands = try records.map {
            RedisCommand.xadd(StreamKey.audit, maxLen: nil, fields: try StreamFieldEncoder.encode($0))
        }
        for start in stride(from: 0, to: commands.count, by: 200) {
            _ = try await redis.pipeline(Array(commands[start..<min(start + 200, commands.count)]))
        }
    }

    static func rows(_ db: PostgresConnection) async throws -> [PostgresRow] {
        (try? await db.query("SELECT decision_id::text AS id, return_bps, eligible, reason FROM outcomes").rows) ?? []
    }

    /// Each decision's row equals the independent label and `te features --label`; unlabelled rows
    /// are exactly the decisions whose horizon lies past the recording's end.
    static func checkLabels(_ rows: [PostgresRow], decisions: [AuditRecord], ticks: [Tick]) async throws {
        let quotes = ticks.filter { $0.kind == .quote }
        let offline = try await offlineLabels()
        let byID = Dictionary(uniqueKeysWithValues: rows.compactMap { r in r["id"].map { ($0, r) } })
        var labelled = 0
        for d in decisions {
            guard let row = byID[d.decisionId], let t = d.featureTsNs else {
                Issue.record("no outcome row for \(d.decisionId)")
                continue
            }
            let expected = expectedLabel(quotes, t: t)
            let csv = offline[t]
            if let expected {
                labelled += 1
                #expect(row["eligible"] == (expected.eligible ? "t" : "f"), "\(d.decisionId) at \(t)")
                let r = Double(row["return_bps"] ?? "") ?? .nan
                #expect(abs(r - expected.returnBps) <= 1e-9, "\(d.decisionId): \(r) vs \(expected.returnBps)")
                #expect(csv?.1 == (expected.eligible ? 1 : 0))
                #expect(abs((csv?.0 ?? .nan) - expected.returnBps) <= 1e-9)
            } else {
                #expect(row["eligible"] == nil)
                #expect(row["reason"] == "horizon_unresolved")
                #expect(csv != nil && csv!.0 == nil && csv!.1 == nil)
            }
        }
        #expect(labelled > decisions.count * 9 / 10, "\(labelled) of \(decisions.count) labelled")
    }

    /// Nothing left pending in the tracker's te:audit group, no dead letters, and a clean SIGTERM exit.
    static func finish(_ pipeline: LivePipeline, _ processes: [ChildProcess]) async throws {
        let audit = try await pipeline.redis.xinfoGroups(StreamKey.audit).first { $0.name == "outcome-tracker" }
        #expect(audit?.pending == 0)
        #expect(try await pipeline.redis.xlen(StreamKey.dlq) == 0)
        for process in processes {
            process.terminate()
            #expect(
                try await process.waitForExit(timeout: .seconds(20)) == 0,
                "\(process.name): \(process.output().suffix(1500))")
        }
    }

    func trackerEnvironment() -> [String: String] {
        [
            "OUTCOME_HORIZON_MS": String(Self.horizonMs), "OUTCOME_COST_BPS": "4", "OUTCOME_SWEEP_MS": "100",
            // The recording's last decisions never see their horizon: written unlabelled after 30 s held.
            "OUTCOME_MAX_HOLD_MS": "30000", "CONSUMER_NAME": "outcome-tracker-test"
        ]
    }

    @Test("every decision gets one outcome row whose label equals an independent computation over the same ticks")
    func labelsMatchOfflineComputation() async throws {
        let ticks = try recordingTicks(Self.recording)
        let decisions = Self.decisions(ticks)
        #expect(decisions.count > 200)
        let s = try await Self.setUp("outcomes")
        do {
            let ingest = try await s.pipeline.startIngest()
            let tracker = try s.pipeline.start("outcome-tracker", trackerEnvironment())
            let writer = try s.pipeline.start("audit-writer", ["POSTGRES_URL": s.postgresURL])
            // Half the decisions come before their ticks (held until the horizon passes), half after (known at once).
            let half = decisions.count / 2
            try await Self.publish(Array(decisions[..<half]), redis: s.pipeline.redis)
            try await s.pipeline.replay(Self.recording)
            try await Self.publish(Array(decisions[half...]), redis: s.pipeline.redis)
            let done = await TestEnv.eventually(timeout: .seconds(180), every: .milliseconds(250)) {
                (try? await Self.rows(s.db).count) ?? 0 >= decisions.count
            }
            if !done {
                throw TestFailure(
                    "outcomes incomplete:\n\(tracker.output().suffix(3000))\n\(writer.output().suffix(2000))")
            }
            let rows = try await Self.rows(s.db)
            #expect(rows.count == decisions.count)
            try await Self.checkLabels(rows, decisions: decisions, ticks: ticks)
            try await Self.finish(s.pipeline, [tracker, writer, ingest])
        } catch {
            await Self.tearDown(s)
            throw error
        }
        await Self.tearDown(s)
    }

    @Test("the tracker killed (SIGKILL) mid-run and restarted: every decision exactly one row, labels unchanged")
    func killedTrackerLosesAndDoublesNothing() async throws {
        let ticks = try recordingTicks(Self.recording)
        let decisions = Self.decisions(ticks)
        let s = try await Self.setUp("outcomes-kill")
        do {
            let ingest = try await s.pipeline.startIngest()
            var tracker = try s.pipeline.start("outcome-tracker", trackerEnvironment())
            let writer = try s.pipeline.start("audit-writer", ["POSTGRES_URL": s.postgresURL])
            try await Self.publish(decisions, redis: s.pipeline.redis)
            // Paced (the recording's 178 s at ×20), so the kill lands while outcomes are being written.
            let replay = try ChildProcess.built(
                "te", arguments: ["replay", "--topic", s.pipeline.topic, "--speed", "20", "--quiet", Self.recording],
                environment: try s.pipeline.environment())
            let started = await TestEnv.eventually(timeout: .seconds(120), every: .milliseconds(50)) {
                (try? await s.pipeline.redis.xlen(StreamKey.outcomes)) ?? 0 >= decisions.count / 4
            }
            if !started { throw TestFailure("no outcomes:\n\(tracker.output().suffix(3000))") }
            tracker.kill9()
            _ = try await tracker.waitForExit()
            let before = try await s.pipeline.redis.xlen(StreamKey.outcomes)
            tracker = try s.pipeline.start("outcome-tracker", trackerEnvironment())
            #expect(try await replay.waitForExit(timeout: .seconds(120)) == 0, "\(replay.output())")
            let done = await TestEnv.eventually(timeout: .seconds(180), every: .milliseconds(250)) {
                (try? await Self.rows(s.db).count) ?? 0 >= decisions.count
            }
            if !done { throw TestFailure("outcomes incomplete:\n\(tracker.output().suffix(3000))") }
            print("outcome-tracker kill: \(before) of \(decisions.count) outcomes written before SIGKILL")
            let rows = try await Self.rows(s.db)
            #expect(rows.count == decisions.count)
            #expect(Set(rows.compactMap { $0["id"] }) == Set(decisions.map(\.decisionId)))
            try await Self.checkLabels(rows, decisions: decisions, ticks: ticks)
            #expect(tracker.output().contains("quotes rebuilt from the stream"))
            try await Self.finish(s.pipeline, [tracker, writer, ingest])
        } catch {
            await Self.tearDown(s)
            throw error
        }
        await Self.tearDown(s)
    }
}
