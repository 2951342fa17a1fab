import ArgumentParser
import Foundation
import Logging
import TEPostgres

/// `te audit`: what the gateway decided, from PostgreSQL `decisions` (POSTGRES_URL).
struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit", abstract: "Gateway decisions stored in PostgreSQL (POSTGRES_URL).",
        subcommands: [Recent.self, Counts.self, Verify.self])

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
                try format.printJSON(decisions.map { d -> Any in
                    var object = (try? JSONSerialization.jsonObject(with: encoder.encode(d.record))) as? [String: Any] ?? [:]
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
                    d.decidedAt, r.decisionId, r.requestId, r.decision.rawValue, r.score.map { AuditCommand.number($0) } ?? "-",
                    r.source.rawValue, model.isEmpty ? "-" : model, String(r.latencyUs),
                    r.featureAgeMs.map { AuditCommand.number($0) } ?? "-", canary ?? "-", r.reason ?? "",
                ]
            }
            print(TextTable.render(
                header: ["decided_at", "decision_id", "request_id", "decision", "score", "source", "model", "latency_us", "feature_age_ms", "canary", "reason"],
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
                        ["source": c.source, "decision": c.decision, "model_version": c.modelVersion as Any? ?? NSNull(), "count": c.count]
                    },
                ])
                return
            }
            print("decisions from \(since) to \(until ?? "now"): \(total)")
            guard !counts.isEmpty else { return }
            print(TextTable.render(
                header: ["source", "decision", "model_version", "count", "share"],
                rows: counts.map {
                    [$0.source, $0.decision, $0.modelVersion ?? "-", String($0.count),
                     String(format: "%.1f%%", 100 * Double($0.count) / Double(total))]
                },
                rightAligned: [3, 4]))
        }
    }

    /// `te audit verify --chain`: the hash chain walk lives in AuditChainVerify.swift.
    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Verify stored decisions; --chain: each writer's hash chain, naming the first row that does not fit (exit 1).")

        @Flag(help: "Check the hash chain (chain_seq, prev_hash, row_hash) of each writer.") var chain = false
        @Option(help: "Start: a duration back from now (30s, 15m, 1h, 7d) or a timestamp. Default: the beginning.")
        var since: String?
        @Option(help: "End (exclusive), same forms as --since. Default: now.") var until: String?
        @Option(help: "Only this writer's chain (its AUDIT_WRITER_ID).") var writer: String?
        @OptionGroup var format: OutputOptions

        func run() async throws {
            guard chain else { throw CLIError("audit verify: a mode is required: --chain (each writer's hash chain)") }
            let verify = AuditChainVerify(
                since: try since.map { try AuditCommand.timestamp($0, option: "--since") },
                until: try until.map { try AuditCommand.timestamp($0, option: "--until") }, writer: writer)
            let store = try AuditCommand.store()
            let report = try await verify.run(store.connection)
            await store.connection.close()
            if format.json { try format.printJSON(report.json) } else { print(report.text) }
            if report.broken != nil { throw ExitCode(1) }
        }
    }

    static func store() throws -> AuditStore {
        guard let url = ProcessInfo.processInfo.environment["POSTGRES_URL"], !url.isEmpty else {
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
