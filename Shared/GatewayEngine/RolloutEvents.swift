import Foundation
import Logging
import ServiceKit
import ServiceLifecycle
import TECore
import TEModels
import TERedis

/// A rollout step this replica decided (a canary breach: rollback), on its way to the shared state: the
/// decision path only yields it; `RolloutEventWriter` performs the compare-and-set.
public struct RolloutRequest: Sendable, Equatable {
    public var event: RolloutEvent
    /// The generation of the shared state the decision was made under.
    public var expectedGeneration: Int64
    public var status: RolloutState.Status
}

/// The gateway's rollout requests. Rare (one per breach), so an unbounded buffer is safe.
public final class RolloutEvents: Sendable {
    let stream: AsyncStream<RolloutRequest>
    private let continuation: AsyncStream<RolloutRequest>.Continuation
    /// The replica named in events: the host name (the pod's, on Kubernetes).
    public let replica: String

    public init(replica: String = StreamWorkerConfiguration.hostName()) {
        (stream, continuation) = AsyncStream.makeStream(of: RolloutRequest.self)
        self.replica = replica
    }

    public func emit(_ request: RolloutRequest) {
        continuation.yield(request)
    }

    func finish() { continuation.finish() }
}

/// Performs this replica's rollout requests on the shared state (`RolloutStore`: compare-and-set and the
/// RolloutEvent on `te:rollout` in one Lua step, retried with backoff while Redis is unreachable), then
/// applies the resulting state. A request decided on an old generation (another replica or the tracker
/// acted first) writes nothing: the state it lost to is applied instead.
public struct RolloutEventWriter: Service {
    let store: RolloutStore
    let engine: DecisionEngine
    let logger: Logger

    public init(store: RolloutStore, engine: DecisionEngine, logger: Logger) {
        self.store = store
        self.engine = engine
        self.logger = logger
    }

    public func run() async throws {
        await withGracefulShutdownHandler {
            for await request in engine.rollout.stream {
                await perform(request)
            }
        } onGracefulShutdown: {
            engine.rollout.finish()
        }
    }

    /// While Redis is unreachable: 200 ms doubling to 5 s, jittered.
    static let retry = RetryPolicy(initial: .milliseconds(200), maximum: .seconds(5))

    private func perform(_ request: RolloutRequest) async {
        let config = engine.config
        // Stops retrying at shutdown (the step stays unwritten).
        try? await retryingUntilShutdown(
            Self.retry,
            onRetry: { attempt, error, _ in
                logger.warning(
                    "rollout step not written yet; retrying", metadata: ["error": "\(error)", "failures": "\(attempt)"])
            }
        ) {
            switch try await store.transition(
                expected: request.expectedGeneration, to: request.status, primary: config.modelVersion,
                canary: config.canaryVersion, event: request.event)
            {
            case .applied(let state, let entryID):
                engine.metrics.rolloutTransition(request.event.kind)
                logger.info(
                    "rollout event written",
                    metadata: [
                        "kind": "\(request.event.kind.rawValue)", "event_id": "\(request.event.eventId)",
                        "generation": "\(state.generation)", "entry_id": "\(entryID)"
                    ])
                engine.applyRollout(state)
            case .conflict(let generation):
                logger.info(
                    "rollout state moved on before this replica's step; following it",
                    metadata: ["kind": "\(request.event.kind.rawValue)", "generation": "\(generation)"])
                engine.applyRollout(try await store.read())
            }
        }
    }
}

/// Every `ROLLOUT_POLL_MS`, reads the shared rollout state on the gateway's query connection and applies
/// it, so every replica serves the same rollout within that interval of a transition, whoever made it.
public struct RolloutFollower: Service {
    let store: RolloutStore
    let engine: DecisionEngine
    let interval: Duration
    let logger: Logger

    public init(store: RolloutStore, engine: DecisionEngine, interval: Duration, logger: Logger) {
        self.store = store
        self.engine = engine
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        var failing = false
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                engine.applyRollout(try await store.read())
                if failing { logger.info("rollout state readable again") }
                failing = false
            } catch {
                // Keeps serving the last state applied.
                if !failing {
                    logger.warning("rollout state unreadable; keeping the last one", metadata: ["error": "\(error)"])
                }
                failing = true
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
        }
    }
}
