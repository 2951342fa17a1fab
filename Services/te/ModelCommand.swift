import ArgumentParser
import FeatureEngine
import Foundation
import TEPostgres

/// `te model`: how good each model version's decisions were, from PostgreSQL `outcomes` — the same
/// `QualitySummary` the outcome-tracker exports live, over a period instead of a rolling window.
struct ModelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model",
        abstract: "Model quality per version from outcomes (POSTGRES_URL): base rate, precision, Brier, ECE.",
        discussion: """
            Only labelled outcomes count (eligible not null). Brier is compared with the constant that always \
            answers the period's base rate; a model with no edge does not beat it. The reliability table has 10 \
            equal-width score bins. The period is on the market clock of each outcome (resolved_ts_ns).
            """,
        subcommands: [RolloutCommand.self])

    @Option(help: "Start: a duration back from now (30s, 15m, 1h, 7d) or an ISO-8601 time. Default: everything.")
    var since: String?
    @Option(help: "End (exclusive), same forms as --since.") var until: String?
    @Option(help: "Only this model version.") var version: String?
    @Flag(help: "Print each version's reliability table.") var reliability = false
    @Option(
        help:
            "Also draw each version's reliability diagram and score histogram into this PNG (matplotlib: TE_PYTHON or .dev/venv-train)."
    )
    var plot: String?
    @OptionGroup var format: OutputOptions

    func run() async throws {
        let start = try since.map { try Self.nanoseconds($0, option: "--since") }
        let end = try until.map { try Self.nanoseconds($0, option: "--until") }
        let store = try AuditCommand.store()
        let result = try await store.connection.query(
            """
            SELECT coalesce(model_version, '-') AS version, score, decision, eligible FROM outcomes
            WHERE eligible IS NOT NULL
              AND ($1::bigint IS NULL OR resolved_ts_ns >= $1::bigint)
              AND ($2::bigint IS NULL OR resolved_ts_ns < $2::bigint)
              AND ($3::text IS NULL OR model_version = $3::text)
            """, [start.map(String.init), end.map(String.init), version])
        await store.connection.close()
        var byVersion: [String: [ScoredOutcome]] = [:]
        for row in result.rows {
            byVersion[row["version"] ?? "-", default: []].append(
                ScoredOutcome(
                    score: row["score"].flatMap { Double($0) }, traded: row["decision"] == "trade",
                    eligible: row["eligible"] == "t"))
        }
        let summaries = byVersion.keys.sorted().map { ($0, QualitySummary(byVersion[$0]!)) }
        if let plot {
            guard !summaries.isEmpty else {
                throw CLIError("--plot: no labelled outcomes in the period, nothing to draw")
            }
            let period = [since.map { "since \($0)" }, until.map { "until \($0)" }].compactMap { $0 }.joined(
                separator: " ")
            try ModelPlot.draw(
                summaries, scores: byVersion.mapValues { $0.compactMap(\.score) },
                title: "model quality from outcomes" + (period.isEmpty ? "" : ", \(period)"), to: plot)
        }
        if format.json {
            try format.printJSON(
                summaries.map { version, q -> [String: Any] in
                    [
                        "version": version, "outcomes": q.outcomes, "base_rate": q.baseRate, "coverage": q.coverage,
                        "precision": q.precision as Any? ?? NSNull(), "brier": q.brier as Any? ?? NSNull(),
                        "constant_brier": q.constantBrier, "ece": q.ece as Any? ?? NSNull(),
                        "reliability": q.reliability.map { b -> [String: Any] in
                            [
                                "lower": b.lower, "upper": b.upper, "count": b.count, "mean_score": b.meanScore,
                                "eligible_rate": b.eligibleRate
                            ]
                        }
                    ]
                })
            return
        }
        guard !summaries.isEmpty else {
            print("no labelled outcomes\(version.map { " for version \($0)" } ?? "") in the period")
            return
        }
        func f(_ v: Double?, _ digits: Int = 4) -> String { v.map { String(format: "%.\(digits)f", $0) } ?? "-" }
        print(
            TextTable.render(
                header: [
                    "version", "outcomes", "base_rate", "coverage", "precision", "brier", "brier_const", "edge", "ece"
                ],
                rows: summaries.map { version, q in
                    let edge = q.brier.map { $0 < q.constantBrier ? "yes" : "no" } ?? "-"
                    return [
                        version, String(q.outcomes), f(q.baseRate, 3), f(q.coverage, 3), f(q.precision, 3), f(q.brier),
                        f(q.constantBrier), edge, f(q.ece, 3)
                    ]
                },
                rightAligned: [1, 2, 3, 4, 5, 6, 8]))
        guard reliability else { return }
        for (version, q) in summaries {
            print("\nreliability, version \(version)")
            print(
                TextTable.render(
                    header: ["score_bin", "n", "mean_score", "eligible_rate"],
                    rows: q.reliability.map {
                        [
                            "\(f($0.lower, 1))–\(f($0.upper, 1))", String($0.count), f($0.meanScore, 3),
                            f($0.eligibleRate, 3)
                        ]
                    },
                    rightAligned: [1, 2, 3]))
        }
    }

    /// `--since`/`--until` as nanoseconds since the epoch (outcomes are on the market clock).
    static func nanoseconds(_ text: String, option: String) throws -> Int64 {
        guard let ms = Int64(try Inspect.streamBound(text, option: option).split(separator: "-")[0]) else {
            throw ValidationError("\(option) '\(text)' is not a time")
        }
        return ms * 1_000_000
    }
}
