// Stream commands (Redis 7.0 reply shapes).
extension RedisClient {
    /// XADD; returns the new entry's id. `maxLen` trims approximately (`MAXLEN ~ n`).
    @discardableResult
    public func xadd(_ stream: String, id: String = "*", maxLen: Int? = nil, fields: [(String, String)])
        async throws(RedisError) -> String
    {
        let reply = try await send(.xadd(stream, id: id, maxLen: maxLen, fields: fields))
        guard let id = reply.string else { throw RedisError(.unexpectedReply, "XADD replied \(reply)") }
        return id
    }

    public func xlen(_ stream: String) async throws(RedisError) -> Int {
        Int(try await send("XLEN", stream).int ?? 0)
    }

    /// XRANGE stream start end [COUNT n], oldest first.
    public func xrange(_ stream: String, start: String = "-", end: String = "+", count: Int? = nil)
        async throws(RedisError) -> [StreamEntry]
    {
        var args = ["XRANGE", stream, start, end]
        if let count { args += ["COUNT", String(count)] }
        return try Self.entries(try await send(RedisCommand(args).replying(.entries)))
    }

    /// XREVRANGE stream end start [COUNT n], newest first.
    public func xrevrange(_ stream: String, end: String = "+", start: String = "-", count: Int? = nil)
        async throws(RedisError) -> [StreamEntry]
    {
        var args = ["XREVRANGE", stream, end, start]
        if let count { args += ["COUNT", String(count)] }
        return try Self.entries(try await send(RedisCommand(args).replying(.entries)))
    }

    /// XREAD [COUNT n] [BLOCK ms] STREAMS key… id…; empty when BLOCK timed out.
    public func xread(streams: [(String, String)], count: Int? = nil, block: Duration? = nil) async throws(RedisError)
        -> [StreamReadResult]
    {
        var c = RedisCommand(name: "XREAD").replying(.streams)
        if let count {
            c.append("COUNT")
            c.append(count)
        }
        if let block {
            c.append("BLOCK")
            c.append(Self.milliseconds(block))
        }
        c.append("STREAMS")
        for (key, _) in streams { c.append(key) }
        for (_, id) in streams { c.append(id) }
        return try Self.streamReads(try await send(c, extraTimeout: block))
    }

    /// XGROUP CREATE stream group startID MKSTREAM; an existing group is left as it is.
    public func xgroupCreate(stream: String, group: String, startID: String = "$") async throws(RedisError) {
        do {
            _ = try await send("XGROUP", "CREATE", stream, group, startID, "MKSTREAM")
        } catch  where error.isServerError("BUSYGROUP") {
            return
        }
    }

    /// XGROUP DESTROY; true when the group existed.
    @discardableResult
    public func xgroupDestroy(stream: String, group: String) async throws(RedisError) -> Bool {
        try await send("XGROUP", "DESTROY", stream, group).int == 1
    }

    /// XREADGROUP GROUP g c [COUNT n] [BLOCK ms] STREAMS key… id…. id ">" reads new entries, any
    /// other id re-reads the consumer's own pending entries after it (deleted ones have
    /// `isDeleted`). Empty when BLOCK timed out. The socket waits BLOCK plus the command timeout.
    public func xreadgroup(
        group: String, consumer: String, streams: [(String, String)], count: Int? = nil, block: Duration? = nil,
        noAck: Bool = false
    ) async throws(RedisError) -> [StreamReadResult] {
        var c = RedisCommand(name: "XREADGROUP").replying(.streams)
        c.append("GROUP")
        c.append(group)
        c.append(consumer)
        if let count {
            c.append("COUNT")
            c.append(count)
        }
        if let block {
            c.append("BLOCK")
            c.append(Self.milliseconds(block))
        }
        if noAck { c.append("NOACK") }
        c.append("STREAMS")
        for (key, _) in streams { c.append(key) }
        for (_, id) in streams { c.append(id) }
        return try Self.streamReads(try await send(c, extraTimeout: block))
    }

    /// XACK; returns how many entries were pending and are now acknowledged.
    @discardableResult
    public func xack(_ stream: String, group: String, ids: [String]) async throws(RedisError) -> Int {
        if ids.isEmpty { return 0 }
        return Int(try await send(.xack(stream, group: group, ids: ids)).int ?? 0)
    }

    /// XAUTOCLAIM stream group consumer min-idle start [COUNT n]: claims entries pending longer
    /// than `minIdle` for any consumer.
    public func xautoclaim(
        _ stream: String, group: String, consumer: String, minIdle: Duration, start: String = "0-0", count: Int? = nil
    ) async throws(RedisError) -> AutoClaimResult {
        var args = ["XAUTOCLAIM", stream, group, consumer, String(Self.milliseconds(minIdle)), start]
        if let count { args += ["COUNT", String(count)] }
        let reply = try await send(RedisCommand(args).replying(.autoclaim))
        guard let parts = reply.array, parts.count >= 2, let next = parts[0].string else {
            throw RedisError(.unexpectedReply, "XAUTOCLAIM replied \(reply)")
        }
        let entries = try Self.entries(parts[1])
        let deleted = parts.count > 2 ? (parts[2].array ?? []).compactMap(\.string) : []
        return AutoClaimResult(nextStart: next, entries: entries.filter { !$0.isDeleted }, deletedIDs: deleted)
    }

