import Foundation
import ServiceKit
import TEModels
import TERedis
import TestSupport
import Testing

/// The shared rollout state's compare-and-set against real Redis: racing steps, one winner, one event.
@Suite(.timeLimit(.minutes(1))) struct RolloutStoreTests {
    static func event(_ kind: RolloutEvent.Kind, replica: String) -> RolloutEvent {
        RolloutState.event(
            kind, model: "m", primary: "1", canary: "2", metric: "error_rate", value: 1, limit: 0.05, replica: replica,
            eventId: RolloutStore.newEventID(), tsNs: wallClockNs())
    }

    @Test func racingRollbacksMakeOneTransitionAndOneEvent() async throws {
        let stream = TestEnv.uniqueName("rollout")
        let clients = try (0..<8).map {
            RedisClient(configuration: try TestEnv.redisConfiguration(), name: "rollout-\($0)")
        }
        defer { clients.forEach { $0.close() } }
        let store = RolloutStore(redis: clients[0], model: "m", stream: stream)
        #expect(try await store.read() == RolloutState())
        // Eight replicas decide on generation 0 at once; exactly one step applies.
        let outcomes = try await withThrowingTaskGroup(of: RolloutStore.Outcome.self) { group in
            for (i, client) in clients.enumerated() {
                group.addTask {
                    try await RolloutStore(redis: client, model: "m", stream: stream).transition(
                        expected: 0, to: .rolledBack, primary: "1", canary: "2",
                        event: Self.event(.rollback, replica: "r\(i)"))
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        let applied = outcomes.compactMap { if case .applied(let s, _) = $0 { s } else { nil } }
        #expect(applied.count == 1)
        #expect(outcomes.filter { $0 == .conflict(currentGeneration: 1) }.count == 7)
        let state = try await store.read()
        #expect(
            state.generation == 1 && state.status == .rolledBack && state.primaryVersion == "1"
                && state.canaryVersion == "2")
        let events = try await clients[0].xrange(stream).map {
            try StreamFieldDecoder.decode(RolloutEvent.self, from: $0.fields)
        }
        #expect(events.count == 1 && events.first?.eventId == state.eventId)
        // audit-writer's group exists from the stream's start, so a trim never passes the event.
        #expect(try await clients[0].xinfoGroups(stream).contains { $0.name == "audit-writer" })
        // A retried call (its reply lost) is refused: still one event.
        #expect(
            try await store.transition(
                expected: 0, to: .rolledBack, primary: "1", canary: "2", event: Self.event(.rollback, replica: "r0"))
                == .conflict(currentGeneration: 1))
        let restore = try await store.transition(
            expected: 1, to: .configured, primary: "1", canary: "2", event: Self.event(.restore, replica: "te"))
        guard case .applied(let restored, _) = restore else {
            Issue.record("restore not applied: \(restore)")
            return
        }
        #expect(restored.generation == 2)
        #expect(try await store.read() == restored)
        #expect(try await clients[0].xlen(stream) == 2)
        // The state key is in the stream's slot (the hash tag), so the script is one slot on a cluster.
        #expect(store.key == "\(stream):state:m:{\(stream)}")
        _ = try await clients[0].del([stream, store.key])
    }
}
