import TEModels
import TERedis

/// How a sharded stage writes to a single stream that lives in another slot (the aggregator's
/// `te:opportunities`): the fenced step can touch only the shard's slot, so the entries go into the shard's
/// outbox stream in that step, and are then relayed to the target by a script in the target's slot that
/// remembers, per outbox, the last entry it relayed. See docs/sharding.md "Outputs to a single stream".
///
/// - An entry reaches the target only once its fenced step is committed: a replica that lost the shard
///   never gets an entry into the outbox, so never into the target.
/// - Each outbox entry reaches the target once: the relay skips entries at or below the remembered id, in
///   the same script that appends, so two relayers (an old owner waking up, the new one) or a relay
///   repeated after a crash add nothing twice.
/// - Outbox ids are explicit and only grow (`version-index`, the stage's committed-batch counter), so
///   "relayed up to" is one id per outbox; relayed entries are trimmed in a later fenced step (`trim`).
public struct ShardOutbox: Sendable {
    /// The shard's outbox stream (in the shard's slot).
    public let outbox: String
    /// The single stream the entries are for.
    public let target: String
    /// Hash in the target's slot: outbox key → id of the last entry relayed.
    public let relayed: String
    /// `MAXLEN ~` of the target, when given.
    public let maxLen: Int?

    public struct Entry: Sendable {
        public let id: String
        public let fields: StreamFieldWriter

        public init(id: String, fields: StreamFieldWriter) {
            self.id = id
            self.fields = fields
        }
    }

    public init(outbox: String, target: String, relayed: String, maxLen: Int?) {
        self.outbox = outbox
        self.target = target
        self.relayed = relayed
        self.maxLen = maxLen
    }

    /// `prefix:relayed:` + the target's hash tag: the relay's memory lives in the target's slot.
    public static func relayedKey(prefix: String, target: String) -> String {
        "\(prefix):relayed:\(StreamKey.hashTag(of: target))"
    }

    /// The id of entry `index` of the output that makes `version` (≥ 1): ids grow with the version.
    public static func id(version: Int64, index: Int) -> String { "\(version)-\(index)" }

    /// XADD of an entry into the outbox, for the fenced step.
    public func add(_ entry: Entry) -> RedisCommand {
        var c = RedisCommand(
            name: "XADD", capacity: 32 + outbox.utf8.count + entry.fields.bytes.count,
            arguments: 3 + entry.fields.lengths.count)
        c.append(outbox)
        c.append(entry.id)
        c.append(arguments: entry.fields.bytes, lengths: entry.fields.lengths)
        return c
    }

    /// XTRIM of every outbox entry up to and including `id` (relayed already), for a fenced step.
    public func trim(through id: String) -> RedisCommand {
        let parts = id.split(separator: "-")
        let next = parts.count == 2 ? "\(parts[0])-\((Int64(parts[1]) ?? 0) + 1)" : id
        return RedisCommand(["XTRIM", outbox, "MINID", next])
    }

    /// KEYS: target, relayed. ARGV: outbox key, maxlen (0: none), entry count, then per entry its id, its
    /// argument count and its fields. Appends the entries newer than the remembered id, in order.
    /// Reply: {appended, last relayed id or ''}.
    static let relayScript = """
        local function parse(id)
          local d = string.find(id, '-', 1, true)
          return tonumber(string.sub(id, 1, d - 1)), tonumber(string.sub(id, d + 1))
        end
        local function newer(a, b)
          if not b then return true end
          local am, as = parse(a)
          local bm, bs = parse(b)
          return am > bm or (am == bm and as > bs)
        end
        local last = redis.call('HGET', KEYS[2], ARGV[1]) or nil
        local i, n = 4, 0
        for _ = 1, tonumber(ARGV[3]) do
          local id, argc = ARGV[i], tonumber(ARGV[i + 1])
          if newer(id, last) then
            if ARGV[2] == '0' then
              redis.call('XADD', KEYS[1], '*', unpack(ARGV, i + 2, i + 1 + argc))
            else
              redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, i + 2, i + 1 + argc))
            end
            last = id
            n = n + 1
          end
          i = i + 2 + argc
        end
        if n > 0 then redis.call('HSET', KEYS[2], ARGV[1], last) end
        return {n, last or ''}
        """

    /// The relay of `entries` (outbox order) as one script in the target's slot.
    public func relay(_ entries: [Entry]) -> RedisCommand {
        let bytes = entries.reduce(0) { $0 + $1.fields.bytes.count + 32 }
        var eval = RedisCommand(name: "EVAL", capacity: Self.relayScript.utf8.count + bytes + 128)
        for arg in [Self.relayScript, "2", target, relayed, outbox, String(maxLen ?? 0), String(entries.count)] {
            eval.append(arg)
        }
        for entry in entries {
            eval.append(entry.id)
            eval.append(entry.fields.lengths.count)
            eval.append(arguments: entry.fields.bytes, lengths: entry.fields.lengths)
        }
        return eval
    }

    /// (appended, last relayed id) of a relay.
    public static func parseRelay(_ reply: RedisReply) throws(RedisError) -> (appended: Int, last: String?) {
        guard let items = try reply.throwingError().array, items.count == 2, let n = items[0].int,
            let last = items[1].string
        else { throw RedisError(.unexpectedReply, "outbox relay replied \(reply)") }
        return (Int(n), last.isEmpty ? nil : last)
    }

    /// Relays `entries`; returns the last id relayed (theirs, or a later one another relayer got to first).
    public func relay(_ entries: [Entry], on redis: RedisClient) async throws(RedisError) -> String? {
        guard !entries.isEmpty else { return nil }
        return try Self.parseRelay(try await redis.send(relay(entries))).last
    }

    /// Relays what the outbox holds after `after` (nil: all of it), `chunk` entries per script. The outbox
    /// holds committed entries only, so this is what a stage calls once its step is committed (its own
    /// memory of the output could be of a step that failed). Returns the last id relayed, nil when there
    /// was nothing.
    public func relayAll(on redis: RedisClient, after: String? = nil, chunk: Int = 200) async throws(RedisError)
        -> String?
    {
        var start = after.map { "(" + $0 } ?? "-"
        var last: String?
        while true {
            let entries = try await redis.xrange(outbox, start: start, count: chunk)
            guard let tail = entries.last else { break }
            var batch: [Entry] = []
            batch.reserveCapacity(entries.count)
            for e in entries where !e.isDeleted {
                var fields = StreamFieldWriter()
                for (name, value) in e.fields { fields.field(name, value) }
                batch.append(Entry(id: e.id, fields: fields))
            }
            last = try await relay(batch, on: redis) ?? last
            guard entries.count == chunk else { break }
            start = "(" + tail.id
        }
        return last
    }
}
