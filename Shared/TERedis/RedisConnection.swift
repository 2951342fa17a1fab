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
        for _ in commands {
            var raw: UnsafeMutableRawPointer?
            if redisGetReply(context, &raw) != REDIS_OK || raw == nil { throw fail(context, during: "read") }
            let reply = raw!.assumingMemoryBound(to: redisReply.self)
            replies.append(Self.parse(reply))
            freeReplyObject(raw)
        }
        return replies
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
