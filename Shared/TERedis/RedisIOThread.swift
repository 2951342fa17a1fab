import Logging
import TECore

/// A client's hiredis connection and the `BlockingExecutor` thread it lives on. hiredis calls block
/// (connect, write, read with a socket timeout, `BLOCK` reads), so they never run on Swift's cooperative
/// pool: jobs are queued on the executor and their results handed back through continuations.
final class RedisIOThread: Sendable {
    typealias Job = @Sendable (RedisConnection) -> Void

    private let executor: BlockingExecutor
    private let connection: RedisConnection

    init(name: String, configuration: RedisConfiguration, logger: Logger) {
        executor = BlockingExecutor(name: "redis-\(name)")
        connection = RedisConnection(configuration: configuration, logger: logger)
    }

    /// Queues `job`; false when the thread was closed (the job will not run).
    @discardableResult
    func submit(_ job: @escaping Job) -> Bool {
        executor.submit { [connection] in job(connection) }
    }

    /// Runs the jobs already queued, then disconnects and ends the thread.
    func close() {
        executor.submit { [connection] in connection.disconnect() }
        executor.shutdown()
    }
}
