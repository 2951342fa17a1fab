import Foundation
import Logging
import ServiceKit
import ServiceLifecycle
import TEModels
import TERedis

/// The gateway's rollout steps (a canary rolled back) on their way to `te:rollout`: the decision path
/// only yields an event; `RolloutEventWriter` writes it, retrying while Redis is unreachable. Events are
/// rare (one per rollback), so an unbounded buffer is safe.
public final class RolloutEvents: Sendable {
    let stream: AsyncStream<RolloutEvent>
    private let continuation: AsyncStream<RolloutEvent>.Continuation
    /// The replica named in events: the host name (the pod's, on Kubernetes).
    public let replica: String

    public init(replica: String = StreamWorkerConfiguration.hostName()) {
        (stream, continuation) = AsyncStream.makeStream(of: RolloutEvent.self)
        self.replica = replica
    }

    public func emit(_ event: RolloutEvent) {
        continuation.yield(event)
    }

    func finish() { continuation.finish() }
}

/// Writes the gateway's `RolloutEvents` to `te:rollout` (XADD, retried with backoff), and creates the
/// stream's `audit-writer` group first so a trim never passes an event it has not read.
public struct RolloutEventWriter: Service {
    let redis: RedisClient
    let events: RolloutEvents
    let stream: String
    let group: String?
    let logger: Logger

    public init(redis: RedisClient, events: RolloutEvents, stream: String = StreamKey.rollout, group: String? = "audit-writer", logger: Logger) {
        self.redis = redis
        self.events = events
        self.stream = stream
        self.group = group
        self.logger = logger
    }

    public func run() async throws {
        await withGracefulShutdownHandler {
            for await event in events.stream {
                await write(event)
            }
        } onGracefulShutdown: {
            events.finish()
        }
    }

    private func write(_ event: RolloutEvent) async {
        var failures = 0
        while true {
            do {
                if let group { try await redis.xgroupCreate(stream: stream, group: group, startID: "0") }
                _ = try await redis.xadd(stream, fields: try StreamFieldEncoder.encode(event))
                logger.info("rollout event written", metadata: ["kind": "\(event.kind.rawValue)", "event_id": "\(event.eventId)"])
                return
            } catch {
                failures += 1
                if failures > 20 {
                    logger.error("rollout event not written: giving up", metadata: ["error": "\(error)", "event_id": "\(event.eventId)"])
                    return
                }
                logger.warning("writing a rollout event failed; retrying", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: min(.milliseconds(100) * (1 << min(failures, 6)), .seconds(5)))
            }
        }
    }
}
