import FeatureEngine
import Logging
import Metrics
import ServiceLifecycle
import TEModels
import TERedis

/// Every `OUTCOME_SWEEP_MS`: the outcomes the held decisions now have go to `te:outcomes`, each with
/// the XACK of its `te:audit` entry in ONE MULTI/EXEC, then are released from the state. A crash before
/// EXEC leaves the entries pending (the restart writes them); after it, nothing is lost or repeated in
/// `outcomes` (audit-writer inserts on `decision_id`, so even an outcome written twice is one row).
struct OutcomeSweeper: Service {
    let state: TrackerState
    let redis: RedisConfiguration
    let auditStream: String
    let outcomesStream: String
    let group: String
    let settings: TrackerSettings
    let logger: Logger

    func run() async throws {
        let writer = RedisClient(configuration: redis, name: "outcome-tracker-sweep", logger: logger)
        defer { writer.close() }
        let written = Counter(label: "te_outcomes_written_total")
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            let ready = await state.ready()
            if !ready.isEmpty {
                do {
                    try await write(ready, writer: writer)
                    await state.written(ready)
                    written.increment(by: ready.count)
                } catch {
                    logger.error("writing outcomes failed; retrying", metadata: ["error": "\(error)", "outcomes": "\(ready.count)"])
                }
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: settings.sweepInterval) }
        }
    }

    private func write(_ ready: [OutcomeBook<ContinuousClock.Instant>.Emission], writer: RedisClient) async throws {
        // Bounded transactions: a backlog after a restart is written in chunks.
        for start in stride(from: 0, to: ready.count, by: 500) {
            let chunk = ready[start..<min(start + 500, ready.count)]
            var commands: [RedisCommand] = []
            for e in chunk {
                commands.append(try RedisCommand.xadd(outcomesStream, maxLen: settings.streamMaxLen, message: e.outcome))
            }
            commands.append(.xack(auditStream, group: group, ids: chunk.map(\.entryID)))
            let replies = try await writer.transaction(commands)
            for case .error(let message) in replies {
                logger.error("outcome command failed inside the transaction", metadata: ["error": "\(message)"])
            }
        }
    }
}
