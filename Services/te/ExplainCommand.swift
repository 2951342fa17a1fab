import ArgumentParser
import AuditStorage
import FeatureEngine
import Foundation
import ServiceKit
import TEModels
import TEPostgres
import TERedis

/// `te explain DECISION_ID`: one decision's lineage, checked. The row from PostgreSQL `decisions`
/// (POSTGRES_URL), the `te:features` entry its features came from (REDIS_URL), the quotes and trades of that
/// snapshot's window from `te:ticks` (or a recording), the 8 features recomputed by the same `FeatureEngine`
/// and compared with the recorded FP32 vector bit for bit, the recorded features re-scored on Triton
/// (TRITON_URL) by the recorded model version, and the outcome once known.
struct ExplainCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "explain", abstract: "Explain a decision: its features' lineage recomputed, re-scored on Triton.",
        discussion: """
            The snapshot comes from te:features by the decision's feature_snapshot_id (te:features:{k} with \
            STREAM_SHARDS > 1); its window is rebuilt from te:ticks, scanning back from that entry, or from \
            --recording when given. Features match when the recomputed FP32 vector has the recorded bits. \
            Re-scoring needs the recorded model version to serve the recorded artefact hash: when it does not, \
            the command says so in one line and exits 1. Exit 1 too when the features or the score do not match.
            """)

    @Argument(help: "The decision_id (UUID) of the gateway's answer.") var decisionId: String
    @Option(
        parsing: .singleValue,
        help: "Rebuild the window from this recording instead of te:ticks (repeat for several, in order).")
    var recording: [String] = []
    @Option(
        name: .customLong("window-ms"),
        help: "W when the snapshot entry is gone (default: FEATURE_WINDOW_MS, else 5000).")
    var windowMs: Int?
    @Option(help: "Triton gRPC endpoint host:port. Default: $TRITON_URL.") var tritonUrl: String?
    @Option(help: "Per Triton call timeout in milliseconds.") var timeoutMs: Int = 2000
    @Option(help: "Ticks of the window to list in the table output (the newest); -o json lists all.") var ticks: Int =
        20
    @OptionGroup var format: OutputOptions

    func validate() throws {
        if let windowMs, windowMs <= 0 { throw ValidationError("--window-ms must be positive") }
        if ticks < 0 { throw ValidationError("--ticks must be ≥ 0") }
        if timeoutMs <= 0 { throw ValidationError("--timeout-ms must be positive") }
    }

    func run() async throws {
        let store = try AuditCommand.store()
        let found = try await store.decision(id: decisionId)
        guard let stored = found else {
            await store.connection.close()
            throw CLIError("no decision \(decisionId) in decisions")
        }
        let outcome = try await store.outcome(decisionId: decisionId)
        await store.connection.close()
        let record = stored.record

        let lineage = try await Lineage.resolve(record, recordings: recording, windowMs: windowMs)
        var rescore: Rescore?
        if record.source == .model {
            var rescorer = try AuditRescore(url: tritonUrl, timeoutMs: timeoutMs)
            defer { rescorer.close() }
            switch await rescorer.check(record) {
            case .failure(let reason): rescore = .refused(reason)
            case .success(let (model, version, row)):
                rescore = .scored(try await rescorer.scores(model: model, version: version, rows: [row])[0])
            }
        }
        let explanation = Explanation(stored: stored, lineage: lineage, rescore: rescore, outcome: outcome)
        if format.json {
            try format.printJSON(explanation.json())
        } else {
            print(explanation.text(ticks: ticks))
        }
        if case .refused(let reason) = rescore {
            fflush(nil)  // every stdio stream: the explanation first, then the one line saying why
            FileHandle.standardError.write(Data("te: refusing to re-score decision \(decisionId): \(reason)\n".utf8))
            throw ExitCode(1)
        }
        if explanation.featuresMatch == false || explanation.scoreMatches == false { throw ExitCode(1) }
    }

    enum Rescore {
        case scored(Float)
        case refused(AuditRescore.Unverifiable)
    }

    /// Where a tick of the window came from: its `te:ticks` entry and Kafka message, or a recording.
    struct Origin: Sendable {
        var entryId: String?
        var src: String?
    }

    /// Where the decision's features came from, and the window rebuilt around them.
    struct Lineage {
        enum Source: String {
            case featuresEntry = "te:features"
            case recomputedFromTicks = "recomputed from te:ticks"
            case recomputedFromRecording = "recomputed from recording"
            case requestFeatures = "request features"
            case none = "no features"
        }
        var source: Source
        var featuresStream: String?
        var ticksStream: String?
        /// The `te:features` entry as it is now, nil when gone (or never: request features).
        var snapshot: FeatureSnapshot?
        var windowMs: Int?
        /// Where the window's ticks were read: the ticks stream, or the recordings.
        var windowFrom: String?
        var window: SnapshotReplay<Origin>.Result?
        /// Why the window could not be rebuilt, or what makes it uncertain.
        var note: String?

        static func resolve(_ record: AuditRecord, recordings: [String], windowMs: Int?) async throws -> Lineage {
            guard let entryId = record.featureSnapshotId else {
                return Lineage(source: record.features == nil ? .none : .requestFeatures)
            }
            guard let t = record.featureTsNs else {
                throw CLIError("decision \(record.decisionId) names te:features entry \(entryId) but no feature_ts_ns")
            }
            let shards = try Env().streamShards()
            let featuresStream = StreamKey.features(for: record.symbol, shards: shards)
            let ticksStream = StreamKey.ticks(for: record.symbol, shards: shards)
            let redis = try Inspect.redis()
            defer { redis.close() }
            let entry = try await redis.xrange(featuresStream, start: entryId, end: entryId, count: 1).first
            let snapshot = try entry.map { try StreamFieldDecoder.decode(FeatureSnapshot.self, from: $0.fields) }
            let window = try snapshot?.windowMs ?? windowMs ?? FeaturesCommand.environmentWindowMs()
            var replay = SnapshotReplay<Origin>(symbol: record.symbol, tsNs: t, windowNs: Int64(window) * 1_000_000)
            var lineage = Lineage(
                source: snapshot != nil
                    ? .featuresEntry : recordings.isEmpty ? .recomputedFromTicks : .recomputedFromRecording,
                featuresStream: featuresStream, ticksStream: recordings.isEmpty ? ticksStream : nil, snapshot: snapshot,
                windowMs: window, windowFrom: recordings.isEmpty ? ticksStream : recordings.joined(separator: " "))
            if recordings.isEmpty {
                // Ticks reach te:ticks before the snapshot they make reaches te:features (same node: one shard's
                // streams share a slot), so the window lies at or before the snapshot's entry time. Ids of two
                // streams compare only by their milliseconds: within one millisecond each stream counts its own
                // sequence (a batch of ticks at ms-0…ms-49, its first snapshot at ms-1), so the scan starts at the
                // end of the snapshot's millisecond. Later ticks it meets are past t and skipped.
                var end =
                    StreamID(entryId).map { StreamID(milliseconds: $0.milliseconds, sequence: .max).description }
                    ?? entryId
                scan: while !replay.complete {
                    let page = try await redis.xrevrange(ticksStream, end: end, start: "-", count: 2000)
                    for e in page {
                        guard let tick = try? StreamFieldDecoder.decode(Tick.self, from: e.fields) else { continue }
                        replay.feedBackwards(
                            .init(tick: tick, origin: Origin(entryId: e.id, src: e.fields.first { $0.0 == "src" }?.1)))
                        if replay.complete { break scan }
                    }
                    guard page.count == 2000, let last = page.last else { break }
                    end = "(" + last.id
                }
            } else {
                var source = OfflineTicks()
                var history: [Tick] = []
                do {
                    for file in recordings {
                        try source.forEach(in: file) { tick in
                            guard tick.symbol == record.symbol else { return }
                            // A tick after t ends the part that made the snapshot (later ones at ≤ t were dropped).
                            if tick.tsNs > t { throw StopReading() }
                            history.append(tick)
                        }
                    }
                } catch is StopReading {}
                for tick in history.reversed() where !replay.complete {
                    replay.feedBackwards(.init(tick: tick, origin: Origin()))
                }
            }
            let rebuilt = replay.result(recorded: record.features)
            lineage.window = rebuilt
            var notes: [String] = []
            if rebuilt.snapshot == nil { notes.append("no quote of \(record.symbol) at ts_ns \(t) found") }
            if rebuilt.previousQuote == nil {
                notes.append(
                    "no quote of \(record.symbol) at or before t − W (its first quote is in the window, or the ticks before it are gone)"
                )
            }
            lineage.note = notes.isEmpty ? nil : notes.joined(separator: "; ")
            return lineage
        }

        struct StopReading: Error {}
    }

    /// Everything `te explain` shows, computed once for both outputs.
    struct Explanation {
        var stored: AuditStore.StoredDecision
        var lineage: Lineage
        var rescore: Rescore?
        var outcome: [(column: String, value: String?)]?

        var record: AuditRecord { stored.record }
        var recomputed: FeatureVector? { lineage.window?.snapshot?.features }

        /// Nil when there is nothing to compare (request features, or no window).
        var featuresMatch: Bool? {
            guard let recorded = record.features, let recomputed else { return nil }
            return FeatureBits.equal(recorded, recomputed)
        }

        /// Whether the `te:features` entry still there holds the features the record says the model got.
        var entryMatchesRecord: Bool? {
            guard let snapshot = lineage.snapshot, let recorded = record.features else { return nil }
            return FeatureBits.equal(snapshot.features, recorded)
        }

        var rescored: Float? { if case .scored(let s) = rescore { s } else { nil } }

        var scoreMatches: Bool? {
            guard let rescored, let score = record.score else { return nil }
            return Float(score).bitPattern == rescored.bitPattern
        }

        /// The gateway's budget, `SCORE_TIMEOUT_MS` (its default 20).
        var budgetMs: Double { Double(Env.optional("SCORE_TIMEOUT_MS") ?? "") ?? 20 }

        func featureRows() -> [[String: Any]] {
            let recorded = record.features.map(FeatureBits.fp32)
            let again = recomputed.map(FeatureBits.fp32)
            return FeatureVector.names.indices.map { i in
                var row: [String: Any] = ["name": FeatureVector.names[i]]
                if let recorded {
                    row["recorded"] = Double(recorded[i])
                    row["recorded_fp32_bits"] = Self.hex(recorded[i])
                }
                if let again {
                    row["recomputed"] = Double(again[i])
                    row["recomputed_fp32_bits"] = Self.hex(again[i])
                }
                if let recorded, let again { row["match"] = recorded[i].bitPattern == again[i].bitPattern }
                return row
            }
        }

        static func orNull(_ value: Any?) -> Any { value ?? NSNull() }

        static func hex(_ value: Float) -> String { String(format: "0x%08x", value.bitPattern) }

        static func tickJSON(_ entry: SnapshotReplay<Origin>.Entry) -> [String: Any] {
            var object =
                (try? JSONSerialization.jsonObject(with: JSONEncoder().encode(entry.tick))) as? [String: Any] ?? [:]
            if let id = entry.origin.entryId { object["entry_id"] = id }
            if let src = entry.origin.src { object["src"] = src }
            return object
        }

        func json() throws -> [String: Any] {
            var decision =
                (try JSONSerialization.jsonObject(with: JSONEncoder().encode(record))) as? [String: Any] ?? [:]
            decision["decided_at"] = stored.decidedAt
            var lineageObject: [String: Any] = ["source": lineage.source.rawValue]
            lineageObject["feature_snapshot_id"] = Self.orNull(record.featureSnapshotId)
            lineageObject["features_stream"] = Self.orNull(lineage.featuresStream)
            lineageObject["ticks_stream"] = Self.orNull(lineage.ticksStream)
            lineageObject["window_ms"] = Self.orNull(lineage.windowMs)
            lineageObject["window_from"] = Self.orNull(lineage.windowFrom)
            lineageObject["entry_matches_record"] = Self.orNull(entryMatchesRecord)
            lineageObject["note"] = Self.orNull(lineage.note)
            lineageObject["snapshot"] = Self.orNull(
                try lineage.snapshot.map { try JSONSerialization.jsonObject(with: JSONEncoder().encode($0)) })
            var object: [String: Any] = [
                "decision": decision, "lineage": lineageObject, "features": featureRows(),
                "features_match": Self.orNull(featuresMatch), "source": record.source.rawValue,
                "latency_us": record.latencyUs, "budget_ms": budgetMs,
                "budget_used": Double(record.latencyUs) / (budgetMs * 1000),
                "feature_age_ms": Self.orNull(record.featureAgeMs), "reason": Self.orNull(record.reason),
                "canary": Self.orNull(
                    record.canary.map {
                        ["version": $0.version, "score": Self.orNull($0.score), "mode": Self.orNull($0.mode)]
                            as [String: Any]
                    })
            ]
            if let window = lineage.window {
                let t = record.featureTsNs ?? 0
                object["window"] =
                    [
                        "from_ns_exclusive": t - Int64(lineage.windowMs ?? 0) * 1_000_000, "to_ns": t,
                        "previous_quote": Self.orNull(window.previousQuote.map(Self.tickJSON)),
                        "quotes": window.quotes.map(Self.tickJSON), "trades": window.trades.map(Self.tickJSON),
                        "quotes_at_t": window.quotesAtT,
                        "snapshot": Self.orNull(
                            try window.snapshot.map { try JSONSerialization.jsonObject(with: JSONEncoder().encode($0)) }
                        )
                    ] as [String: Any]
            } else {
                object["window"] = NSNull()
            }
            switch rescore {
            case nil:
                object["rescore"] = NSNull()
            case .refused(let reason):
                object["rescore"] = ["refused": reason.description, "reason": reason.code]
            case .scored(let score):
                object["rescore"] =
                    [
                        "model_name": record.modelName ?? "", "model_version": record.modelVersion ?? "",
                        "model_hash": record.modelHash ?? "", "score": Double(score),
                        "recorded_score": Self.orNull(record.score), "match": scoreMatches ?? false,
                        "abs_diff": Self.orNull(record.score.map { abs(Double(score) - $0) })
                    ] as [String: Any]
            }
            if let outcome {
                object["outcome"] = Dictionary(
                    uniqueKeysWithValues: outcome.map { ($0.column, Self.outcomeValue($0.column, $0.value)) })
            } else {
                object["outcome"] = NSNull()
            }
            return object
        }

        func text(ticks limit: Int) -> String {
            func number(_ v: Double?) -> String { v.map { AuditCommand.number($0) } ?? "-" }
            let r = record
            var out: [String] = []
            let model = [r.modelName, r.modelVersion].compactMap { $0 }.joined(separator: ":")
            out.append(
                Inspect.bold("decision \(r.decisionId)")
                    + "  \(r.symbol)  \(r.decision.rawValue)  score \(number(r.score))  source \(r.source.rawValue)")
            out.append(
                "decided     \(stored.decidedAt)  request_id \(r.requestId)\(r.client.map { "  client \($0)" } ?? "")")
            out.append("model       \(model.isEmpty ? "-" : model)  hash \(r.modelHash ?? "-")")
            let share = String(format: "%.1f%%", Double(r.latencyUs) / (budgetMs * 10))
            out.append("latency     \(r.latencyUs) µs of the \(AuditCommand.number(budgetMs)) ms budget (\(share))")
            out.append(
                "feature age \(number(r.featureAgeMs)) ms   canary \(r.canary.map { "v\($0.version) \($0.mode ?? "") \(number($0.score))" } ?? "-")   reason \(r.reason ?? "-")"
            )
            var lineageLine = "lineage     \(lineage.source.rawValue)"
            if let id = r.featureSnapshotId {
                lineageLine +=
                    "  entry \(id) of \(lineage.featuresStream ?? "te:features")  ts_ns \(r.featureTsNs.map(String.init) ?? "-")  W \(lineage.windowMs.map(String.init) ?? "-") ms"
                if lineage.snapshot == nil { lineageLine += Inspect.warn("  (entry gone)") }
            }
            out.append(lineageLine)
            if entryMatchesRecord == false {
                out.append("            " + Inspect.warn("the entry's features are not the recorded ones"))
            }
            if let note = lineage.note { out.append("            " + Inspect.warn(note)) }
            if let window = lineage.window {
                out.append(
                    "window      from \(lineage.windowFrom ?? "-"): \(window.quotes.count) quotes, \(window.trades.count) trades in (t−W, t]; previous quote \(window.previousQuote.map { Self.tickLine($0) } ?? "none")"
                )
            }
            if r.features != nil {
                // FP32 values in their shortest round-trip form (what the model got), beside their bits.
                func fp32(_ value: Any?) -> String { (value as? Double).map { "\(Float($0))" } ?? "-" }
                let rows = featureRows().map { row -> [String] in
                    let match = (row["match"] as? Bool).map { $0 ? "=" : Inspect.warn("≠") } ?? ""
                    return [
                        row["name"] as! String, fp32(row["recorded"]), (row["recorded_fp32_bits"] as? String) ?? "-",
                        fp32(row["recomputed"]), (row["recomputed_fp32_bits"] as? String) ?? "-", match
                    ]
                }
                out.append("")
                out.append(Inspect.table(["feature", "recorded", "fp32", "recomputed", "fp32", ""], rows))
                switch featuresMatch {
                case true?: out.append("features match bit-for-bit (FP32, as sent to the model)")
                case false?: out.append(Inspect.warn("features DIFFER from the recomputation"))
                case nil:
                    out.append(
                        "features not recomputed (\(lineage.source == .requestFeatures ? "they came in the request" : "no window"))"
                    )
                }
            }
            out.append("")
            switch rescore {
            case nil: out.append("re-score    not applicable (source \(r.source.rawValue))")
            case .refused(let reason): out.append(Inspect.warn("re-score    refused: \(reason)"))
            case .scored(let score):
                let verdict =
                    scoreMatches == true
                    ? "equal" : Inspect.warn("DIFFERENT (|Δ| \(number(r.score.map { abs(Double(score) - $0) })))")
                out.append(
                    "re-score    \(score) vs recorded \(r.score.map { "\(Float($0))" } ?? "-") on \(model): \(verdict)")
            }
            if let outcome {
                out.append("outcome     " + outcome.map { "\($0.column)=\($0.value ?? "null")" }.joined(separator: " "))
            } else {
                out.append("outcome     not known yet")
            }
            if let window = lineage.window, limit > 0 {
                let entries = (window.quotes + window.trades).sorted { $0.tick.tsNs < $1.tick.tsNs }.suffix(limit)
                out.append("")
                out.append("window ticks (newest \(entries.count) of \(window.quotes.count + window.trades.count)):")
                out.append(
                    Inspect.table(
                        ["ts_ns", "kind", "bid", "bid_size", "ask", "ask_size", "price", "size", "entry", "src"],
                        entries.map { e in
                            let t = e.tick
                            func exact(_ v: Double?) -> String { v.map { "\($0)" } ?? "-" }  // prices need every digit
                            return [
                                String(t.tsNs), t.kind.rawValue, exact(t.bid), exact(t.bidSize), exact(t.ask),
                                exact(t.askSize),
                                exact(t.price), exact(t.size), e.origin.entryId ?? "-", e.origin.src ?? "-"
                            ]
                        }))
            }
            return out.joined(separator: "\n")
        }

        /// An `outcomes` column as JSON: its boolean, integers and doubles typed, `reason` as text.
        static func outcomeValue(_ column: String, _ text: String?) -> Any {
            guard let text else { return NSNull() }
            switch column {
            case "eligible": return text == "t"
            case "horizon_ms", "resolved_ts_ns": return Int64(text) ?? text
            case "reason": return text
            default: return Double(text) ?? text
            }
        }

        static func tickLine(_ e: SnapshotReplay<Origin>.Entry) -> String {
            let t = e.tick
            return "ts_ns \(t.tsNs) bid \(t.bid.map { "\($0)" } ?? "-") ask \(t.ask.map { "\($0)" } ?? "-")"
                + (e.origin.src.map { " src \($0)" } ?? "")
        }
    }
}
