import CHiredis
import Foundation
import Logging
import TECore

/// Owns one hiredis `redisContext`. Used only by jobs on its client's executor thread (`RedisIOThread`),
/// which passes it to each job and frees the context when the client closes: hiredis contexts are not
/// thread-safe, and their calls block.
// @unchecked Sendable: every use is inside a job of the one `BlockingExecutor` that `RedisIOThread` owns,
// which runs one job at a time; `deinit` runs after the last job released it.
final class RedisConnection: @unchecked Sendable {
    private let configuration: RedisConfiguration
    private let logger: Logger
    private var context: UnsafeMutablePointer<redisContext>?
    /// Consecutive failed connection attempts under `configuration.reconnect`.
    private var backoff: RetryBackoff
    private var nextAttempt: ContinuousClock.Instant?
    private var everConnected = false

    init(configuration: RedisConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        self.backoff = RetryBackoff(configuration.reconnect)
    }

    deinit { disconnect() }

    func disconnect() {
        if let context { redisFree(context) }
        context = nil
    }

    var isConnected: Bool { context != nil }

    /// Connects now if not connected: a failure here means no command was written.
    func connectIfNeeded() throws(RedisError) { _ = try connected() }

    /// Sends `commands` in one write and reads their replies in order (one round trip). Error
    /// replies are returned in place; a broken connection or timeout drops the connection and throws
    /// a retriable error (the next call reconnects). `extraTimeout` lengthens the socket timeout
    /// for blocking commands.
    func execute(_ commands: [RedisCommand], extraTimeout: Duration? = nil) throws(RedisError) -> [RedisReply] {
        let context = try connected()
        if let extraTimeout {
            redisSetTimeout(context, Self.timeval(configuration.commandTimeout + extraTimeout))
        }
        defer {
            if extraTimeout != nil, let c = self.context {
                redisSetTimeout(c, Self.timeval(configuration.commandTimeout))
            }
        }
        for command in commands {
            let status = command.buffer.withUnsafeBufferPointer { bytes -> Int32 in
                let base = UnsafeRawPointer(bytes.baseAddress ?? UnsafePointer(bitPattern: 1)!)
                var argv: [UnsafePointer<CChar>?] = []
                argv.reserveCapacity(command.lengths.count)
                var offset = 0
                for n in command.lengths {
                    argv.append((base + offset).assumingMemoryBound(to: CChar.self))
                    offset += n
                }
                return argv.withUnsafeMutableBufferPointer { argvPointer in
                    command.lengths.withUnsafeBufferPointer { lengths in
                        redisAppendCommandArgv(
                            context, Int32(command.lengths.count), argvPointer.baseAddress, lengths.baseAddress)
                    }
                }
            }
            if status != REDIS_OK { throw fail(context, during: "append") }
        }
        var replies: [RedisReply] = []
        replies.reserveCapacity(commands.count)
        for command in commands {
            var raw: UnsafeMutableRawPointer?
            if redisGetReply(context, &raw) != REDIS_OK || raw == nil { throw fail(context, during: "read") }
            let reply = raw!.assumingMemoryBound(to: redisReply.self)
            replies.append(Self.parse(reply, shape: command.replyShape))
            freeReplyObject(raw)
        }
        return replies
    }

    /// A stream command's reply, its entry lists read as `.entries`; anything not of the shape (an
    /// error, nil, a malformed list) is parsed as any reply.
    private static func parse(_ reply: UnsafePointer<redisReply>, shape: StreamReplyShape?) -> RedisReply {
        guard let shape, reply.pointee.type == REDIS_REPLY_ARRAY else { return parse(reply) }
        let r = reply.pointee
        switch shape {
        case .entries:
            return entries(reply) ?? parse(reply)
        case .streams:
            var streams: [RedisReply] = []
            streams.reserveCapacity(r.elements)
            for i in 0..<r.elements {
                guard let s = r.element[i], s.pointee.type == REDIS_REPLY_ARRAY, s.pointee.elements == 2,
                    let key = s.pointee.element[0], let list = s.pointee.element[1]
                else {
                    streams.append(r.element[i].map { parse($0) } ?? .null)
                    continue
                }
                streams.append(.array([parse(key), entries(list) ?? parse(list)]))
            }
            return .array(streams)
        case .autoclaim:
            var parts: [RedisReply] = []
            parts.reserveCapacity(r.elements)
            for i in 0..<r.elements {
                guard let part = r.element[i] else {
                    parts.append(.null)
                    continue
                }
                parts.append(i == 1 ? entries(part) ?? parse(part) : parse(part))
            }
            return .array(parts)
        case .scriptStreams:
            var parts: [RedisReply] = []
            parts.reserveCapacity(r.elements)
            for i in 0..<r.elements {
                guard let part = r.element[i] else {
                    parts.append(.null)
                    continue
                }
                parts.append(i == 1 ? parse(part, shape: .streams) : parse(part))
            }
            return .array(parts)
        }
    }

