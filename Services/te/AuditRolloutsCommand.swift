import ArgumentParser
import Foundation
import TEPostgres

extension AuditCommand {
    /// `te audit rollouts`: the rollout steps (rollbacks, promotions, restores) audit-writer stored in
    /// `rollout_events`, newest first — who acted, on which metric, against which limit.
    struct Rollouts: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Rollout events (canary rollbacks, promotions, restores) from rollout_events, newest first.")

        @Option(help: "Start: a duration back from now (30s, 15m, 1h, 7d) or an ISO-8601 time. Default: everything.")
        var since: String?
        @Option(help: "Only this model.") var model: String?
        @Option(name: .short, help: "How many events.") var n: Int = 20
        @OptionGroup var format: OutputOptions

        func run() async throws {
            guard n > 0 else { throw ValidationError("-n must be positive") }
            let start = try since.map { try ModelCommand.nanoseconds($0, option: "--since") }
            let store = try AuditCommand.store()
            let result = try await store.connection.query(
                """
                SELECT event_id::text AS event_id, ts_ns, kind, model_name, from_version, to_version, metric, value,
                       "limit", replica
                FROM rollout_events
                WHERE ($1::bigint IS NULL OR ts_ns >= $1::bigint) AND ($2::text IS NULL OR model_name = $2::text)
                ORDER BY ts_ns DESC LIMIT $3::int
                """, [start.map(String.init), model, String(n)])
            await store.connection.close()
            let fields = ["event_id", "kind", "model_name", "from_version", "to_version", "metric", "replica"]
            if format.json {
                try format.printJSON(
                    result.rows.map { row -> [String: Any] in
                        var object: [String: Any] = [:]
                        for f in fields { object[f] = row[f] as Any? ?? NSNull() }
                        object["ts_ns"] = row["ts_ns"].flatMap { Int64($0) } as Any? ?? NSNull()
                        object["value"] = row["value"].flatMap { Double($0) } as Any? ?? NSNull()
                        object["limit"] = row["limit"].flatMap { Double($0) } as Any? ?? NSNull()
                        return object
                    })
                return
            }
            if result.rows.isEmpty {
                print("no rollout events\(model.map { " for \($0)" } ?? "")")
                return
            }
            let rows = result.rows.map { row -> [String] in
                let when = row["ts_ns"].flatMap { Int64($0) }.map { format.time(ms: $0 / 1_000_000) } ?? "-"
                let versions = "\(row["from_version"] ?? "-") → \(row["to_version"] ?? "-")"
                return [
                    when, row["kind"] ?? "-", row["model_name"] ?? "-", versions, row["metric"] ?? "-",
                    row["value"].flatMap { Double($0) }.map { AuditCommand.number($0) } ?? "-",
                    row["limit"].flatMap { Double($0) }.map { AuditCommand.number($0) } ?? "-", row["replica"] ?? "-",
                    row["event_id"] ?? "-"
                ]
            }
            print(
                TextTable.render(
                    header: ["time", "kind", "model", "versions", "metric", "value", "limit", "replica", "event_id"],
                    rows: rows))
        }
    }
}
