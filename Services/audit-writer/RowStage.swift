import Foundation
import Logging
import Metrics
import ServiceKit
import ServiceLifecycle
import TEModels
import TEPostgres

/// A stream → table stage for the tables beside `decisions` (`te:outcomes` → `outcomes`, `te:rollout` →
/// `rollout_events`): one batch, one INSERT … ON CONFLICT DO NOTHING, acknowledged after it. As
/// `AuditStage`, it holds a batch unacknowledged while PostgreSQL is unavailable and dead-letters rows
/// PostgreSQL would reject.
struct RowStage<Store: StreamRowStore>: StreamStage {
    typealias Input = Store.Row

    let stage = "audit-writer"
    let inputStream: String
    let store: Store
    let table: String
    let logger: Logger
    let retryBackoff: Duration
    let retryBackoffMax: Duration

    mutating func handle(_ batch: [StreamDelivery<Store.Row>]) async throws -> StageOutput {
        let rows = batch.map(\.message)
        let inserted = Counter(label: "te_audit_table_rows_inserted_total", dimensions: [("table", table)])
        var failures = 0
        while true {
            do {
                let (count, rejected) = try await store.insertSkippingBadRows(rows)
                inserted.increment(by: count)
                var output = StageOutput()
                for (index, reason) in rejected { output.deadLetter(id: batch[index].id, reason: reason) }
                return output
            } catch let error as PostgresError where error.isRetriable {
                failures += 1
                if Task.isShuttingDownGracefully || Task.isCancelled { throw error }
                let delay = min(retryBackoff * (1 << min(failures - 1, 16)), retryBackoffMax)
                logger.warning(
                    "postgres unavailable; batch held unacknowledged, retrying",
                    metadata: ["table": "\(table)", "error": "\(error)", "rows": "\(rows.count)"])
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: delay) }
            }
        }
    }
}