    /// `[[id, [field, value, …] or nil], …]` as entries sharing one buffer: every name and value is
    /// copied once, into it. nil when the reply is not of that shape.
    private static func entries(_ list: UnsafePointer<redisReply>) -> RedisReply? {
        let r = list.pointee
        guard r.type == REDIS_REPLY_ARRAY else { return nil }
        // First pass: check the shape and size the buffers.
        var byteCount = 0
        var stringCount = 0
        for i in 0..<r.elements {
            guard let item = r.element[i], item.pointee.type == REDIS_REPLY_ARRAY, item.pointee.elements == 2,
                let id = item.pointee.element[0], id.pointee.type == REDIS_REPLY_STRING,
                let fields = item.pointee.element[1]
            else { return nil }
            if fields.pointee.type == REDIS_REPLY_NIL { continue }
            guard fields.pointee.type == REDIS_REPLY_ARRAY, fields.pointee.elements % 2 == 0 else { return nil }
            for k in 0..<fields.pointee.elements {
                guard let f = fields.pointee.element[k], f.pointee.type == REDIS_REPLY_STRING else { return nil }
                byteCount += f.pointee.len
            }
            stringCount += fields.pointee.elements
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(byteCount)
        var ends: [Int] = []
        ends.reserveCapacity(stringCount)
        // Entries are made once the buffers are complete: a copy taken earlier would copy them on the next append.
        var spans: [(id: String, first: Int, count: Int)] = []
        spans.reserveCapacity(r.elements)
        for i in 0..<r.elements {
            let item = r.element[i]!.pointee
            let id = text(item.element[0]!.pointee.str, item.element[0]!.pointee.len)
            let fields = item.element[1]!.pointee
            guard fields.type == REDIS_REPLY_ARRAY else {
                spans.append((id, 0, -1))  // deleted
                continue
            }
            let first = ends.count
            for k in 0..<fields.elements {
                let f = fields.element[k]!.pointee
                if let str = f.str, f.len > 0 {
                    bytes.append(contentsOf: UnsafeRawBufferPointer(start: str, count: f.len))
                }
                ends.append(bytes.count)
            }
            spans.append((id, first, fields.elements / 2))
        }
        var out: [StreamEntry] = []
        out.reserveCapacity(spans.count)
        for (id, first, count) in spans {
            if count < 0 {
                out.append(StreamEntry(id: id, fields: StreamFields([]), isDeleted: true))
            } else {
                out.append(
                    StreamEntry(id: id, fields: StreamFields(bytes: bytes, ends: ends, first: first, count: count)))
            }
        }
        return .entries(out)
    }

    private static func parse(_ reply: UnsafePointer<redisReply>) -> RedisReply {
        let r = reply.pointee
        switch r.type {
        case REDIS_REPLY_STRING:
            guard let str = r.str else { return .bulk([]) }
            return .bulk(Array(UnsafeRawBufferPointer(start: str, count: r.len)))
        case REDIS_REPLY_STATUS:
            return .status(text(r.str, r.len))
        case REDIS_REPLY_ERROR:
            return .error(text(r.str, r.len))
        case REDIS_REPLY_INTEGER:
            return .integer(Int64(r.integer))
        case REDIS_REPLY_NIL:
            return .null
        case REDIS_REPLY_ARRAY:
            var items: [RedisReply] = []
            items.reserveCapacity(r.elements)
            for i in 0..<r.elements {
                if let element = r.element[i] { items.append(parse(element)) } else { items.append(.null) }
            }
            return .array(items)
        default:
            // hiredis 0.14 speaks RESP2 only; any other type would be a newer library's.
            return .error("unknown reply type \(r.type)")
        }
    }

    private static func text(_ str: UnsafeMutablePointer<CChar>?, _ len: Int) -> String {
        guard let str else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: str, count: len), as: UTF8.self)
    }

    /// Turns the context's error into a `RedisError` and drops the connection: after an I/O or
    /// protocol error hiredis' context cannot be used again.
    private func fail(_ context: UnsafeMutablePointer<redisContext>, during step: String) -> RedisError {
        let savedErrno = errno
        let code = context.pointee.err
        let message = Self.errorString(context)
        disconnect()
        if code == REDIS_ERR_IO && (savedErrno == EAGAIN || savedErrno == EWOULDBLOCK) {
            return RedisError(.timeout, "no reply within the socket timeout (\(step))")
        }
        if code == REDIS_ERR_PROTOCOL { return RedisError(.unexpectedReply, "protocol error: \(message)") }
        logger.warning(
            "redis connection lost", metadata: ["redis": "\(configuration)", "error": "\(message)", "step": "\(step)"])
        return RedisError(.connection, message.isEmpty ? "connection lost" : message)
    }

    private static func errorString(_ context: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafePointer(to: &context.pointee.errstr) { tuple in
            UnsafeRawPointer(tuple).withMemoryRebound(to: CChar.self, capacity: 128) { String(cString: $0) }
        }
    }

    /// The live context, connecting first (after the backoff delay, if the last attempt failed).
    private func connected() throws(RedisError) -> UnsafeMutablePointer<redisContext> {
        if let context { return context }
        if let nextAttempt {
            let wait = nextAttempt - .now
            if wait > .zero { Thread.sleep(forTimeInterval: Self.seconds(wait)) }
        }
        do {
            let context = try connect()
            self.context = context
            if backoff.failures > 0 || everConnected {
                logger.info(
                    "redis connected", metadata: ["redis": "\(configuration)", "after_failures": "\(backoff.failures)"])
            }
            backoff.succeeded()
            nextAttempt = nil
            everConnected = true
            return context
        } catch {
            nextAttempt = .now + backoff.failed()
            throw error
        }
    }

    private func connect() throws(RedisError) -> UnsafeMutablePointer<redisContext> {
        guard
            let context = redisConnectWithTimeout(
                configuration.host, Int32(configuration.port), Self.timeval(configuration.connectTimeout))
        else {
            throw RedisError(.connection, "cannot allocate a redis context")
        }
        if context.pointee.err != 0 {
            let message = Self.errorString(context)
            redisFree(context)
            throw RedisError(.connection, "cannot connect to \(configuration.host):\(configuration.port): \(message)")
        }
        redisSetTimeout(context, Self.timeval(configuration.commandTimeout))
        _ = redisEnableKeepAlive(context)
        self.context = context
        do throws(RedisError) {
            var setup: [RedisCommand] = []
            if let password = configuration.password {
                setup.append(RedisCommand(configuration.username.map { ["AUTH", $0, password] } ?? ["AUTH", password]))
            }
            if configuration.database != 0 { setup.append(RedisCommand("SELECT", String(configuration.database))) }
            if !setup.isEmpty {
                for reply in try execute(setup) {
                    if case .error(let message) = reply {
                        disconnect()
                        // Never echo the AUTH arguments; the server's message names no secret.
                        throw RedisError(.connection, "connection setup refused: \(message)")
                    }
                }
            }
        } catch {
            disconnect()
            throw error
        }
        self.context = nil
        return context
    }

    static func timeval(_ d: Duration) -> timeval {
        let (seconds, attoseconds) = d.components
        return Glibc.timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
    }

    static func seconds(_ d: Duration) -> Double {
        let (s, atto) = d.components
        return Double(s) + Double(atto) / 1e18
    }
}
