import TERedis

/// One batch's Redis writes as a single EVAL of `FencedBatch.script`: Redis applies a message's writes only if
/// its offset is above the partition's stored last-written offset, and stores the new last-written offsets
/// in the same script run. Redis runs a script atomically, so the writes and the offsets they mark land
/// together or not at all; a message can therefore be written at most once however often it is delivered
/// (a restart re-reading uncommitted offsets, a partition moved to another instance, a retried EVAL whose
/// reply was lost, two groups reading one topic into the same stream).
///
/// Contract (DESIGN.md "Delivery guarantees"): hash `te:ingest:offsets:{topic}` (override
/// `INGEST_OFFSETS_KEY`), field = partition number, value = offset of the last message of that partition
/// whose ticks/dead letter are in the outputs. Keyed by topic and partition only, not by consumer group or
/// instance, so it holds across rebalances and restarts. One hash per (topic, output streams) pair.
struct FencedBatch {
    /// ARGV is a flat list of items: `m partition offset` opens a message; `c argc arg…` is one command of
    /// the open message, run only if that message is fresh. Command errors are collected, not raised: a
    /// refused command must not leave the batch half-applied without its offsets (Redis does not roll back
    /// a script's earlier writes). Offsets are stored as the original decimal text (Lua numbers are doubles
    /// and would print large offsets in exponent form). Returns {applied, skipped, {errors…}}.
    static let script = """
        local key = KEYS[1]
        local stored, last, errors = {}, {}, {}
        local applied, skipped, fresh = 0, 0, false
        local i, n = 1, #ARGV
        while i <= n do
          if ARGV[i] == 'm' then
            local p, o = ARGV[i + 1], ARGV[i + 2]
            local s = stored[p]
            if s == nil then s = tonumber(redis.call('HGET', key, p) or '-1') end
            local offset = tonumber(o)
            fresh = offset > s
            if fresh then
              stored[p] = offset
              last[p] = o
              applied = applied + 1
            else
              stored[p] = s
              skipped = skipped + 1
            end
            i = i + 3
          else
            local argc = tonumber(ARGV[i + 1])
            if fresh then
              local r = redis.pcall(unpack(ARGV, i + 2, i + 1 + argc))
              if type(r) == 'table' and r.err then errors[#errors + 1] = r.err end
            end
            i = i + 2 + argc
          end
        end
        for p, o in pairs(last) do redis.call('HSET', key, p, o) end
        return {applied, skipped, errors}
        """

    /// Deletes a stored offset only if it still has the value that was found stale (another instance may
    /// have stored a valid one meanwhile).
    static let forgetScript = """
        if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
        return 0
        """

    private(set) var command: RedisCommand
    private(set) var messages = 0
    private(set) var commands = 0

    init(offsetsKey: String, capacity: Int) {
        command = RedisCommand(name: "EVAL", capacity: capacity + Self.script.utf8.count + 64)
        command.append(Self.script)
        command.append("1")
        command.append(offsetsKey)
    }

    mutating func beginMessage(partition: Int32, offset: Int64) {
        command.append("m")
        command.append(String(partition))
        command.append(String(offset))
        messages += 1
    }

    /// `XADD stream MAXLEN ~ maxLen * field value …` for the open message.
    mutating func xadd(_ stream: String, maxLen: Int, fields: [(String, String)]) {
        command.append("c")
        command.append(6 + 2 * fields.count)
        command.append("XADD")
        command.append(stream)
        command.append("MAXLEN")
        command.append("~")
        command.append(maxLen)
        command.append("*")
        for (k, v) in fields {
            command.append(k)
            command.append(v)
        }
        commands += 1
    }

    /// `SET key value EX seconds` for the open message.
    mutating func set(_ key: String, _ value: String, expireSeconds: Int) {
        command.append("c")
        command.append(5)
        command.append("SET")
        command.append(key)
        command.append(value)
        command.append("EX")
        command.append(expireSeconds)
        commands += 1
    }

    /// What the script did: messages written, messages it found already written, refused commands.
    struct Outcome: Equatable {
        var applied: Int
        var skipped: Int
        var errors: [String]
    }

    static func outcome(_ reply: RedisReply) throws(RedisError) -> Outcome {
        try reply.throwingError()
        guard let items = reply.array, items.count == 3, let applied = items[0].int, let skipped = items[1].int else {
            throw RedisError(.unexpectedReply, "ingest batch script replied \(reply)")
        }
        return Outcome(applied: Int(applied), skipped: Int(skipped), errors: (items[2].array ?? []).compactMap(\.string))
    }
}
