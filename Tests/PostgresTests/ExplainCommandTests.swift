import AuditStorage
import Foundation
import TEModels
import TEPostgres
import TERedis
import TestSupport
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// `te explain` and `te audit verify` on decisions the real gateway made while a recording flowed through the
/// real ingest and feature-pipeline (private Redis, own topic, own database; the shared Triton, never reloaded).
@Suite("te explain and te audit verify on a replay", .serialized, .timeLimit(.minutes(10)))
struct ExplainCommandTests {
    static let recording = RecordedData.path("binance/usdm_btcusdt_20240718.gz")
    static let symbol = "BTCUSDT-PERP"

    static func score(port: Int, _ body: String) async throws -> [String: Any] {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)/v1/score")!)
        request.httpMethod = "POST"
        request.timeoutInterval = 5
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        request.httpBody = Data(body.utf8)
        let (data, response) = try await URLSession.shared.data(for: request)
        guard (response as? HTTPURLResponse)?.statusCode == 200 else { return [:] }
        return (try? JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:]
    }

    struct Run {
        var pipeline: LivePipeline
        var environment: [String: String]
        /// decision_id → source of every decision answered on the gateway's own features.
        var answered: [String: String]
        var requestFeaturesDecision: String
    }

    @Test(
        "explain: features match bit for bit, the re-score equals the record, a changed hash is refused, a trimmed snapshot is recomputed; verify finds a planted mismatch and unverifiable rows"
    )
    func explainAndVerify() async throws {
        guard let triton = ProcessInfo.processInfo.environment["TRITON_URL"], !triton.isEmpty else {
            throw TestSetupError("TRITON_URL is not set: source .dev/env")
        }
        try await PostgresTestServer.withDatabase { db, configuration in
            let database = try #require(configuration.database)
            let ownerURL = try PostgresConfiguration.url(try PostgresTestServer.url(), database: database)
            let readerURL = try PostgresConfiguration.url(try StoreUsers.readerPostgresURL(), database: database)
            let pipeline = try await LivePipeline("explain")
            defer { Task { await pipeline.close() } }
            let port = try TestEnv.freePort()
            let services = [
                try await pipeline.startIngest(),
                try pipeline.start("feature-pipeline"),
                try pipeline.start(
                    "gateway",
                    [
                        "TRITON_URL": triton, "HTTP_PORT": String(port), "SCORE_TIMEOUT_MS": "1000",
                        "LOG_LEVEL": "warning"
                    ]),
                try pipeline.start("audit-writer", ["POSTGRES_URL": ownerURL, "AUDIT_BATCH_SIZE": "50"]),
                // Outcomes: a decision after the recording's end never sees its horizon; written unlabelled after 10 s.
                try pipeline.start(
                    "outcome-tracker",
                    [
                        "OUTCOME_HORIZON_MS": "5000", "OUTCOME_SWEEP_MS": "100", "OUTCOME_MAX_HOLD_MS": "10000",
                        "CONSUMER_NAME": "outcome-tracker-explain"
                    ])
            ]
            defer { for s in services { s.terminate() } }
            func logs() -> String {
                services.map { "\($0.name):\n\($0.output().suffix(1500))" }.joined(separator: "\n")
            }
            let features = "[0.5,0.3,0.2,1,2,0.1,10,0.05]"
            let up = await TestEnv.eventually(timeout: .seconds(30)) {
                (try? await Self.score(port: port, #"{"symbol":"WARMUP","features":\#(features)}"#))?["source"]
                    as? String == "model"
            }
            #expect(up, "\(logs())")

            // Decisions on the gateway's own features while the recording flows, and once it has been read.
            // Paced (the recording's 178 s in about 6 s), so that the answers below use many different snapshots.
            let replay = Task {
                let te = try ChildProcess.built(
                    "te", arguments: ["replay", "--topic", pipeline.topic, "--speed", "30", "--quiet", Self.recording],
                    environment: try pipeline.environment())
                let status = try await te.waitForExit(timeout: .seconds(120))
                guard status == 0 else { throw TestSetupError("te replay failed (\(status)): \(te.output())") }
            }
            var answered: [String: String] = [:]
            let body = #"{"symbol":"\#(Self.symbol)","freshness_ms":600000}"#
            while !replay.isCancelled {
                let answer = try await Self.score(port: port, body)
                if let id = answer["decision_id"] as? String, let source = answer["source"] as? String {
                    answered[id] = source
                }
                if answered.count >= 60 { break }
                try await Task.sleep(for: .milliseconds(40))
            }
            try await replay.value
            let drained = try await TestEnv.eventually(timeout: .seconds(180), every: .milliseconds(250)) {
                try await pipeline.drained(StreamKey.ticks, group: "feature-pipeline")
            }
            #expect(drained, "\(logs())")
            try await Task.sleep(for: .milliseconds(500))  // the gateway's feed reads the last snapshot
            for _ in 0..<5 {
                let answer = try await Self.score(port: port, body)
                if let id = answer["decision_id"] as? String, let source = answer["source"] as? String {
                    answered[id] = source
                }
            }
            let fromRequest = try await Self.score(port: port, #"{"symbol":"\#(Self.symbol)","features":\#(features)}"#)
            let requestDecision = try #require(fromRequest["decision_id"] as? String)
            let modelIDs = answered.filter { $0.value == "model" }.map(\.key)
            #expect(modelIDs.count >= 10, "\(answered.count) answers: \(answered.values)")

            let store = AuditStore(connection: db)
            let expectedIDs = Set(answered.keys).union([requestDecision])
            var records: [String: AuditRecord] = [:]
            let stored = await TestEnv.eventually(timeout: .seconds(60), every: .milliseconds(200)) {
                records = Dictionary(uniqueKeysWithValues: ((try? await store.all()) ?? []).map { ($0.decisionId, $0) })
                return expectedIDs.isSubset(of: records.keys)
            }
            #expect(stored, "\(logs())")
            let environment = [
                "REDIS_URL": pipeline.redisURL, "POSTGRES_URL": readerURL, "TRITON_URL": triton,
                "SCORE_TIMEOUT_MS": "1000"
            ]

            // Lineage in the record: the gateway's feature_snapshot_id names the real te:features entry.
            // Up to 4 decisions on different snapshots.
            var bySnapshot: [String: String] = [:]
            for id in modelIDs.sorted() where records[id]?.modelHash != "unknown" {
                if let entry = records[id]?.featureSnapshotId, bySnapshot[entry] == nil { bySnapshot[entry] = id }
            }
            let sample = bySnapshot.values.sorted().prefix(4)
            #expect(sample.count >= 2, "model decisions on \(bySnapshot.count) snapshots")
            for id in sample {
                let record = try #require(records[id])
                let entryID = try #require(record.featureSnapshotId, "\(id) has no feature_snapshot_id")
                let entry = try #require(
                    try await pipeline.redis.xrange(StreamKey.features, start: entryID, end: entryID).first)
                let snapshot = try StreamFieldDecoder.decode(FeatureSnapshot.self, from: entry.fields)
                #expect(snapshot.symbol == Self.symbol)
                #expect(record.featureTsNs == snapshot.tsNs)
                #expect(record.features == snapshot.features)

                let result = try await runTe(["explain", id, "-o", "json"], environment: environment)
                #expect(result.status == 0, "\(result.output)")
                let json = try #require(jsonOutput(result.output) as? [String: Any], "\(result.output)")
                let lineage = try #require(json["lineage"] as? [String: Any])
                #expect(lineage["source"] as? String == "te:features")
                #expect(lineage["feature_snapshot_id"] as? String == entryID)
                #expect(lineage["entry_matches_record"] as? Bool == true)
                #expect(lineage["window_from"] as? String == StreamKey.ticks)
                #expect(json["features_match"] as? Bool == true, "\(result.output.prefix(4000))")
                let rows = try #require(json["features"] as? [[String: Any]])
                #expect(
                    rows.count == 8
                        && rows.allSatisfy {
                            $0["match"] as? Bool == true
                                && $0["recorded_fp32_bits"] as? String == $0["recomputed_fp32_bits"] as? String
                        })
                let rescore = try #require(json["rescore"] as? [String: Any], "\(result.output.prefix(3000))")
                #expect(rescore["match"] as? Bool == true)
                // As FP32, the model's output type (Foundation's JSON reader on Linux can miss a double's last bit).
                #expect((rescore["score"] as? Double).map(Float.init) == record.score.map(Float.init))
                // The window: as many quotes as the snapshot counted, each back to its Kafka message.
                let window = try #require(json["window"] as? [String: Any])
                let quotes = try #require(window["quotes"] as? [[String: Any]])
                #expect(quotes.count == snapshot.nQuotes)
                #expect((window["trades"] as? [[String: Any]])?.count == snapshot.nTrades)
                #expect((quotes.last?["ts_ns"] as? NSNumber)?.int64Value == snapshot.tsNs)
                #expect(
                    quotes.allSatisfy {
                        ($0["src"] as? String)?.split(separator: ":").compactMap { Int($0) }.count == 2
                    })
                // A quote before the window exists once the symbol has W of history (the snapshot is warm).
                #expect(
                    (window["previous_quote"] is [String: Any]) == snapshot.warm, "\(window["previous_quote"] ?? "-")")
                #expect(json["source"] as? String == "model")
                #expect(json["latency_us"] as? Int == Int(record.latencyUs))
            }
            let first = try #require(sample.first)
            let table = try await runTe(["explain", first], environment: environment)
            #expect(table.status == 0, "\(table.output)")
            #expect(table.output.contains("features match bit-for-bit"), "\(table.output)")
            #expect(table.output.contains(": equal"), "\(table.output)")
            #expect(table.output.contains("\noutcome     "), "\(table.output)")
            print("te explain \(first):\n\(table.output)")
            // Once the tracker's outcome is in `outcomes`, explain shows it.
            var outcomeRow: PostgresRow?
            let resolved = await TestEnv.eventually(timeout: .seconds(90), every: .milliseconds(250)) {
                outcomeRow = try? await db.query(
                    "SELECT eligible, return_bps, resolved_ts_ns, reason FROM outcomes WHERE decision_id = $1::uuid",
                    [first]
                ).rows.first
                return outcomeRow != nil
            }
            #expect(resolved, "\(logs())")
            let withOutcome = try await runTe(["explain", first, "-o", "json"], environment: environment)
            let outcome = try #require(
                (jsonOutput(withOutcome.output) as? [String: Any])?["outcome"] as? [String: Any],
                "\(withOutcome.output.suffix(600))")
            #expect(
                (outcome["resolved_ts_ns"] as? NSNumber)?.int64Value
                    == outcomeRow?["resolved_ts_ns"].flatMap { Int64($0) })
            #expect(outcome["eligible"] as? Bool == outcomeRow?["eligible"].map { $0 == "t" }, "\(outcome)")
            // te prints the stored double exactly; Foundation's JSON reader on Linux can miss its last bit.
            let expectedReturn = outcomeRow?["return_bps"].flatMap { Double($0) }
            let shownReturn = outcome["return_bps"] as? Double
            #expect(
                expectedReturn.map { e in shownReturn.map { abs($0 - e) <= 4 * e.ulp.magnitude } ?? false }
                    ?? (shownReturn == nil), "\(outcome)")
            #expect(outcome["reason"] as? String == outcomeRow?["reason"], "\(outcome)")
            print("outcome of \(first): \(outcome)")

            for unknown in [UUID().uuidString.lowercased(), "not-a-uuid"] {
                let missing = try await runTe(["explain", unknown], environment: environment)
                #expect(missing.status == 1)
                #expect(missing.output == "te: no decision \(unknown) in decisions\n", "\(missing.output)")
            }

            // Features that came in the request: re-scored, no window.
            let fromRequestRun = try await runTe(["explain", requestDecision, "-o", "json"], environment: environment)
            #expect(fromRequestRun.status == 0, "\(fromRequestRun.output)")
            let fromRequestJSON = try #require(
                jsonOutput(fromRequestRun.output) as? [String: Any], "\(fromRequestRun.output)")
            #expect((fromRequestJSON["lineage"] as? [String: Any])?["source"] as? String == "request features")
            #expect((fromRequestJSON["rescore"] as? [String: Any])?["match"] as? Bool == true)
            #expect(fromRequestJSON["features_match"] is NSNull)

            // The snapshot's te:features entry deleted (as trimming would): recomputed from te:ticks, and from
            // the recording, with the same bits.
            let trimmed = try #require(sample.last)
            let trimmedEntry = try #require(records[trimmed]?.featureSnapshotId)
            _ = try await pipeline.redis.send(RedisCommand(["XDEL", StreamKey.features, trimmedEntry]))
            for extra in [[], ["--recording", Self.recording]] {
                let result = try await runTe(["explain", trimmed, "-o", "json"] + extra, environment: environment)
                #expect(result.status == 0, "\(result.output)")
                let json = try #require(jsonOutput(result.output) as? [String: Any], "\(result.output)")
                let lineage = try #require(json["lineage"] as? [String: Any])
                #expect(
                    lineage["source"] as? String
                        == (extra.isEmpty ? "recomputed from te:ticks" : "recomputed from recording"))
                #expect(lineage["snapshot"] is NSNull)
                #expect(lineage["window_from"] as? String == (extra.isEmpty ? StreamKey.ticks : Self.recording))
                #expect(json["features_match"] as? Bool == true, "\(result.output.prefix(4000))")
                #expect((json["rescore"] as? [String: Any])?["match"] as? Bool == true)
            }

            // With STREAM_SHARDS = 3 the symbol's ticks and features live in its shard's streams (copied there with
            // their ids, as a sharded pipeline would have written them): explain reads te:features:{k}, te:ticks:{k}.
            let shards = 3
            let k = StreamKey.shard(of: Self.symbol, shards: shards)
            let shardTicks = StreamKey.sharded(StreamKey.ticks, shard: k, of: shards)
            let shardFeatures = StreamKey.sharded(StreamKey.features, shard: k, of: shards)
            #expect(shardTicks == "te:ticks:{\(k)}")
            // (Decisions made after the replay share its last snapshot: pick one whose entry was not deleted.)
            let shardedDecision = try #require(sample.first { records[$0]?.featureSnapshotId != trimmedEntry })
            let shardedEntry = try #require(records[shardedDecision]?.featureSnapshotId)
            var start = "-"
            while true {
                let page = try await pipeline.redis.xrange(StreamKey.ticks, start: start, end: "+", count: 2000)
                guard let last = page.last else { break }
                _ = try await pipeline.redis.pipeline(
                    page.map { .xadd(shardTicks, id: $0.id, maxLen: nil, fields: Array($0.fields)) })
                start = "(" + last.id
            }
            let featuresEntry = try #require(
                try await pipeline.redis.xrange(StreamKey.features, start: shardedEntry, end: shardedEntry).first)
            _ = try await pipeline.redis.xadd(shardFeatures, id: featuresEntry.id, fields: Array(featuresEntry.fields))
            var shardedEnvironment = environment
            shardedEnvironment["STREAM_SHARDS"] = String(shards)
            let sharded = try await runTe(["explain", shardedDecision, "-o", "json"], environment: shardedEnvironment)
            #expect(sharded.status == 0, "\(sharded.output)")
            let shardedJSON = try #require(jsonOutput(sharded.output) as? [String: Any], "\(sharded.output)")
            let shardedLineage = try #require(shardedJSON["lineage"] as? [String: Any])
            #expect(shardedLineage["features_stream"] as? String == shardFeatures)
            #expect(shardedLineage["ticks_stream"] as? String == shardTicks)
            #expect(shardedLineage["source"] as? String == "te:features")
            #expect(shardedJSON["features_match"] as? Bool == true)

            // Period verification before anything is planted: every model decision re-scores to its record.
            let period = ["--since", "1h", "-o", "json"]
            let clean = try await runTe(["audit", "verify"] + period, environment: environment)
            #expect(clean.status == 0, "\(clean.output)")
            let cleanReport = try #require(jsonOutput(clean.output) as? [String: Any], "\(clean.output)")
            let modelRows = records.values.filter { $0.source == .model }.count
            // Answers given before the gateway had read the model's hash record it as "unknown".
            let hashUnknown = records.values.filter { $0.source == .model && $0.modelHash == "unknown" }.map(
                \.decisionId
            ).sorted()
            #expect(cleanReport["decisions"] as? Int == modelRows)
            #expect(cleanReport["matched"] as? Int == modelRows - hashUnknown.count, "\(clean.output)")
            #expect(cleanReport["mismatched"] as? Int == 0)
            #expect(cleanReport["unverifiable"] as? Int == hashUnknown.count, "\(clean.output)")

            // A changed model hash: explain refuses to re-score, in one line, exit 1.
            let others = modelIDs.sorted().filter { !sample.contains($0) && !hashUnknown.contains($0) }
            let rehashed = try #require(others.first)
            let altered = try #require(others.dropFirst().first)
            _ = try await db.execute(
                "UPDATE decisions SET model_hash = 'sha256-of-other-weights' WHERE decision_id = $1::uuid", [rehashed])
            let refused = try await runTe(["explain", rehashed], environment: environment)
            #expect(refused.status == 1, "\(refused.output)")
            let lastLine = refused.output.split(separator: "\n").last.map(String.init) ?? ""
            #expect(
                lastLine.hasPrefix("te: refusing to re-score decision \(rehashed): model trade_eligibility version "),
                "\(refused.output)")
            #expect(lastLine.hasSuffix("the decision was made by sha256-of-other-weights"), "\(lastLine)")

            // Planted: one altered score (a mismatch), rows that cannot be verified (a version Triton does not
            // serve, no features).
            let original = try #require(records[altered]?.score)
            _ = try await db.execute(
                "UPDATE decisions SET score = $2::float8 WHERE decision_id = $1::uuid",
                [altered, String(original + 0.25)])
            var unserved = try #require(records[altered])
            unserved.decisionId = UUID().uuidString.lowercased()
            unserved.requestId = unserved.decisionId
            unserved.modelVersion = "99"
            var featureless = unserved
            featureless.decisionId = UUID().uuidString.lowercased()
            featureless.requestId = featureless.decisionId
            featureless.modelVersion = "1"
            featureless.features = nil
            _ = try await store.insert([unserved, featureless])
            // A row written straight into the table: no te:features entry, no outcome, nothing to re-score.
            let bare = try await runTe(["explain", featureless.decisionId], environment: environment)
            #expect(bare.status == 1, "\(bare.output)")
            #expect(bare.output.contains("\noutcome     not known yet\n"), "\(bare.output)")
            #expect(
                bare.output.hasSuffix(
                    "te: refusing to re-score decision \(featureless.decisionId): no features recorded\n"),
                "\(bare.output)")
            let planted = try await runTe(["audit", "verify"] + period, environment: environment)
            #expect(planted.status == 1, "\(planted.output)")
            let report = try #require(jsonOutput(planted.output) as? [String: Any], "\(planted.output)")
            #expect(report["decisions"] as? Int == modelRows + 2)
            #expect(report["mismatched"] as? Int == 1)
            #expect(report["matched"] as? Int == modelRows - 2 - hashUnknown.count)
            let mismatch = try #require((report["mismatches"] as? [[String: Any]])?.first)
            #expect(mismatch["decision_id"] as? String == altered)
            #expect(abs((mismatch["abs_diff"] as? Double ?? 0) - 0.25) < 1e-6, "\(mismatch)")
            let reasons = try #require(report["unverifiable_reasons"] as? [[String: Any]])
            func ids(_ code: String) -> [String] {
                reasons.first { $0["reason"] as? String == code }?["decision_ids"] as? [String] ?? []
            }
            #expect(ids("hash_changed") == [rehashed], "\(reasons)")
            #expect(ids("version_not_served") == [unserved.decisionId], "\(reasons)")
            #expect(ids("no_features") == [featureless.decisionId], "\(reasons)")
            #expect(ids("hash_not_recorded") == hashUnknown, "\(reasons)")
            #expect(report["unverifiable"] as? Int == 3 + hashUnknown.count)

            let limited = try await runTe(
                ["audit", "verify", "--since", "1h", "--limit", "5", "-o", "json"], environment: environment)
            #expect((jsonOutput(limited.output) as? [String: Any])?["decisions"] as? Int == 5, "\(limited.output)")

            let text = try await runTe(["audit", "verify", "--since", "1h"], environment: environment)
            #expect(text.status == 1)
            #expect(text.output.contains("mismatched 1"), "\(text.output)")
            #expect(text.output.contains(altered), "\(text.output)")
            print("te audit verify --since 1h:\n\(text.output)")
        }
    }
}