    /// XCLAIM stream group consumer min-idle id…: entries of other consumers idle at least
    /// `minIdle` become this consumer's. With `justID` the delivery counter is not incremented and
    /// the entries are returned without fields.
    public func xclaim(
        _ stream: String, group: String, consumer: String, minIdle: Duration, ids: [String], justID: Bool = false
    ) async throws(RedisError) -> [StreamEntry] {
        if ids.isEmpty { return [] }
        var args = ["XCLAIM", stream, group, consumer, String(Self.milliseconds(minIdle))] + ids
        if justID { args.append("JUSTID") }
        let reply = try await send(justID ? RedisCommand(args) : RedisCommand(args).replying(.entries))
        if justID {
            return (reply.array ?? []).compactMap(\.string).map { StreamEntry(id: $0, fields: []) }
        }
        return try Self.entries(reply)
    }

    /// XPENDING stream group (summary form).
    public func xpending(_ stream: String, group: String) async throws(RedisError) -> PendingSummary {
        let reply = try await send("XPENDING", stream, group)
        guard let parts = reply.array, parts.count == 4 else {
            throw RedisError(.unexpectedReply, "XPENDING replied \(reply)")
        }
        var consumers: [String: Int] = [:]
        for pair in parts[3].array ?? [] {
            if let p = pair.array, p.count == 2, let name = p[0].string, let n = p[1].int { consumers[name] = Int(n) }
        }
        return PendingSummary(
            count: Int(parts[0].int ?? 0), smallestID: parts[1].string, largestID: parts[2].string, consumers: consumers
        )
    }

    /// XPENDING stream group [IDLE ms] start end count [consumer] (extended form).
    public func xpending(
        _ stream: String, group: String, minIdle: Duration? = nil, start: String = "-", end: String = "+", count: Int,
        consumer: String? = nil
    ) async throws(RedisError) -> [PendingEntry] {
        var args = ["XPENDING", stream, group]
        if let minIdle { args += ["IDLE", String(Self.milliseconds(minIdle))] }
        args += [start, end, String(count)]
        if let consumer { args.append(consumer) }
        let reply = try await send(RedisCommand(args))
        guard let rows = reply.array else { throw RedisError(.unexpectedReply, "XPENDING replied \(reply)") }
        var out: [PendingEntry] = []
        out.reserveCapacity(rows.count)
        for row in rows {
            guard let r = row.array, r.count == 4, let id = r[0].string, let consumer = r[1].string,
                let idle = r[2].int, let deliveries = r[3].int
            else { throw RedisError(.unexpectedReply, "XPENDING row \(row)") }
            out.append(PendingEntry(id: id, consumer: consumer, idle: .milliseconds(idle), deliveries: Int(deliveries)))
        }
        return out
    }

    /// XINFO GROUPS stream.
    public func xinfoGroups(_ stream: String) async throws(RedisError) -> [StreamGroupInfo] {
        let reply = try await send("XINFO", "GROUPS", stream)
        guard let groups = reply.array else { throw RedisError(.unexpectedReply, "XINFO GROUPS replied \(reply)") }
        return try groups.map { group throws(RedisError) in
            let map = Self.map(group)
            guard let name = map["name"]?.string else {
                throw RedisError(.unexpectedReply, "XINFO GROUPS entry \(group)")
            }
            return StreamGroupInfo(
                name: name, consumers: Int(map["consumers"]?.int ?? 0), pending: Int(map["pending"]?.int ?? 0),
                lastDeliveredID: map["last-delivered-id"]?.string ?? "0-0", lag: map["lag"]?.int.map { Int($0) },
                entriesRead: map["entries-read"]?.int.map { Int($0) })
        }
    }

    /// XINFO STREAM stream (basics).
    public func xinfoStream(_ stream: String) async throws(RedisError) -> StreamInfo {
        let reply = try await send("XINFO", "STREAM", stream)
        let map = Self.map(reply)
        guard let length = map["length"]?.int else {
            throw RedisError(.unexpectedReply, "XINFO STREAM replied \(reply)")
        }
        func entryID(_ r: RedisReply?) -> String? { r?.array?.first?.string }
        return StreamInfo(
            length: Int(length), groups: Int(map["groups"]?.int ?? 0),
            lastGeneratedID: map["last-generated-id"]?.string ?? "0-0",
            firstEntryID: entryID(map["first-entry"]), lastEntryID: entryID(map["last-entry"]))
    }

    // MARK: Reply shapes

    static func milliseconds(_ d: Duration) -> Int {
        let (s, atto) = d.components
        return Int(s) * 1000 + Int(atto / 1_000_000_000_000_000)
    }

    static func map(_ reply: RedisReply) -> [String: RedisReply] {
        guard let items = reply.array else { return [:] }
        var out: [String: RedisReply] = [:]
        var i = 0
        while i + 1 < items.count {
            if let key = items[i].string { out[key] = items[i + 1] }
            i += 2
        }
        return out
    }

    /// The entries `RedisConnection` read for a command's `StreamReplyShape`; nil is none.
    static func entries(_ reply: RedisReply) throws(RedisError) -> [StreamEntry] {
        if let entries = reply.entries { return entries }
        if reply.isNull { return [] }
        throw RedisError(.unexpectedReply, "expected stream entries, got \(reply)")
    }

    /// `[[stream, entries], …]` or nil (BLOCK timed out); public for replies that carry an XREADGROUP's
    /// reply inside (ServiceKit's fenced read script).
    public static func streamReads(_ reply: RedisReply) throws(RedisError) -> [StreamReadResult] {
        if reply.isNull { return [] }
        guard let streams = reply.array else { throw RedisError(.unexpectedReply, "expected streams, got \(reply)") }
        var out: [StreamReadResult] = []
        for s in streams {
            guard let parts = s.array, parts.count == 2, let key = parts[0].string else {
                throw RedisError(.unexpectedReply, "malformed stream read \(s)")
            }
            out.append((stream: key, entries: try entries(parts[1])))
        }
        return out
    }
}
