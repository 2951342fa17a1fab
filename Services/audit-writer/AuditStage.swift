import AuditStorage
import Foundation
import Logging
import Metrics
import ServiceKit
import ServiceLifecycle
import TECore
import TEModels
import TEPostgres

/// `te:audit` → PostgreSQL `decisions`. One batch = one COPY (its own transaction), each new row linked into
/// this writer's hash chain (`AuditChain`); the worker acknowledges the batch only after `handle` returns,
/// i.e. after COMMIT. Redelivered records are skipped by the primary key and do not join the chain.
struct AuditStage: StreamStage {
    typealias Input = AuditRecord

    let stage = "audit-writer"
    let inputStream: String
    let store: AuditStore
    let metrics: AuditMetrics
    let logger: Logger
    /// Retry delays while PostgreSQL is unavailable.
    let retry: RetryPolicy
    /// Test-only (`AUDIT_TEST_CRASH_AFTER_COMMIT=1`): SIGKILL this process right after the first
    /// COMMIT, before the worker's XACK, to prove redelivery adds no duplicates.
    let crashAfterCommit: Bool
    /// This writer's chain head: read from the table before the first batch (so a restart continues its
    /// chain), then advanced by each COMMIT. A stale head cannot fork the chain: the insert meets a unique
    /// violation and re-reads it (`AuditStore.insert`).
    var chain: AuditChain?
    let writerID: String

    /// PostgreSQL being down must not cost records: the StreamWorker dead-letters an entry after
    /// `MAX_DELIVERIES` failed `handle` calls, so a retriable error (connection refused/lost, server
    /// shutting down) is retried here with backoff, holding the batch unacknowledged, until
    /// PostgreSQL is back or the service shuts down (then the entries stay pending for the restart).
    /// Records PostgreSQL would reject (found before the COPY) or does reject for their data (SQLSTATE
    /// class 22/23, isolated by bisection) become dead letters carrying the reason; the rest of the
    /// batch is inserted.
    mutating func handle(_ batch: [StreamDelivery<AuditRecord>]) async throws -> StageOutput {
        let records = batch.map(\.message)
        var failures = 0
        return try await retryingUntilShutdown(
            retry, isRetryable: { ($0 as? PostgresError)?.isRetriable == true },
            onRetry: { attempt, error, delay in
                failures = attempt
                metrics.retries.increment()
                logger.warning(
                    "postgres unavailable; batch held unacknowledged, retrying",
                    metadata: ["error": "\(error)", "records": "\(records.count)", "retry_in": "\(delay)"])
            }
        ) {
            let start = ContinuousClock.now
            var head: AuditChain
            if let chain { head = chain } else { head = try await store.chainHead(writer: writerID) }
            let (outcome, rejected) = try await store.insertIsolatingBadRecords(records, chain: &head)
            chain = head
            metrics.commitDuration.record(duration: ContinuousClock.now - start)
            if crashAfterCommit {
                logger.critical("AUDIT_TEST_CRASH_AFTER_COMMIT: killing myself between COMMIT and XACK")
                kill(getpid(), SIGKILL)
            }
            metrics.batchRows.record(Double(records.count))
            metrics.inserted.increment(by: Int64(outcome.inserted))
            metrics.duplicates.increment(by: Int64(outcome.duplicates))
            if failures > 0 { logger.info("postgres is back; batch written", metadata: ["retries": "\(failures)"]) }
            var output = StageOutput()
            for (index, reason) in rejected {
                metrics.rejected.increment()
                output.deadLetter(id: batch[index].id, reason: reason)
            }
            return output
        }
    }
}

/// The te_audit_* metrics of deploy/metrics.txt, through swift-metrics (HELP text and buckets in `MetricHelp`).
struct AuditMetrics: Sendable {
    let inserted = Counter(label: "te_audit_rows_inserted_total")
    let duplicates = Counter(label: "te_audit_duplicates_skipped_total")
    let rejected = Counter(label: "te_audit_rows_rejected_total")
    let retries = Counter(label: "te_audit_retries_total")
    let batchRows = Recorder(label: "te_audit_batch_rows")
    let commitDuration = Metrics.Timer(label: "te_audit_commit_duration_seconds")
}
