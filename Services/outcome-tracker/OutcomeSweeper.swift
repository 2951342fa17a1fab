import FeatureEngine
import Logging
import Metrics
import ServiceLifecycle
import TEModels
import TERedis

/// Every `OUTCOME_SWEEP_MS`: the outcomes the held decisions now have go to `te:outcomes`, then their
/// `te:audit` entries are acknowledged, then they are released from the state. The two streams live in
/// different Redis Cluster slots (DESIGN.md "Shards": single streams), so they are two steps in an
/// at-least-once order: an entry is acknowledged only after its outcome is in `te:outcomes`. A crash (or
/// a lost reply) before the XACK leaves the entries pending and the restart writes their outcomes again;
/// `te:outcomes` may then hold a decision's outcome twice, and `outcomes` still one row (audit-writer
/// inserts on `decision_id`). Nothing is lost.
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
                    logger.error(
                        "writing outcomes failed; retrying",
                        metadata: ["error": "\(error)", "outcomes": "\(ready.count)"])
                }
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: settings.sweepInterval) }
        }
    }

    private func write(_ ready: [OutcomeBook<ContinuousClock.Instant>.Emission], writer: RedisClient) async throws {
        // Bounded pipelines: a backlog after a restart is written in chunks.
        for start in stride(from: 0, to: ready.count, by: 500) {
            let chunk = ready[start..<min(start + 500, ready.count)]
            var commands: [RedisCommand] = []
            for e in chunk {
                commands.append(
                    try RedisCommand.xadd(outcomesStream, maxLen: settings.streamMaxLen, message: e.outcome))
            }
            // A refused XADD fails the chunk before its XACK: the entries stay pending and are retried.
            for reply in try await writer.pipeline(commands) { try reply.throwingError() }
            _ = try await writer.send(.xack(auditStream, group: group, ids: chunk.map(\.entryID))).throwingError()
        }
    }
}
