import TERedis

/// `STREAM_MAXLEN` for streams whose entries must not be lost before every consumer group has them
/// (`te:audit`): trims the oldest entries down to `maxLen`, but never an entry some group has not
/// acknowledged, and nothing at all while the stream has no group (nobody has read it yet).
///
/// One Lua script, atomic in Redis: the oldest entry a group still needs is its oldest pending entry,
/// else the one after its last-delivered id; the script removes only entries older than the oldest of
/// those, and at most the `XLEN - maxLen` that `MAXLEN` asks for (at most `maxPerCall` per call: the
/// script reads the entries it removes, so each call stays short).
public enum StreamTrim {
    public static let script = """
        local key = KEYS[1]
        local maxlen = tonumber(ARGV[1])
        local cap = tonumber(ARGV[2])
        local len = redis.call('XLEN', key)
        if len <= maxlen then return 0 end
        local function parse(id)
          local ms, seq = string.match(id, '^(%d+)-(%d+)$')
          return tonumber(ms), tonumber(seq)
        end
        local groups = redis.call('XINFO', 'GROUPS', key)
        if #groups == 0 then return 0 end
        local keepMs, keepSeq = nil, nil
        for _, g in ipairs(groups) do
          local info = {}
          for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
          local ms, seq
          if tonumber(info['pending']) > 0 then
            local p = redis.call('XPENDING', key, info['name'])
            ms, seq = parse(p[2])
          else
            ms, seq = parse(info['last-delivered-id'])
            seq = seq + 1
          end
          if keepMs == nil or ms < keepMs or (ms == keepMs and seq < keepSeq) then
            keepMs, keepSeq = ms, seq
          end
        end
        local keep = string.format('%d-%d', keepMs, keepSeq)
        local old = redis.call('XRANGE', key, '-', '(' .. keep, 'COUNT', math.min(len - maxlen, cap))
        if #old == 0 then return 0 end
        local lastMs, lastSeq = parse(old[#old][1])
        redis.call('XTRIM', key, 'MINID', string.format('%d-%d', lastMs, lastSeq + 1))
        return #old
        """

    /// The EVAL command trimming `stream`; its reply is the number of entries removed.
    public static func command(stream: String, maxLen: Int, maxPerCall: Int = 10_000) -> RedisCommand {
        RedisCommand(["EVAL", script, "1", stream, String(maxLen), String(maxPerCall)])
    }

    /// Trims `stream` (see the type's comment); returns the number of entries removed.
    @discardableResult
    public static func trim(_ redis: RedisClient, stream: String, maxLen: Int, maxPerCall: Int = 10_000)
        async throws(RedisError) -> Int
    {
        let reply = try await redis.send(command(stream: stream, maxLen: maxLen, maxPerCall: maxPerCall))
        switch reply {
        case .integer(let n): return Int(n)
        case .error(let message): throw RedisError(.server, "stream trim of \(stream): \(message)")
        default: throw RedisError(.unexpectedReply, "stream trim of \(stream) replied \(reply)")
        }
    }
}
