import TEModels
import TERedis

/// The leases of a sharded stage in Redis (docs/sharding.md), each step one Lua script on one key:
///
/// - `te:lease:STAGE:INPUT:{k}` (hash `holder`, `token`, `until_ms`; never expires, so the token only grows)
///   carries shard k's hash tag, so it shares the slot of the shard's streams and the fenced commit
///   (`commitScript`) can check it in the same script that writes the outputs and acknowledges the input.
/// - `te:replicas:STAGE:INPUT` (sorted set: replica → heartbeat expiry) tells each replica how many are live.
///
/// Every expiry is on Redis's clock (`TIME` inside the script), never a replica's.
public struct ShardLeases: Sendable {
    public let stage: String
    /// The unsharded name of the stage's input (`te:ticks`): a stage on other streams (a test's) has
    /// leases of its own.
    public let input: String
    public let shards: Int
    public let me: String
    public let ttlMs: Int

    public init(stage: String, input: String, shards: Int, me: String, ttlMs: Int) {
        self.stage = stage
        self.input = input
        self.shards = shards
        self.me = me
        self.ttlMs = ttlMs
    }

    /// `te:lease:STAGE:INPUT:{k}`, e.g. `te:lease:feature-pipeline:te:ticks:{3}` (no `:{k}` when unsharded).
    public func key(_ k: Int) -> String { StreamKey.sharded("te:lease:\(stage):\(input)", shard: k, of: shards) }
    /// `te:replicas:STAGE:INPUT`.
    public var membersKey: String { "te:replicas:\(stage):\(input)" }

    static let now = """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        """

    /// KEYS: members. ARGV: me, ttl ms, leaving (1: remove me). Reply: the live replicas.
    static let heartbeatScript =
        now + """
            redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
            if ARGV[3] == '1' then redis.call('ZREM', KEYS[1], ARGV[1]) else
              redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1]) end
            redis.call('PEXPIRE', KEYS[1], 10 * tonumber(ARGV[2]))
            return redis.call('ZRANGE', KEYS[1], 0, -1)
            """

    /// KEYS: lease. Reply: {holder or '', token, ms left (≤ 0: expired)}.
    static let readScript =
        now + """
            local h = redis.call('HMGET', KEYS[1], 'holder', 'token', 'until_ms')
            return {h[1] or '', tonumber(h[2] or '0'), tonumber(h[3] or '0') - now}
            """

    /// KEYS: lease. ARGV: me, my token (0: none), ttl ms, mode (`renew` or `acquire`).
    /// renew: extends only a lease held by me under my token. acquire: takes a free or expired lease, or
    /// one held under my name by an earlier run of mine, with the next token.
    /// Reply: {1, token} held, or {0, current token}.
    static let acquireScript =
        now + """
            local h = redis.call('HMGET', KEYS[1], 'holder', 'token', 'until_ms')
            local holder, token, untilMs = h[1], tonumber(h[2] or '0'), tonumber(h[3] or '0')
            local ttl = tonumber(ARGV[3])
            if holder == ARGV[1] and token == tonumber(ARGV[2]) then
              redis.call('HSET', KEYS[1], 'until_ms', now + ttl)
              return {1, token}
            end
            if ARGV[4] ~= 'acquire' then return {0, token} end
            if holder and holder ~= '' and holder ~= ARGV[1] and untilMs > now then return {0, token} end
            token = token + 1
            redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'token', token, 'until_ms', now + ttl)
            return {1, token}
            """

    /// KEYS: lease. ARGV: me, my token. Frees the lease (keeps the token). Reply: 1 released, 0 not mine.
    static let releaseScript = """
        local h = redis.call('HMGET', KEYS[1], 'holder', 'token')
        if h[1] ~= ARGV[1] or tonumber(h[2] or '0') ~= tonumber(ARGV[2]) then return 0 end
        redis.call('HSET', KEYS[1], 'holder', '', 'until_ms', 0)
        return 1
        """

    /// The fenced commit. KEYS: lease. ARGV: me, my token, command count, then per command its argument
    /// count and arguments. Runs the commands only while the lease is mine, under my token, and unexpired;
    /// error replies of single commands are counted (Redis has no rollback, like MULTI/EXEC).
    /// Reply: {1, failed commands} written, or {0, holder, token} refused.
    static let commitScript =
        fence + """
            local i, failed = 4, 0
            for _ = 1, tonumber(ARGV[3]) do
              local argc = tonumber(ARGV[i])
              local reply = redis.pcall(unpack(ARGV, i + 1, i + argc))
              if type(reply) == 'table' and reply.err then failed = failed + 1 end
              i = i + 1 + argc
            end
            return {1, failed}
            """

    /// The lease check every fenced step starts with (ARGV[1] me, ARGV[2] my token): refused, the step
    /// replies {0, holder, token} and does nothing else.
    static let fence =
        now + """
            local h = redis.call('HMGET', KEYS[1], 'holder', 'token', 'until_ms')
            if h[1] ~= ARGV[1] or tonumber(h[2] or '0') ~= tonumber(ARGV[2]) or tonumber(h[3] or '0') <= now then
              return {0, h[1] or '', tonumber(h[2] or '0')}
            end

            """

