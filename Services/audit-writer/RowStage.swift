import AuditStorage
import Foundation
import Logging
import Metrics
import ServiceKit
import ServiceLifecycle
import TECore
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
    let retry: RetryPolicy
    /// Made at start, so the table's series exists (at 0) before its first row.
    let inserted: Counter

    init(inputStream: String, store: Store, table: String, logger: Logger, retry: RetryPolicy) {
        self.inputStream = inputStream
        self.store = store
        self.table = table
        self.logger = logger
        self.retry = retry
        inserted = Counter(label: "te_audit_table_rows_inserted_total", dimensions: [("table", table)])
    }

    mutating func handle(_ batch: [StreamDelivery<Store.Row>]) async throws -> StageOutput {
        let rows = batch.map(\.message)
        return try await retryingUntilShutdown(
            retry, isRetryable: { ($0 as? PostgresError)?.isRetriable == true },
            onRetry: { _, error, _ in
                logger.warning(
                    "postgres unavailable; batch held unacknowledged, retrying",
                    metadata: ["table": "\(table)", "error": "\(error)", "rows": "\(rows.count)"])
            }
        ) {
            let (count, rejected) = try await store.insertSkippingBadRows(rows)
            inserted.increment(by: count)
            var output = StageOutput()
            for (index, reason) in rejected { output.deadLetter(id: batch[index].id, reason: reason) }
            return output
        }
    }
}
