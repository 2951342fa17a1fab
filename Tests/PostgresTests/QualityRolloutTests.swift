import Foundation
import ServiceKit
import TEModels
import TEPostgres
import TERedis
import TestSupport
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The rollout on quality end to end, on real binaries: two `gateway` replicas in shadow mode (real Triton
/// scores versions 1 and 2 on every decision), the built `outcome-tracker` judging their outcomes from ticks
/// the test writes, `audit-writer` into a fresh database, `te model rollout`. The labels are made from the
/// scores the gateways audited, so which version is better is known exactly: label = (primary > canary)
/// makes the primary closer to every label (the canary is worse by Brier on every decision), label =
/// (canary > primary) the reverse. Precision is left out of these verdicts (CANARY_QUALITY_MIN_TRADES
/// above the test's decisions): it is judged in CanaryJudgeTests. A private Redis with this checkout's ACL
/// file runs the services as their own users on the real key names.
@Suite("rollout on quality: gateways, outcome-tracker, audit-writer", .serialized, .timeLimit(.minutes(5)))
struct QualityRolloutTests {
    static let decisions = 40
    static let horizonMs: Int64 = 1000

    final class Rig: Sendable {
        let server: PrivateRedisServer
        let redis: RedisClient
        let gatewayPorts: [Int]
        let trackerPort: Int
        let writerPort: Int
        let processes: [ChildProcess]
        let tracker: ChildProcess
        let postgresURL: String

        init(
            postgresURL: String, autoPromote: Bool, gateway overrides: [String: String] = [:],
            tracker trackerOverrides: [String: String] = [:]
        ) async throws {
            self.postgresURL = postgresURL
            server = try await PrivateRedisServer(aclFile: try await StoreUsers.renderStrictACL())
            redis = RedisClient(configuration: try RedisConfiguration(url: server.url), name: "rollout-test")
            guard let triton = ProcessInfo.processInfo.environment["TRITON_URL"], !triton.isEmpty else {
                throw TestSetupError("TRITON_URL is not set: source .dev/env (make dev-up starts Triton)")
            }
            trackerPort = try TestEnv.freePort()
            writerPort = try TestEnv.freePort()
            gatewayPorts = [try TestEnv.freePort(), try TestEnv.freePort()]
            let common = [
                "REDIS_URL": server.url, "LOG_LEVEL": "info", "STREAM_BLOCK_MS": "100", "ROLLOUT_POLL_MS": "200"
            ]
            tracker = try ChildProcess.built(
                "outcome-tracker",
                environment: common.merging([
                    "METRICS_PORT": String(trackerPort), "OUTCOME_HORIZON_MS": String(QualityRolloutTests.horizonMs),
                    "OUTCOME_SWEEP_MS": "50", "CANARY_QUALITY_MIN_OUTCOMES": "30",
                    "CANARY_QUALITY_MIN_TRADES": "100000",
                    "CANARY_AUTO_PROMOTE": autoPromote ? "true" : "false"
                ]) { $1 }.merging(trackerOverrides) { $1 })
            var processes = [tracker]
            for (i, port) in gatewayPorts.enumerated() {
                processes.append(
                    try ChildProcess.built(
                        "gateway",
                        environment: common.merging([
                            "TRITON_URL": triton, "HTTP_PORT": String(port), "SHADOW_ENABLED": "true",
                            "SCORE_TIMEOUT_MS": "500", "CANARY_MAX_DISAGREE_RATE": "1", "CANARY_MAX_P99_MS": "60000",
                            "CANARY_MAX_ERROR_RATE": "1", "LOG_LEVEL": i == 0 ? "info" : "notice"
                        ]) { $1 }.merging(overrides) { $1 }))
            }
            processes.append(
                try ChildProcess.built(
                    "audit-writer",
                    environment: common.merging(["POSTGRES_URL": postgresURL, "METRICS_PORT": String(writerPort)]) {
                        $1
                    }))
            self.processes = processes
        }

        func stop() async {
            for p in processes { p.terminate() }
            for p in processes { _ = try? await p.waitForExit(timeout: .seconds(15)) }
            redis.close()
            try? await server.kill()
        }

        func logs() -> String {
            processes.map { "--- \($0.name)\n\($0.output().suffix(3000))" }.joined(separator: "\n")
        }

        static func get(_ port: Int, _ path: String) async -> String? {
            guard let url = URL(string: "http://127.0.0.1:\(port)\(path)"),
                let (data, response) = try? await URLSession.shared.data(from: url),
                (response as? HTTPURLResponse)?.statusCode == 200
            else { return nil }
            return String(decoding: data, as: UTF8.self)
        }

        /// The value of one series (`name{labels}` as exposed) on a /metrics page.
        static func metric(_ port: Int, _ series: String) async -> Double? {
            guard let page = await get(port, "/metrics") else { return nil }
            for line in page.split(separator: "\n") where line.hasPrefix(series + " ") {
                return Double(line.dropFirst(series.count + 1))
            }
            return nil
        }

        func score(_ port: Int, symbol: String, features: [Double]) async throws -> [String: Any] {
            var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)/v1/score")!)
            request.httpMethod = "POST"
            request.timeoutInterval = 10
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
            request.httpBody = try JSONSerialization.data(withJSONObject: ["symbol": symbol, "features": features])
            let (data, response) = try await URLSession.shared.data(for: request)
            #expect((response as? HTTPURLResponse)?.statusCode == 200, "\(String(decoding: data, as: UTF8.self))")
            return (try JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:]
        }

        func up() async throws {
            for port in gatewayPorts {
                let ok = await TestEnv.eventually(timeout: .seconds(30)) { await Self.get(port, "/readyz") != nil }
                #expect(ok, "gateway on \(port) not ready:\n\(logs())")
            }
            let tracker = await TestEnv.eventually(timeout: .seconds(30)) {
                await Self.get(self.trackerPort, "/readyz") != nil
            }
            #expect(tracker, "outcome-tracker not ready:\n\(logs())")
        }

        /// `count` decisions spread over both replicas (each its own symbol, features varied so the two
        /// versions score differently), then for each the quotes that give it the label `label(record)`: mid
        /// 100 before the decision, 100·e^(50 bp) (eligible) or 100 within the horizon, and one quote past
        /// it so the horizon resolves. Returns the audited records.
        func decide(_ count: Int = QualityRolloutTests.decisions, label: (AuditRecord) -> Bool) async throws
            -> [AuditRecord]
        {
            let tag = String(UInt32.random(in: 0...UInt32.max), radix: 36).uppercased()
            for i in 0..<count {
                let x = Double(i) / Double(count)
                _ = try await score(
                    gatewayPorts[i % 2], symbol: "Q\(tag)-\(i)",
                    features: [
                        4 * x - 2, 1 - 2 * x, 0.5 - x, 20 * x - 10, 1 + 10 * x, 30 * x - 15, 2 + 40 * x, 3 * x - 1.5
                    ])
            }
            let records = try await redis.xrange(StreamKey.audit).compactMap {
                try? StreamFieldDecoder.decode(AuditRecord.self, from: $0.fields)
            }.filter { $0.symbol.hasPrefix("Q\(tag)-") }
            #expect(records.count == count)
            var ticks: [RedisCommand] = []
            let h = QualityRolloutTests.horizonMs * 1_000_000
            for r in records {
                let moved = label(r) ? 100 * exp(0.005) : 100
                for (t, mid) in [(r.tsNs - 1_000_000, 100.0), (r.tsNs + h / 2, moved), (r.tsNs + h + 1_000_000, moved)]
                {
                    let tick = Tick.quote(
                        symbol: r.symbol, tsNs: t, bid: mid - 0.005, bidSize: 1, ask: mid + 0.005, askSize: 1)
                    ticks.append(.xadd(StreamKey.ticks, maxLen: nil, fields: try StreamFieldEncoder.encode(tick)))
                }
            }
            _ = try await redis.pipeline(ticks)
            return records
        }

        /// Shadow mode: `decide`, labelled by `label(primary score, canary score)` of each decision.
        func decideAndLabel(_ label: @escaping (Double, Double) -> Bool) async throws -> [(Double, Double)] {
            let records = try await decide { r in label(r.score ?? .nan, r.canary?.score ?? .nan) }
            return records.compactMap { r in
                guard let p = r.score, let c = r.canary?.score, r.canary?.mode == "shadow", r.modelVersion == "1" else {
                    Issue.record("decision without both scores: \(r)")
                    return nil
                }
                return (p, c)
            }
        }

        func state() async throws -> RolloutState {
            try await RolloutStore(redis: redis, model: "trade_eligibility").read()
        }

        func events() async throws -> [RolloutEvent] {
            guard try await redis.send("EXISTS", StreamKey.rollout).int == 1 else { return [] }
            return try await redis.xrange(StreamKey.rollout).map {
                try StreamFieldDecoder.decode(RolloutEvent.self, from: $0.fields)
            }
        }

        /// Both replicas serve `status` at `generation` (their /metrics).
        func replicasFollow(_ status: RolloutState.Status, generation: Int64) async -> Bool {
            await TestEnv.eventually(timeout: .seconds(10)) {
                for port in gatewayPorts {
                    guard await Self.metric(port, "te_rollout_generation") == Double(generation),
                        await Self.metric(port, "te_rollout_status{status=\"\(status.rawValue)\"}") == 1
                    else { return false }
                }
                return true
            }
        }
    }

    static func withRig(
        autoPromote: Bool, gateway overrides: [String: String] = [:], tracker: [String: String] = [:],
        _ body: (Rig, PostgresConnection) async throws -> Void
    ) async throws {
        try await PostgresTestServer.withDatabase { db, configuration in
            let url = try PostgresConfiguration.url(
                try PostgresTestServer.url(), database: try #require(configuration.database))
            let rig = try await Rig(postgresURL: url, autoPromote: autoPromote, gateway: overrides, tracker: tracker)
            do {
                try await rig.up()
                try await body(rig, db)
            } catch {
                Issue.record("\(error)\n\(rig.logs())")
            }
            await rig.stop()
        }
    }

    static func rolloutRows(_ db: PostgresConnection) async -> [PostgresRow] {
        (try? await db.query(
            "SELECT kind, metric, from_version, to_version, replica FROM rollout_events ORDER BY occurred_at"
        ).rows) ?? []
    }

    @Test("a canary worse on outcomes is rolled back once, both replicas follow, and te restores it")
    func worseCanaryIsRolledBackEverywhere() async throws {
        try await Self.withRig(autoPromote: false) { rig, db in
            let pairs = try await rig.decideAndLabel { primary, canary in primary > canary }
            try #require(pairs.filter { $0.0 != $0.1 }.count >= 30)
            let rolledBack = await TestEnv.eventually(timeout: .seconds(60)) {
                (try? await rig.state())?.status == .rolledBack
            }
            #expect(rolledBack, "\(rig.logs())")
            #expect(await rig.replicasFollow(.rolledBack, generation: 1), "\(rig.logs())")
            // Both replicas now answer without shadow scoring: their records carry no canary result.
            for (i, port) in rig.gatewayPorts.enumerated() {
                _ = try await rig.score(port, symbol: "AFTER-\(i)", features: [0.5, 0.3, 0.2, 1, 2, 0.1, 10, 0.05])
            }
            let after = try await rig.redis.xrange(StreamKey.audit).compactMap {
                try? StreamFieldDecoder.decode(AuditRecord.self, from: $0.fields)
            }.filter { $0.symbol.hasPrefix("AFTER-") }
            #expect(after.count == 2 && after.allSatisfy { $0.canary == nil && $0.modelVersion == "1" })
            // One event, from the tracker, on te:rollout and in rollout_events.
            let events = try await rig.events()
            #expect(events.count == 1)
            let event = try #require(events.first)
            #expect(event.kind == .rollback && event.metric == "brier")
            #expect(event.fromVersion == "2" && event.toVersion == "1")
            #expect((event.value ?? 0) > (event.limit ?? 1))
            #expect(try await rig.state().eventId == event.eventId)
            #expect(await TestEnv.eventually(timeout: .seconds(20)) { await Self.rolloutRows(db).count == 1 })
            #expect(await Self.rolloutRows(db).first?["kind"] == "rollback")

            // `te model rollout restore`: back to the configured versions, one restore event, replicas follow.
            let env = ["REDIS_URL": rig.server.url]
            let status = try await runTe(["model", "rollout", "status", "-o", "json"], environment: env)
            #expect(status.status == 0)
            let doc = jsonOutput(status.output) as? [String: Any]
            #expect(doc?["status"] as? String == "rolled_back" && doc?["generation"] as? Int == 1, "\(status.output)")
            let restore = try await runTe(["model", "rollout", "restore"], environment: env)
            #expect(restore.status == 0, "\(restore.output)")
            let restored = try await rig.state()
            #expect(restored.status == .configured && restored.generation == 2)
            #expect(await rig.replicasFollow(.configured, generation: 2), "\(rig.logs())")
            let help = try await runTe(["model", "rollout", "restore", "--help"])
            #expect(help.status == 0 && help.output.contains("USAGE: te model rollout restore"), "\(help.output)")
            let again = try await runTe(["model", "rollout", "restore"], environment: env)
            #expect(again.status == 0 && again.output.contains("nothing to restore"))
            #expect(try await rig.events().map(\.kind) == [.rollback, .restore])
            #expect(await TestEnv.eventually(timeout: .seconds(20)) { await Self.rolloutRows(db).count == 2 })
            // `te audit rollouts` reads them back, newest first.
            let listed = try await runTe(
                ["audit", "rollouts", "-o", "json"], environment: ["POSTGRES_URL": rig.postgresURL])
            #expect(listed.status == 0, "\(listed.output)")
            let rows = jsonOutput(listed.output) as? [[String: Any]]
            #expect(rows?.map { $0["kind"] as? String } == ["restore", "rollback"], "\(listed.output)")
            #expect(rows?.last?["metric"] as? String == "brier" && rows?.last?["from_version"] as? String == "2")
            let table = try await runTe(["audit", "rollouts"], environment: ["POSTGRES_URL": rig.postgresURL])
            #expect(
                table.status == 0 && table.output.contains("rollback") && table.output.contains("2 → 1"),
                "\(table.output)")

            // `te model --plot` on the outcomes the tracker wrote through audit-writer: a PNG of the
            // reliability diagram and score histogram (1200 × 500 px: figsize 12 × 5 at 100 dpi).
            #expect(
                await TestEnv.eventually(timeout: .seconds(20)) {
                    let rows =
                        (try? await db.query("SELECT count(*)::text AS n FROM outcomes WHERE eligible IS NOT NULL").rows)
                        ?? []
                    return (rows.first?["n"].flatMap { Int($0) } ?? 0) >= QualityRolloutTests.decisions
                })
            let png = FileManager.default.temporaryDirectory.appendingPathComponent("te-model-\(UUID().uuidString).png")
            let plot = try await runTe(["model", "--plot", png.path], environment: ["POSTGRES_URL": rig.postgresURL])
            #expect(plot.status == 0, "\(plot.output)")
            #expect(plot.output.contains("brier"), "the table is printed too: \(plot.output)")
            let bytes = try [UInt8](Data(contentsOf: png))
            #expect(bytes.prefix(8) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A], "PNG signature")
            #expect(Array(bytes[12..<16]) == Array("IHDR".utf8))
            func be32(_ at: Int) -> Int { bytes[at..<at + 4].reduce(0) { $0 << 8 | Int($1) } }
            #expect(be32(16) == 1200 && be32(20) == 500, "\(be32(16)) × \(be32(20))")
            #expect(bytes.count > 10_000 && Array(bytes.suffix(8).prefix(4)) == Array("IEND".utf8))
            if let keep = ProcessInfo.processInfo.environment["TE_KEEP_PLOT"] {
                try? FileManager.default.copyItem(atPath: png.path, toPath: keep)
            }
            try? FileManager.default.removeItem(at: png)
            let noPython = try await runTe(
                ["model", "--plot", png.path],
                environment: ["POSTGRES_URL": rig.postgresURL, "TE_PYTHON": "/nonexistent/python"])
            #expect(noPython.status == 1)
            #expect(
                noPython.output.hasPrefix("te: --plot needs a Python with matplotlib")
                    && noPython.output.split(separator: "\n").count == 1,
                "\(noPython.output)")
        }
    }

    @Test("a canary better on outcomes is promoted on every replica when CANARY_AUTO_PROMOTE=true")
    func betterCanaryIsPromoted() async throws {
        try await Self.withRig(autoPromote: true) { rig, db in
            _ = try await rig.decideAndLabel { primary, canary in canary > primary }
            let promoted = await TestEnv.eventually(timeout: .seconds(60)) {
                (try? await rig.state())?.status == .promoted
            }
            #expect(promoted, "\(rig.logs())")
            #expect(await rig.replicasFollow(.promoted, generation: 1), "\(rig.logs())")
            // The canary version answers as primary on both replicas.
            for port in rig.gatewayPorts {
                let answer = try await rig.score(
                    port, symbol: "PROMOTED", features: [0.5, 0.3, 0.2, 1, 2, 0.1, 10, 0.05])
                #expect((answer["model"] as? [String: Any])?["version"] as? String == "2", "\(answer)")
            }
            let events = try await rig.events()
            #expect(events.count == 1)
            #expect(events.first?.kind == .promotion && events.first?.metric == "brier")
            #expect(events.first?.fromVersion == "1" && events.first?.toVersion == "2")
            #expect((events.first?.value ?? 1) < (events.first?.limit ?? 0))
            #expect(await TestEnv.eventually(timeout: .seconds(20)) { await Self.rolloutRows(db).count == 1 })
        }
    }

    @Test("a better canary is not promoted with CANARY_AUTO_PROMOTE off: the verdict is reported, nothing changes")
    func betterCanaryStaysWithoutAutoPromote() async throws {
        try await Self.withRig(autoPromote: false) { rig, db in
            _ = try await rig.decideAndLabel { primary, canary in canary > primary }
            // The tracker reached its verdict and its rollout loop decided not to act on it.
            let judged = await TestEnv.eventually(timeout: .seconds(60)) {
                await Rig.metric(rig.trackerPort, "te_canary_verdict") == 1
                    && rig.tracker.output().contains("not acting")
            }
            #expect(judged, "\(rig.logs())")
            #expect(try await rig.state() == RolloutState())
            #expect(try await rig.events().isEmpty)
            for port in rig.gatewayPorts {
                let answer = try await rig.score(port, symbol: "KEPT", features: [0.5, 0.3, 0.2, 1, 2, 0.1, 10, 0.05])
                #expect((answer["model"] as? [String: Any])?["version"] as? String == "1", "\(answer)")
            }
            #expect(await Self.rolloutRows(db).isEmpty)
        }
    }

    @Test("a canary error-rate breach seen by one replica rolls back both, with one event")
    func breachOnOneReplicaIsFollowedByTheOther() async throws {
        // Version 9 is not in the model repository: every canary call fails on the real Triton.
        let canary = [
            "SHADOW_ENABLED": "false", "CANARY_ENABLED": "true", "CANARY_FRACTION": "1", "CANARY_VERSION": "9",
            "CANARY_MAX_ERROR_RATE": "0.05", "CANARY_MIN_SAMPLES": "5", "CANARY_WINDOW": "20"
        ]
        try await Self.withRig(autoPromote: false, gateway: canary) { rig, db in
            // Only replica 0 gets traffic, so only it can see the breach.
            for _ in 0..<8 {
                let answer = try await rig.score(
                    rig.gatewayPorts[0], symbol: "BREACH", features: [0.5, 0.3, 0.2, 1, 2, 0.1, 10, 0.05])
                #expect((answer["model"] as? [String: Any])?["version"] as? String == "1", "\(answer)")
            }
            #expect(await rig.replicasFollow(.rolledBack, generation: 1), "\(rig.logs())")
            // Replica 1 never called version 9: it answers with version 1 directly, no failed canary leg.
            let answer = try await rig.score(
                rig.gatewayPorts[1], symbol: "FOLLOWER", features: [0.5, 0.3, 0.2, 1, 2, 0.1, 10, 0.05])
            #expect(
                (answer["model"] as? [String: Any])?["version"] as? String == "1"
                    && (answer["reason"] ?? NSNull()) is NSNull, "\(answer)")
            let events = try await rig.events()
            #expect(events.count == 1)
            #expect(events.first?.kind == .rollback && events.first?.metric == "error_rate")
            #expect(events.first?.fromVersion == "9" && events.first?.toVersion == "1" && events.first?.limit == 0.05)
            #expect(await Rig.metric(rig.gatewayPorts[0], "te_rollout_transitions_total{kind=\"rollback\"}") == 1)
            #expect(await Rig.metric(rig.gatewayPorts[1], "te_rollout_transitions_total{kind=\"rollback\"}") == 0)
            for port in rig.gatewayPorts { #expect(await Rig.metric(port, "canary_rollbacks_total") == 1) }
            #expect(await TestEnv.eventually(timeout: .seconds(20)) { await Self.rolloutRows(db).count == 1 })
        }
    }

    @Test("canary mode: a canary worse than the primary on the same span of outcomes is rolled back")
    func worseCanaryInCanaryModeIsRolledBack() async throws {
        // Half the requests (by request id) are answered by version 2; no shadow scores: the tracker
        // compares the canary's outcomes with the primary's over the same span.
        let canary = ["SHADOW_ENABLED": "false", "CANARY_ENABLED": "true", "CANARY_FRACTION": "0.5"]
        try await Self.withRig(autoPromote: false, gateway: canary, tracker: ["CANARY_QUALITY_MIN_OUTCOMES": "15"]) {
            rig, db in
            // Each answer labelled against its own score: the primary's always right (eligible iff it said
            // trade), the canary's always wrong, so every canary outcome costs at least 0.25 in Brier.
            let records = try await rig.decide(60) { r in
                let traded = (r.score ?? 0) >= 0.5
                return r.modelVersion == "2" ? !traded : traded
            }
            let answeredBy = Dictionary(grouping: records, by: { $0.modelVersion ?? "-" }).mapValues(\.count)
            try #require((answeredBy["1"] ?? 0) >= 15 && (answeredBy["2"] ?? 0) >= 15, "\(answeredBy)")
            #expect(records.allSatisfy { $0.modelVersion != "2" || $0.canary?.mode == "canary" })
            let rolledBack = await TestEnv.eventually(timeout: .seconds(60)) {
                (try? await rig.state())?.status == .rolledBack
            }
            #expect(rolledBack, "\(rig.logs())")
            #expect(await rig.replicasFollow(.rolledBack, generation: 1), "\(rig.logs())")
            let events = try await rig.events()
            #expect(events.count == 1 && events.first?.metric == "brier" && events.first?.fromVersion == "2")
            #expect((events.first?.value ?? 0) >= 0.25 && (events.first?.limit ?? 1) < 0.25)
            // Both replicas answer with the primary only now.
            for port in rig.gatewayPorts {
                for i in 0..<6 {
                    let answer = try await rig.score(
                        port, symbol: "AFTER-\(i)", features: [0.5, 0.3, 0.2, 1, 2, 0.1, 10, 0.05])
                    #expect((answer["model"] as? [String: Any])?["version"] as? String == "1", "\(answer)")
                }
            }
            #expect(await TestEnv.eventually(timeout: .seconds(20)) { await Self.rolloutRows(db).count == 1 })
        }
    }
}
