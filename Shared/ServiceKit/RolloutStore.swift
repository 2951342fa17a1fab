import Foundation
import TEModels
import TERedis

/// The shared rollout state of one model (`RolloutState`) in Redis. A transition is ONE Lua step:
/// compare the hash's `generation` with the one the caller decided on, and only if equal bump it, set
/// the new status and append the RolloutEvent to the rollout stream. A replica that decided on an older
/// state (another replica or the tracker acted first), or a retried call whose reply was lost, changes
/// nothing and writes no event, so each transition is one event. The state key carries the stream's hash
/// tag (`RolloutState.key`), so on a Redis Cluster both keys share a slot.
public struct RolloutStore: Sendable {
    public let redis: RedisClient
    public let stream: String
    public let model: String
    /// Created on the stream (from its start) before the first event, so a trim never passes an event
    /// audit-writer has not read.
    public let group: String?

    public init(redis: RedisClient, model: String, stream: String = StreamKey.rollout, group: String? = "audit-writer")
    {
        self.redis = redis
        self.model = model
        self.stream = stream
        self.group = group
    }

    public var key: String { RolloutState.key(model: model, stream: stream) }

    /// A RolloutEvent's `event_id` (UUID, lower case). Rare (one per transition): Foundation's UUID is fine.
    public static func newEventID() -> String { UUID().uuidString.lowercased() }

    /// KEYS: state, stream. ARGV: expected generation, status, primary, canary, ts_ns, event_id, then the
    /// event's field/value pairs. Reply: {1, generation, entry id} applied, or {0, current generation}.
    static let script = """
        local current = tonumber(redis.call('HGET', KEYS[1], 'generation') or '0')
        if current ~= tonumber(ARGV[1]) then return {0, current} end
        local nextGen = current + 1
        redis.call('HSET', KEYS[1], 'generation', nextGen, 'status', ARGV[2], 'primary_version', ARGV[3],
          'canary_version', ARGV[4], 'ts_ns', ARGV[5], 'event_id', ARGV[6])
        local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 7))
        return {1, nextGen, id}
        """

    public enum Outcome: Sendable, Equatable {
        /// The event is on the stream (entry id) and the state is the new one.
        case applied(RolloutState, entryID: String)
        /// The state had moved on from the expected generation: nothing written.
        case conflict(currentGeneration: Int64)
    }

    /// The current state (generation 0 when the hash does not exist).
    public func read() async throws(RedisError) -> RolloutState {
        let hash = try await redis.hgetall(key)
        guard let state = RolloutState(hash: hash) else {
            throw RedisError(.unexpectedReply, "\(key) is not a rollout state: \(hash.keys.sorted())")
        }
        return state
    }

    /// Moves the state from generation `expected` to `status` for (`primary`, `canary`), appending `event`,
    /// in one atomic step; `.conflict` when the state is no longer at `expected`.
    public func transition(
        expected: Int64, to status: RolloutState.Status, primary: String, canary: String, event: RolloutEvent
    ) async throws(RedisError) -> Outcome {
        if let group { try await redis.xgroupCreate(stream: stream, group: group, startID: "0") }
        let fields: [(String, String)]
        do {
            fields = try StreamFieldEncoder.encode(event)
        } catch {
            throw RedisError(.unexpectedReply, "rollout event not encodable: \(error)")
        }
        var args = [
            "EVAL", Self.script, "2", key, stream, String(expected), status.rawValue, primary, canary,
            String(event.tsNs), event.eventId
        ]
        for (k, v) in fields {
            args.append(k)
            args.append(v)
        }
        let reply = try await redis.send(RedisCommand(args)).throwingError()
        guard let items = reply.array, let applied = items.first?.int, items.count >= 2, let generation = items[1].int
        else { throw RedisError(.unexpectedReply, "rollout transition replied \(reply)") }
        guard applied == 1, items.count == 3, let id = items[2].string else {
            return .conflict(currentGeneration: generation)
        }
        let state = RolloutState(
            generation: generation, status: status, primaryVersion: primary, canaryVersion: canary, tsNs: event.tsNs,
            eventId: event.eventId)
        return .applied(state, entryID: id)
    }
}