    /// The fenced read. KEYS: lease. ARGV: me, my token, stream, group, consumer, count, cursor. The stream
    /// is not a declared key (it shares the lease's slot): the ACL checks EVAL against the lease's selector
    /// and each command inside against the stream's. XREADGROUP without BLOCK: a refused holder gets no
    /// entry delivered (none becomes pending on it). Reply: {1, XREADGROUP's reply}; {1, nil, id of the
    /// stream's last entry} when a read of new entries found none (wait for more with XREAD from that id,
    /// which delivers nothing); or {0, holder, token} refused.
    static let readGroupScript =
        fence + """
            local r = redis.call('XREADGROUP', 'GROUP', ARGV[4], ARGV[5], 'COUNT', ARGV[6], 'STREAMS', ARGV[3], ARGV[7])
            if not r and ARGV[7] == '>' then
              local last = redis.call('XREVRANGE', ARGV[3], '+', '-', 'COUNT', 1)
              return {1, false, last[1] and last[1][1] or '0-0'}
            end
            return {1, r}
            """

    /// The fenced claim. KEYS: lease. ARGV: me, my token, stream, group, consumer, min idle ms. Claims
    /// (XCLAIM JUSTID: delivery counts kept) every entry pending on other consumers idle at least min idle.
    /// Reply: {1, entries claimed} or {0, holder, token} refused.
    static let claimScript =
        fence + """
            local total, start = 0, '-'
            while true do
              local rows = redis.call('XPENDING', ARGV[3], ARGV[4], 'IDLE', ARGV[6], start, '+', 100)
              local claim = {'XCLAIM', ARGV[3], ARGV[4], ARGV[5], ARGV[6]}
              for _, row in ipairs(rows) do
                if row[2] ~= ARGV[5] then claim[#claim + 1] = row[1] end
              end
              if #claim > 5 then
                claim[#claim + 1] = 'JUSTID'
                total = total + #redis.call(unpack(claim))
              end
              if #rows < 100 then break end
              start = '(' .. rows[#rows][1]
            end
            return {1, total}
            """

    /// Per-symbol latest-value hash written outside the shard's step: KEYS: the hash. ARGV: ts_ns (decimal),
    /// ttl seconds, then field/value pairs. Written only if not older than what is there (`ts_ns` compared
    /// as decimal strings: a double cannot hold nanoseconds since 1970 exactly). Reply: 1 written, 0 older.
    static let latestScript = """
        local cur = redis.call('HGET', KEYS[1], 'ts_ns')
        if cur and (#cur > #ARGV[1] or (#cur == #ARGV[1] and cur > ARGV[1])) then return 0 end
        redis.call('HSET', KEYS[1], unpack(ARGV, 3))
        redis.call('EXPIRE', KEYS[1], ARGV[2])
        return 1
        """

    // MARK: Commands

    public func heartbeat(leaving: Bool = false) -> RedisCommand {
        RedisCommand(["EVAL", Self.heartbeatScript, "1", membersKey, me, String(ttlMs), leaving ? "1" : "0"])
    }

    public func read(_ k: Int) -> RedisCommand { RedisCommand(["EVAL", Self.readScript, "1", key(k)]) }

    public func acquire(_ k: Int, token: Int64 = 0, renew: Bool = false) -> RedisCommand {
        RedisCommand([
            "EVAL", Self.acquireScript, "1", key(k), me, String(token), String(ttlMs), renew ? "renew" : "acquire"
        ])
    }

    public func release(_ k: Int, token: Int64) -> RedisCommand {
        RedisCommand(["EVAL", Self.releaseScript, "1", key(k), me, String(token)])
    }

    /// `commands` as one fenced step of shard `k` under `token`.
    public func commit(_ k: Int, token: Int64, commands: [RedisCommand]) -> RedisCommand {
        var eval = RedisCommand(name: "EVAL", capacity: Self.commitScript.utf8.count + 64 * commands.count + 128)
        for arg in [Self.commitScript, "1", key(k), me, String(token), String(commands.count)] { eval.append(arg) }
        for command in commands {
            eval.append(command.argumentCount)
            for argument in command.arguments { eval.append(bytes: argument) }
        }
        return eval
    }

    /// Shard `k`'s XREADGROUP (no BLOCK) of `stream` under `token`: new entries (`cursor` `>`) or this
    /// consumer's pending ones after `cursor`.
    public func readGroup(
        _ k: Int, token: Int64, stream: String, group: String, consumer: String, count: Int, cursor: String
    ) -> RedisCommand {
        RedisCommand([
            "EVAL", Self.readGroupScript, "1", key(k), me, String(token), stream, group, consumer, String(count),
            cursor
        ]).replyingStreamReadSecond()
    }

