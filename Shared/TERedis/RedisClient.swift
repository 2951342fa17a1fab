import Logging

/// One connection to Redis, driven on its own thread. Commands from many tasks are serialised on
/// that thread in submission order. When the connection breaks, the failing command throws a
/// retriable `RedisError` and the next command reconnects (with capped, jittered backoff after
/// failed attempts). A blocking read (XREAD/XREADGROUP with BLOCK) holds the connection for its
/// block time: give it a client of its own.
public final class RedisClient: Sendable {
    public let configuration: RedisConfiguration
    public let name: String
    /// nil on a cluster, where `cluster` holds one connection per node instead.
    private let thread: RedisIOThread?
    let cluster: RedisClusterClient?

    public init(configuration: RedisConfiguration, name: String = "redis", logger: Logger = Logger(label: "redis")) {
        self.configuration = configuration
        self.name = name
        if let settings = configuration.cluster {
            self.thread = nil
            self.cluster = RedisClusterClient(
                configuration: configuration, settings: settings, name: name, logger: logger)
        } else {
            self.thread = RedisIOThread(name: name, configuration: configuration, logger: logger)
            self.cluster = nil
        }
    }

    deinit { close() }

    /// Finishes the queued commands, then disconnects and ends the I/O thread. Later commands throw
    /// `RedisError(.closed)`.
    public func close() {
        thread?.close()
        cluster?.close()
    }

    private func run<T: Sendable>(_ body: @escaping @Sendable (RedisConnection) throws(RedisError) -> T)
        async throws(RedisError) -> T
    {
        let result: Result<T, RedisError> = await withCheckedContinuation { continuation in
            let accepted = thread?.submit { connection in
                continuation.resume(returning: Result { () throws(RedisError) -> T in try body(connection) })
            }
            if accepted != true {
                continuation.resume(returning: .failure(RedisError(.closed, "client \(name) is closed")))
            }
        }
        return try result.get()
    }

    /// Sends one command; an error reply throws `RedisError(.server)`.
    @discardableResult
    public func send(_ command: RedisCommand) async throws(RedisError) -> RedisReply {
        try await send(command, extraTimeout: nil)
    }

    @discardableResult
    public func send(_ args: String...) async throws(RedisError) -> RedisReply {
        try await send(RedisCommand(args))
    }

    func send(_ command: RedisCommand, extraTimeout: Duration?) async throws(RedisError) -> RedisReply {
        if let cluster { return try await cluster.pipeline([command], extraTimeout: extraTimeout)[0].throwingError() }
        let replies = try await run { connection throws(RedisError) in
            try connection.execute([command], extraTimeout: extraTimeout)
        }
        return try replies[0].throwingError()
    }

    /// Sends all commands in one write and reads all replies (one round trip). Error replies are
    /// returned in place, not thrown; a broken connection throws.
    public func pipeline(_ commands: [RedisCommand]) async throws(RedisError) -> [RedisReply] {
        if commands.isEmpty { return [] }
        if let cluster { return try await cluster.pipeline(commands) }
        return try await run { connection throws(RedisError) in try connection.execute(commands) }
    }

    /// `pipeline`, and on a Redis Cluster its writes have reached every online replica of the masters they
    /// ran on when it returns (each node's share is followed by `WAIT`, replicas counted from the slot map),
    /// so a failover cannot take back what the caller goes on to treat as written (ingest's Kafka commit, a
    /// stage's next read). Fewer acknowledgements within `RedisClusterSettings.replicaWait` throw the
    /// retriable error: resend only writes that are idempotent. On a single node, `pipeline`.
    public func pipeline(_ commands: [RedisCommand], replicated: Bool) async throws(RedisError) -> [RedisReply] {
        if commands.isEmpty { return [] }
        if let cluster { return try await cluster.pipeline(commands, replicated: replicated) }
        return try await pipeline(commands)
    }

    /// One command as `pipeline(_:replicated:)` sends it; an error reply throws.
    @discardableResult
    public func send(_ command: RedisCommand, replicated: Bool) async throws(RedisError) -> RedisReply {
        try await pipeline([command], replicated: replicated)[0].throwingError()
    }

