import AuditStorage
import Foundation
import Logging
import ServiceKit
import ServiceLifecycle
import TECore
import TEModels
import TEPostgres

// audit-writer: te:audit (group `audit-writer`) → PostgreSQL `decisions`, idempotent on decision_id;
// te:outcomes → `outcomes` (on decision_id) and te:rollout → `rollout_events` (on event_id), same group.
//
// Environment: REDIS_URL, POSTGRES_URL (libpq URI; sslmode etc. pass through), AUDIT_BATCH_SIZE
// (records per batch/transaction, default 500), METRICS_PORT (default 9106), the StreamWorker's
// variables (STREAM_BLOCK_MS bounds how long a partial batch waits, CLAIM_MIN_IDLE_MS, …), and
// AUDIT_TEST_CRASH_AFTER_COMMIT=1 (tests only: SIGKILL itself after the first COMMIT, before XACK).
// AUDIT_WRITER_ID (else POD_NAME, else HOSTNAME, else the host name): the hash chain this writer extends
// (AuditChain; one per replica, so replicas need distinct ids; a stable one continues across restarts).
// AUDIT_STREAM (default te:audit), OUTCOMES_STREAM, ROLLOUT_STREAM and DLQ_STREAM (default te:dlq) let
// tests use streams of their own.
// POSTGRES_MIGRATE_URL: the owner role the migrations run as, on a connection closed once they are
// applied, so POSTGRES_URL can be `te_audit_writer` (INSERT/SELECT only). Default: POSTGRES_URL.
await ServiceRunner.run(service: "audit-writer", defaultMetricsPort: 9106) { resources in
    let env = resources.env
    let redis = try env.redis()
    let postgresURL = try env.string("POSTGRES_URL", hint: "postgres://user:pass@host:port/db")
    let postgres: PostgresConfiguration
    do throws(PostgresError) {
        postgres = try PostgresConfiguration(url: postgresURL)
    } catch {
        throw ConfigurationError(variable: "POSTGRES_URL", problem: error.message)
    }
    let migrateURL = env.values["POSTGRES_MIGRATE_URL"].flatMap { $0.isEmpty ? nil : $0 }
    let migrations: PostgresConfiguration?
    do throws(PostgresError) {
        if let migrateURL { migrations = try PostgresConfiguration(url: migrateURL) } else { migrations = nil }
    } catch {
        throw ConfigurationError(variable: "POSTGRES_MIGRATE_URL", problem: error.message)
    }
    var worker = try StreamWorkerConfiguration.fromEnvironment(env)
    worker.batchSize = try env.int("AUDIT_BATCH_SIZE", default: 500, range: 1...10_000)
    worker.deadLetterStream = try env.string("DLQ_STREAM", default: StreamKey.dlq)
    let inputStream = try env.string("AUDIT_STREAM", default: StreamKey.audit)
    let crashAfterCommit = try env.bool("AUDIT_TEST_CRASH_AFTER_COMMIT", default: false)

    let connection = PostgresConnection(configuration: postgres, logger: resources.logger)
    // Readiness on its own connection: the writer's may be busy in a long COPY or a retry wait.
    let probe = PostgresConnection(configuration: postgres, logger: resources.logger)
    resources.readiness.add("postgres") { _ = try await probe.query("SELECT 1") }

    let outcomesStream = try env.string("OUTCOMES_STREAM", default: StreamKey.outcomes)
    let rolloutStream = try env.string("ROLLOUT_STREAM", default: StreamKey.rollout)
    let outcomes = RowStage(
        inputStream: outcomesStream,
        store: OutcomeStore(connection: PostgresConnection(configuration: postgres, logger: resources.logger)),
        table: "outcomes", logger: resources.logger, retry: worker.retry)
    let rollout = RowStage(
        inputStream: rolloutStream,
        store: RolloutEventStore(connection: PostgresConnection(configuration: postgres, logger: resources.logger)),
        table: "rollout_events", logger: resources.logger, retry: worker.retry)

    let stage = AuditStage(
        inputStream: inputStream, store: AuditStore(connection: connection),
        metrics: AuditMetrics(), logger: resources.logger,
        retry: worker.retry, crashAfterCommit: crashAfterCommit,
        chain: nil,
        writerID: AuditWriterID.from(environment: env.values, hostName: StreamWorkerConfiguration.hostName))
    return [
        AuditWriterService(
            store: stage.store,
            migrator: migrations.map {
                AuditStore(connection: PostgresConnection(configuration: $0, logger: resources.logger))
            },
            worker: StreamWorker(
                stage: stage, redis: redis, configuration: worker, readiness: resources.readiness,
                logger: resources.logger),
            tables: [
                StreamWorker(stage: outcomes, redis: redis, configuration: worker, logger: resources.logger),
                StreamWorker(stage: rollout, redis: redis, configuration: worker, logger: resources.logger)
            ],
            logger: resources.logger)
    ]
}

/// Applies the migrations (waiting for PostgreSQL with backoff if it is not up yet), then runs the
/// stream workers (decisions, and the `tables` beside them).
struct AuditWriterService: Service {
    let store: AuditStore
    /// On the POSTGRES_MIGRATE_URL connection; nil: the writer's own.
    let migrator: AuditStore?
    let worker: StreamWorker<AuditStage>
    let tables: [any Service]
    let logger: Logger

    /// While PostgreSQL is not up yet: 100 ms doubling to 5 s, jittered.
    static let migrationRetry = RetryPolicy(initial: .milliseconds(100), maximum: .seconds(5))

    func run() async throws {
        do {
            try await retryingUntilShutdown(
                Self.migrationRetry,
                isRetryable: { error in
                    if let error = error as? MigrationError { return error.underlying.isRetriable }
                    return (error as? PostgresError)?.isRetriable == true
                },
                onRetry: { _, error, _ in
                    logger.warning("postgres unavailable for migrations; retrying", metadata: ["error": "\(error)"])
                }
            ) {
                try await (migrator ?? store).migrate(logger: logger)
                await migrator?.connection.close()
            }
        } catch  where Task.isShuttingDownGracefully || Task.isCancelled {
            return
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for table in tables { group.addTask { try await table.run() } }
            group.addTask { try await worker.run() }
            try await group.waitForAll()
        }
        await store.connection.close()
    }
}