    /// Claims shard `k`'s entries pending on other consumers of `group` for `minIdleMs` or longer, under `token`.
    public func claim(_ k: Int, token: Int64, stream: String, group: String, consumer: String, minIdleMs: Int)
        -> RedisCommand
    {
        RedisCommand([
            "EVAL", Self.claimScript, "1", key(k), me, String(token), stream, group, consumer, String(minIdleMs)
        ])
    }

    /// HSET of `fields` into `key` (with EXPIRE `ttlSeconds`) unless the hash holds a newer `ts_ns`.
    public static func latest(_ key: String, tsNs: Int64, ttlSeconds: Int, fields: StreamFieldWriter) -> RedisCommand {
        var c = RedisCommand(
            name: "EVAL", capacity: latestScript.utf8.count + 64 + key.utf8.count + fields.bytes.count,
            arguments: 6 + fields.lengths.count)
        for arg in [latestScript, "1", key, String(tsNs), String(ttlSeconds)] { c.append(arg) }
        c.append(arguments: fields.bytes, lengths: fields.lengths)
        return c
    }

    public static func latest(_ key: String, tsNs: Int64, ttlSeconds: Int, fields: [(String, String)]) -> RedisCommand {
        var writer = StreamFieldWriter()
        for (name, value) in fields { writer.field(name, value) }
        return latest(key, tsNs: tsNs, ttlSeconds: ttlSeconds, fields: writer)
    }

    // MARK: Replies

    public static func parseLease(_ reply: RedisReply) throws(RedisError) -> ShardOwnership.Lease {
        guard let items = try reply.throwingError().array, items.count == 3, let token = items[1].int,
            let left = items[2].int
        else { throw RedisError(.unexpectedReply, "lease read replied \(reply)") }
        let holder = items[0].string.flatMap { $0.isEmpty ? nil : $0 }
        return ShardOwnership.Lease(holder: holder, token: token, live: holder != nil && left > 0)
    }

    /// (held, token) of an acquire or renew.
    public static func parseAcquire(_ reply: RedisReply) throws(RedisError) -> (held: Bool, token: Int64) {
        guard let items = try reply.throwingError().array, items.count == 2, let held = items[0].int,
            let token = items[1].int
        else { throw RedisError(.unexpectedReply, "lease acquire replied \(reply)") }
        return (held == 1, token)
    }

    public enum CommitOutcome: Equatable, Sendable {
        case written(failedCommands: Int)
        /// Refused: the lease is `holder`'s under `token` now (or expired).
        case fenced(holder: String, token: Int64)
    }

    public static func parseCommit(_ reply: RedisReply) throws(RedisError) -> CommitOutcome {
        switch try fencedStep(reply, "fenced commit") {
        case .refused(let holder, let token): return .fenced(holder: holder, token: token)
        case .done(let items):
            guard items.count == 2, let failed = items[1].int else {
                throw RedisError(.unexpectedReply, "fenced commit replied \(reply)")
            }
            return .written(failedCommands: Int(failed))
        }
    }

    public enum ReadOutcome: Equatable, Sendable {
        case entries([StreamEntry])
        /// A read of new entries found none; the stream's last entry is `last` (`0-0`: empty stream).
        case caughtUp(last: String)
        case fenced(holder: String, token: Int64)
    }

    public static func parseReadGroup(_ reply: RedisReply) throws(RedisError) -> ReadOutcome {
        switch try fencedStep(reply, "fenced read") {
        case .refused(let holder, let token): return .fenced(holder: holder, token: token)
        case .done(let items):
            if items.count == 3, items[1].isNull, let last = items[2].string { return .caughtUp(last: last) }
            guard items.count == 2 else { throw RedisError(.unexpectedReply, "fenced read replied \(reply)") }
            return .entries(try RedisClient.streamReads(items[1]).first?.entries ?? [])
        }
    }

    public enum ClaimOutcome: Equatable, Sendable {
        case claimed(Int)
        case fenced(holder: String, token: Int64)
    }

    public static func parseClaim(_ reply: RedisReply) throws(RedisError) -> ClaimOutcome {
        switch try fencedStep(reply, "fenced claim") {
        case .refused(let holder, let token): return .fenced(holder: holder, token: token)
        case .done(let items):
            guard items.count == 2, let claimed = items[1].int else {
                throw RedisError(.unexpectedReply, "fenced claim replied \(reply)")
            }
            return .claimed(Int(claimed))
        }
    }

    private enum FencedStep {
        case done([RedisReply])
        case refused(holder: String, token: Int64)
    }

    /// A fenced script's reply: {1, …} ran, {0, holder, token} refused.
    private static func fencedStep(_ reply: RedisReply, _ what: String) throws(RedisError) -> FencedStep {
        guard let items = try reply.throwingError().array, let ok = items.first?.int else {
            throw RedisError(.unexpectedReply, "\(what) replied \(reply)")
        }
        if ok == 1 { return .done(items) }
        if ok == 0, items.count == 3, let token = items[2].int {
            return .refused(holder: items[1].string ?? "", token: token)
        }
        throw RedisError(.unexpectedReply, "\(what) replied \(reply)")
    }
}
