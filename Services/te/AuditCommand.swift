import ArgumentParser
import AuditStorage
import Foundation
import Logging
import TECore
import TEPostgres

/// `te audit`: what the gateway decided, from PostgreSQL `decisions` (POSTGRES_URL).
struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit", abstract: "Gateway decisions stored in PostgreSQL (POSTGRES_URL).",
        subcommands: [Recent.self, Counts.self, Verify.self, Rollouts.self])

    struct Recent: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The most recent decisions for a symbol.")

        @Option(help: "Symbol, e.g. BTCUSDT.") var symbol: String
        @Option(name: .short, help: "How many decisions.") var n: Int = 20
        @OptionGroup var format: OutputOptions

        func run() async throws {
            guard n > 0 else { throw ValidationError("-n must be positive") }
            let store = try AuditCommand.store()
            let decisions = try await store.recent(symbol: symbol, limit: n)
            await store.connection.close()
            if format.json {
                // Each decision as its AuditRecord (DESIGN field names) plus the row's decided_at.
                let encoder = JSONEncoder()
                try format.printJSON(
                    decisions.map { d -> Any in
                        var object =
                            (try? JSONSerialization.jsonObject(with: encoder.encode(d.record))) as? [String: Any] ?? [:]
                        object["decided_at"] = d.decidedAt
                        return object
                    })
                return
            }
            if decisions.isEmpty {
                print("no decisions for \(symbol)")
                return
            }
            let rows = decisions.map { d -> [String] in
                let r = d.record
                let model = [r.modelName, r.modelVersion].compactMap { $0 }.joined(separator: ":")
                let canary = r.canary.map { "v\($0.version)=\($0.score.map { AuditCommand.number($0) } ?? "-")" }
                return [
                    d.decidedAt, r.decisionId, r.requestId, r.decision.rawValue,
                    r.score.map { AuditCommand.number($0) } ?? "-",
                    r.source.rawValue, model.isEmpty ? "-" : model, String(r.latencyUs),
                    r.featureAgeMs.map { AuditCommand.number($0) } ?? "-", canary ?? "-", r.reason ?? ""
                ]
            }
            print(
                TextTable.render(
                    header: [
                        "decided_at", "decision_id", "request_id", "decision", "score", "source", "model", "latency_us",
                        "feature_age_ms", "canary", "reason"
                    ],
                    rows: rows))
        }
    }

    struct Counts: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Decisions counted by source, decision and model version over a time range.")

        @Option(help: "Start: a duration back from now (30s, 15m, 1h, 7d) or a timestamp (2024-08-09 12:00:00+00).")
        var since: String = "1h"
        @Option(help: "End (exclusive), same forms as --since. Default: now.")
        var until: String?
        @OptionGroup var format: OutputOptions

        func run() async throws {
            let since = try AuditCommand.timestamp(self.since, option: "--since")
            let until = try self.until.map { try AuditCommand.timestamp($0, option: "--until") }
            let store = try AuditCommand.store()
            let counts = try await store.counts(since: since, until: until)
            await store.connection.close()
            let total = counts.reduce(0) { $0 + $1.count }
            if format.json {
                try format.printJSON([
                    "since": since, "until": until as Any? ?? NSNull(), "total": total,
                    "counts": counts.map { c -> [String: Any] in
                        [
                            "source": c.source, "decision": c.decision,
                            "model_version": c.modelVersion as Any? ?? NSNull(), "count": c.count
                        ]
                    }
                ])
                return
            }
            print("decisions from \(since) to \(until ?? "now"): \(total)")
            guard !counts.isEmpty else { return }
            print(
                TextTable.render(
                    header: ["source", "decision", "model_version", "count", "share"],
                    rows: counts.map {
                        [
                            $0.source, $0.decision, $0.modelVersion ?? "-", String($0.count),
                            String(format: "%.1f%%", 100 * Double($0.count) / Double(total))
                        ]
                    },
                    rightAligned: [3, 4]))
        }
    }

    /// `te audit verify`: re-scores the model's decisions of a period (AuditRescore.swift), or with `--chain`
    /// walks each writer's hash chain (AuditChainVerify.swift).
    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Verify stored decisions: re-score them on Triton, or (--chain) check each writer's hash chain.",
            discussion: """
                Default: every decision with source = model and since <= decided_at < until: its recorded FP32 \
                features are sent to its recorded model version (batched), once the version Triton serves is known \
                to have the recorded artefact hash; exit 1 on any mismatch. --chain: each writer's rows in chain_seq \
                order, naming the first row that does not fit (exit 1).
                """)

        @Flag(help: "Check the hash chain (chain_seq, prev_hash, row_hash) of each writer instead of re-scoring.")
        var chain = false
        @Option(
            help:
                "Start: a duration back from now (30s, 15m, 1h, 7d) or a timestamp (2024-08-09 12:00:00+00). Default: 1h; with --chain the beginning."
        )
        var since: String?
        @Option(help: "End (exclusive), same forms as --since. Default: now.") var until: String?
        @Option(help: "--chain: only this writer's chain (its AUDIT_WRITER_ID).") var writer: String?
        @Option(help: "At most this many decisions (the oldest of the period).") var limit: Int?
        @Option(help: "Mismatches to list, the largest score differences first.") var top: Int = 10
        @Option(help: "Triton gRPC endpoint host:port. Default: $TRITON_URL.") var tritonUrl: String?
        @Option(help: "Per Triton call timeout in milliseconds.") var timeoutMs: Int = 5000
        @OptionGroup var format: OutputOptions

        func run() async throws {
            if chain { try await verifyChain() } else { try await rescore() }
        }

        private func verifyChain() async throws {
            let verify = AuditChainVerify(
                since: try since.map { try AuditCommand.timestamp($0, option: "--since") },
                until: try until.map { try AuditCommand.timestamp($0, option: "--until") }, writer: writer)
            let store = try AuditCommand.store()
            let report = try await verify.run(store.connection)
            await store.connection.close()
            if format.json { try format.printJSON(report.json) } else { print(report.text) }
            if report.broken != nil { throw ExitCode(1) }
        }

        private func rescore() async throws {
            if writer != nil { throw ValidationError("--writer goes with --chain") }
            if let limit, limit <= 0 { throw ValidationError("--limit must be positive") }
            if top < 0 { throw ValidationError("--top must be ≥ 0") }
            if timeoutMs <= 0 { throw ValidationError("--timeout-ms must be positive") }
            let since = try AuditCommand.timestamp(self.since ?? "1h", option: "--since")
            let until = try self.until.map { try AuditCommand.timestamp($0, option: "--until") }
            let store = try AuditCommand.store()
            let decisions = try await store.modelDecisions(since: since, until: until, limit: limit)
            await store.connection.close()
            var rescorer = try AuditRescore(url: tritonUrl, timeoutMs: timeoutMs)
            let report = await rescorer.verify(decisions.map(\.record))
            rescorer.close()
            try AuditRescore.print(report, since: since, until: until, top: top, format: format)
            if !report.mismatches.isEmpty { throw ExitCode(1) }
        }
    }

    static func store() throws -> AuditStore {
        guard let url = Env.optional("POSTGRES_URL") else {
            throw ValidationError("POSTGRES_URL is not set (postgres://user:pass@host:port/db)")
        }
        let configuration: PostgresConfiguration
        do {
            configuration = try PostgresConfiguration(url: url)
        } catch {
            throw ValidationError("POSTGRES_URL: \(error)")
        }
        var logger = Logger(label: "te-audit")
        logger.logLevel = .error
        return AuditStore(connection: PostgresConnection(configuration: configuration, logger: logger))
    }

    /// `30s`/`15m`/`1h`/`7d` back from now as an ISO-8601 UTC timestamp; anything else is passed to
    /// PostgreSQL as a timestamptz literal (it reports a malformed one).
    static func timestamp(_ text: String, option: String) throws -> String {
        if let back = Inspect.durationSeconds(text) {
            let date = Date().addingTimeInterval(-back)
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            return formatter.string(from: date)
        }
        guard !text.isEmpty else { throw ValidationError("\(option) is empty") }
        return text
    }

    static func number(_ value: Double) -> String {
        String(format: "%.4g", value)
    }
}

/// Plain aligned columns for a terminal.
enum TextTable {
    static func render(header: [String], rows: [[String]], rightAligned: Set<Int> = []) -> String {
        var widths = header.map(\.count)
        for row in rows {
            for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) }
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, cell in
                let pad = String(repeating: " ", count: max(0, widths[i] - cell.count))
                return rightAligned.contains(i) ? pad + cell : cell + pad
            }.joined(separator: "  ").trimmingCharacters(in: .whitespaces)
        }
        var out = [line(header), line(widths.map { String(repeating: "-", count: $0) })]
        out += rows.map(line)
        return out.joined(separator: "\n")
    }
}