    /// Runs `commands` atomically as MULTI … EXEC in one round trip and returns their replies
    /// (error replies of individual commands in place). Throws if Redis rejected the transaction.
    public func transaction(_ commands: [RedisCommand]) async throws(RedisError) -> [RedisReply] {
        if commands.isEmpty { return [] }
        var all: [RedisCommand] = [RedisCommand("MULTI")]
        all.reserveCapacity(commands.count + 2)
        all.append(contentsOf: commands)
        all.append(RedisCommand("EXEC"))
        let replies: [RedisReply]
        if let cluster { replies = try await cluster.transaction(commands) } else { replies = try await pipeline(all) }
        for (i, reply) in replies.dropLast().enumerated() {
            if case .error(let message) = reply {
                throw RedisError(
                    .server, "transaction command \(i == 0 ? "MULTI" : commands[i - 1].name) rejected: \(message)")
            }
        }
        switch replies[replies.count - 1] {
        case .array(let results): return results
        case .error(let message): throw RedisError(.server, message)
        case .null: throw RedisError(.server, "EXECABORT: transaction aborted")
        case let other: throw RedisError(.unexpectedReply, "EXEC replied \(other)")
        }
    }

    public func ping() async throws(RedisError) {
        try await send(RedisCommand("PING"))
    }

    // MARK: Keys and values

    @discardableResult
    public func del(_ keys: [String]) async throws(RedisError) -> Int {
        Int(try await send(.del(keys)).int ?? 0)
    }

    public func set(_ key: String, _ value: String, expireSeconds: Int? = nil) async throws(RedisError) {
        try await send(.set(key, value, expireSeconds: expireSeconds))
    }

    public func set(_ key: String, bytes value: [UInt8], expireSeconds: Int? = nil) async throws(RedisError) {
        try await send(.set(key, bytes: value, expireSeconds: expireSeconds))
    }

    public func get(_ key: String) async throws(RedisError) -> String? {
        try await send(.get(key)).string
    }

    public func getBytes(_ key: String) async throws(RedisError) -> [UInt8]? {
        try await send(.get(key)).bytes
    }

    /// True when the key exists and got the timeout.
    @discardableResult
    public func expire(_ key: String, seconds: Int) async throws(RedisError) -> Bool {
        try await send(.expire(key, seconds: seconds)).int == 1
    }

    /// Time to live in seconds; nil when the key has none or does not exist.
    public func ttl(_ key: String) async throws(RedisError) -> Int? {
        let n = try await send("TTL", key).int ?? -2
        return n >= 0 ? Int(n) : nil
    }

    @discardableResult
    public func hset(_ key: String, fields: [(String, String)]) async throws(RedisError) -> Int {
        Int(try await send(.hset(key, fields: fields)).int ?? 0)
    }

    public func hgetall(_ key: String) async throws(RedisError) -> [String: String] {
        let items = try await send("HGETALL", key).array ?? []
        var out: [String: String] = [:]
        var i = 0
        while i + 1 < items.count {
            if let k = items[i].string, let v = items[i + 1].string { out[k] = v }
            i += 2
        }
        return out
    }

    /// KEYS: blocks the server over the whole keyspace; prefer `scan` outside tests and tools.
    public func keys(_ pattern: String) async throws(RedisError) -> [String] {
        (try await send("KEYS", pattern).array ?? []).compactMap(\.string)
    }

    /// Every key matching `pattern`, by iterating SCAN to the end.
    public func scan(match pattern: String, count: Int = 500, type: String? = nil) async throws(RedisError) -> [String]
    {
        guard let cluster else {
            return try await scan(match: pattern, count: count, type: type) { c throws(RedisError) in try await send(c)
            }
        }
        // Each master has its own keys and cursor.
        var keys: [String] = []
        for master in try await cluster.masters() {
            keys += try await scan(match: pattern, count: count, type: type) { c throws(RedisError) in
                try await cluster.send(c, to: master).throwingError()
            }
        }
        return keys
    }

    private func scan(
        match pattern: String, count: Int, type: String?,
        _ sendCommand: (RedisCommand) async throws(RedisError) -> RedisReply
    ) async throws(RedisError) -> [String] {
        var cursor = "0"
        var keys: [String] = []
        repeat {
            var args = ["SCAN", cursor, "MATCH", pattern, "COUNT", String(count)]
            if let type { args += ["TYPE", type] }
            let reply = try await sendCommand(RedisCommand(args))
            guard let parts = reply.array, parts.count == 2, let next = parts[0].string, let batch = parts[1].array
            else {
                throw RedisError(.unexpectedReply, "SCAN replied \(reply)")
            }
            keys.append(contentsOf: batch.compactMap(\.string))
            cursor = next
        } while cursor != "0"
        return keys
    }
}
