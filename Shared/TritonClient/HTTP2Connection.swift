import CNghttp2
import Logging
import NIOCore
import NIOPosix
import Synchronization
import TECore

/// The gRPC methods of `inference.GRPCInferenceService` this client calls.
enum GRPCMethod: String, Sendable {
    case serverLive = "/inference.GRPCInferenceService/ServerLive"
    case serverReady = "/inference.GRPCInferenceService/ServerReady"
    case modelReady = "/inference.GRPCInferenceService/ModelReady"
    case modelMetadata = "/inference.GRPCInferenceService/ModelMetadata"
    case modelConfig = "/inference.GRPCInferenceService/ModelConfig"
    case modelInfer = "/inference.GRPCInferenceService/ModelInfer"
}

struct ConnectionSettings: Sendable {
    var host: String
    var port: Int
    var connectTimeout: Duration
    var reconnectBackoff: RetryPolicy
    var initialWindowSize: Int32
    var connectionWindowSize: Int32
    /// HTTP/2 PING after this long without a read (nil: no keepalive); see `KeepaliveState`.
    var keepaliveInterval: Duration?
    var keepaliveTimeout: Duration
}

/// The timer delay until `instant`, rounded up to the microsecond so that a timer never fires before the
/// instant it serves.
func delay(until instant: ContinuousClock.Instant) -> TimeAmount {
    let (s, atto) = (instant - ContinuousClock.now).components
    return .microseconds(max(0, s * 1_000_000 + (atto + 999_999_999_999) / 1_000_000_000_000))
}

/// What changes while a call runs. Lives in `GRPCCall.progress`, so only the connection's event loop touches it.
struct CallProgress: Sendable {
    var continuation: CheckedContinuation<[UInt8], any Error>?
    var finished = false
    var cancelRequested = false
    var streamID: Int32 = 0
    /// When the call's stream was submitted (a deadline passing with nothing read since then triggers a PING).
    var submittedAt: ContinuousClock.Instant?
    var sent = 0
    var body: [UInt8] = []
    var httpStatus = 0
    var grpcStatus: Int?
    var grpcMessage: String?
}

/// One unary gRPC call, as the caller hands it to a connection's event loop.
///
/// Sendable without `@unchecked`: the request is immutable, and everything that changes while the call runs is in
/// `progress`, a `NIOLoopBoundBox` that can only be read or written on the connection's event loop.
final class GRPCCall: Sendable {
    let method: GRPCMethod
    let request: [UInt8]
    let deadline: ContinuousClock.Instant
    let file: String
    let line: Int
    let progress: NIOLoopBoundBox<CallProgress>

    init(
        method: GRPCMethod, request: [UInt8], deadline: ContinuousClock.Instant, file: String, line: Int,
        eventLoop: any EventLoop
    ) {
        self.method = method
        self.request = request
        self.deadline = deadline
        self.file = file
        self.line = line
        progress = .makeBoxSendingValue(CallProgress(), eventLoop: eventLoop)
    }

    // Everything below runs on the connection's event loop.

    var isFinished: Bool { progress.value.finished }

    func succeed() {
        let (continuation, body): (CheckedContinuation<[UInt8], any Error>?, [UInt8]) = progress.withValue { p in
            guard !p.finished else { return (nil, []) }
            p.finished = true
            defer {
                p.continuation = nil
                p.body = []
            }
            return (p.continuation, p.body)
        }
        continuation?.resume(returning: body)
    }

    func fail(_ code: TritonError.Code, _ message: String, grpcStatus: Int? = nil) {
        let continuation: CheckedContinuation<[UInt8], any Error>? = progress.withValue { p in
            guard !p.finished else { return nil }
            p.finished = true
            defer {
                p.continuation = nil
                p.body = []
            }
            return p.continuation
        }
        continuation?.resume(
            throwing: TritonError(
                code: code, message: message, grpcStatus: grpcStatus, file: file, line: line))
    }
}

/// Counters a test can read to see how calls were routed (plain relaxed atomics: they order nothing).
final class ConnectionCounters: Sendable {
    let callsStartedOnLoop = Atomic<Int>(0)
    let callsHandedOver = Atomic<Int>(0)
    let connectsStarted = Atomic<Int>(0)
    let streamsReset = Atomic<Int>(0)
    let keepalivePings = Atomic<Int>(0)
    /// Connections dropped because a PING went unanswered.
    let keepaliveTimeouts = Atomic<Int>(0)
}

/// One HTTP/2 (h2c, prior knowledge) connection to a Triton gRPC endpoint, multiplexing calls as streams, driven
/// by one SwiftNIO event loop: the socket is a NIO `Channel` on `eventLoop`, and the nghttp2 session, the calls in
/// flight and the lifecycle (lazy connect, reconnect, deadlines) are confined to that loop.
///
/// A call made on `eventLoop` itself starts synchronously (no thread switch); from anywhere else it is handed over
/// with `execute`. Completions resume the caller's continuation on `eventLoop`.
final class HTTP2Connection: Sendable {
    let eventLoop: any EventLoop
    let counters = ConnectionCounters()
    private let core: NIOLoopBoundBox<ConnectionCore>
    private let closed = Atomic<Bool>(false)

    init(eventLoop: any EventLoop, settings: ConnectionSettings, logger: Logger) {
        self.eventLoop = eventLoop
        core = .makeBoxSendingValue(
            ConnectionCore(eventLoop: eventLoop, settings: settings, logger: logger, counters: counters),
            eventLoop: eventLoop)
    }

    /// Runs one unary call; the raw gRPC response body (framed) on success. Runs isolated to the caller's actor
    /// (`isolation`), so a caller already on `eventLoop` submits the stream without leaving the thread.
    func call(
        _ method: GRPCMethod, request: [UInt8], deadline: ContinuousClock.Instant, file: String, line: Int,
        isolation: isolated (any Actor)? = #isolation
    ) async throws -> [UInt8] {
        if closed.load(ordering: .relaxed) {
            throw TritonError(code: .cancelled, message: "Triton client is closed", file: file, line: line)
        }
        let call = GRPCCall(
            method: method, request: request, deadline: deadline, file: file, line: line, eventLoop: eventLoop)
        let eventLoop = self.eventLoop
        let core = self.core
        let counters = self.counters
        return try await withTaskCancellationHandler {
            // Capturing the isolated parameter isolates this closure to the caller's actor too; otherwise it would
            // run on the global executor and the `inEventLoop` test below would never hold.
            _ = isolation
            return try await withCheckedThrowingContinuation {
                (continuation: CheckedContinuation<[UInt8], any Error>) in
                if eventLoop.inEventLoop {
                    counters.callsStartedOnLoop.add(1, ordering: .relaxed)
                    core.value.start(call, continuation)
                } else {
                    counters.callsHandedOver.add(1, ordering: .relaxed)
                    eventLoop.execute { core.value.start(call, continuation) }
                }
            }
        } onCancel: {
            // Always through the loop's queue, even from the loop: cancellation can fire while the canceller is
            // inside code that holds the session, and nghttp2 must not be re-entered.
            eventLoop.execute { core.value.cancel(call) }
        }
    }

    /// Fails calls in flight with `.cancelled` and closes the channel. Idempotent; later calls fail at once.
    func shutdown() {
        guard !closed.exchange(true, ordering: .relaxed) else { return }
        if eventLoop.inEventLoop {
            core.value.close()
        } else {
            let core = self.core
            eventLoop.execute { core.value.close() }
        }
    }
}

/// The driver of the connection's lifecycle (`ConnectionStateMachine`) on its event loop: performs the connects,
/// owns the calls waiting for a connect and the single deadline timer of all the connection's calls.
final class ConnectionCore {
    let eventLoop: any EventLoop
    let settings: ConnectionSettings
    let logger: Logger
    let counters: ConnectionCounters
    let authority: String
    var machine: ConnectionStateMachine<GRPCSessionHandler>
    /// Calls waiting for the connection to come up.
    var waiting: [GRPCCall] = []
    /// One timer for all calls, armed at (or before) the earliest deadline of any unfinished call; when it fires it
    /// expires what is due and re-arms for the next. Most calls finish first and never touch it again.
    var deadlineTimer: Scheduled<Void>?
    var timerDeadline: ContinuousClock.Instant?

    init(eventLoop: any EventLoop, settings: ConnectionSettings, logger: Logger, counters: ConnectionCounters) {
        self.eventLoop = eventLoop
        self.settings = settings
        self.logger = logger
        self.counters = counters
        authority = "\(settings.host):\(settings.port)"
        machine = ConnectionStateMachine(backoff: settings.reconnectBackoff)
    }

    // MARK: calls

    func start(_ call: GRPCCall, _ continuation: CheckedContinuation<[UInt8], any Error>) {
        let cancelled = call.progress.withValue { p in
            p.continuation = continuation
            return p.cancelRequested
        }
        if cancelled {
            call.fail(.cancelled, "call cancelled")
            return
        }
        if ContinuousClock.now >= call.deadline {
            call.fail(.deadlineExceeded, "deadline passed before the call was sent")
            return
        }
        switch machine.callStarted(now: .now) {
        case .submit(let session):
            armDeadline(call.deadline)
            session.submit(call)
        case .wait:
            armDeadline(call.deadline)
            waiting.append(call)
        case .waitAndConnect:
            armDeadline(call.deadline)
            waiting.append(call)
            connect()
        case .failUnreachable(let reason):
            call.fail(.connection, "\(authority) unreachable: \(reason)")
        case .failClosed:
            call.fail(.cancelled, "Triton client is closed")
        }
    }

    func cancel(_ call: GRPCCall) {
        call.progress.value.cancelRequested = true
        guard call.progress.value.continuation != nil, !call.isFinished else { return }
        call.fail(.cancelled, "call cancelled")
        for session in machine.sessions { session.reset(call) }
    }

    // MARK: deadlines

    func armDeadline(_ deadline: ContinuousClock.Instant) {
        if let armed = timerDeadline, armed <= deadline { return }
        deadlineTimer?.cancel()
        timerDeadline = deadline
        deadlineTimer = eventLoop.assumeIsolated().scheduleTask(in: delay(until: deadline)) { [self] in
            deadlineTimerFired()
        }
    }

    func deadlineTimerFired() {
        deadlineTimer = nil
        timerDeadline = nil
        let now = ContinuousClock.now
        var next: ContinuousClock.Instant?
        if !waiting.isEmpty {
            for call in waiting where !call.isFinished {
                if call.deadline <= now {
                    call.fail(.deadlineExceeded, "deadline passed while connecting to \(authority)")
                } else if next == nil || call.deadline < next! {
                    next = call.deadline
                }
            }
            waiting.removeAll { $0.isFinished }
        }
        for session in machine.sessions { session.expire(now: now, next: &next) }
        if let next { armDeadline(next) }
    }

    // MARK: connection lifecycle

    func connect() {
        counters.connectsStarted.add(1, ordering: .relaxed)
        let core = NIOLoopBound(self, eventLoop: eventLoop)
        let (s, atto) = settings.connectTimeout.components
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(.nanoseconds(s * 1_000_000_000 + atto / 1_000_000_000))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(GRPCSessionHandler(core: core.value))
                }
            }
        let connecting: EventLoopFuture<any Channel>
        if let address = try? SocketAddress(ipAddress: settings.host, port: settings.port) {
            connecting = bootstrap.connect(to: address)
        } else {
            connecting = bootstrap.connect(host: settings.host, port: settings.port)
        }
        connecting.assumeIsolated().whenComplete { [self] result in
            switch result {
            case .success(let channel):
                // close() ran while connecting: the handler saw a closed core and closes the channel itself;
                // this covers a channel that had not become active yet.
                if machine.isClosed { channel.close(promise: nil) }
            case .failure(let error):
                connectFailed(Self.describe(error))
            }
        }
    }

    func connectFailed(_ reason: String) {
        guard machine.connectFailed(reason: reason, now: .now, random: Double.random(in: 0..<1)) else { return }
        logger.warning("triton connect failed", metadata: ["endpoint": "\(authority)", "reason": "\(reason)"])
        let calls = waiting
        waiting.removeAll()
        for call in calls { call.fail(.connection, "connect to \(authority) failed: \(reason)") }
    }

    /// The session handler's channel is active and its SETTINGS are queued: send the waiting calls.
    func sessionReady(_ session: GRPCSessionHandler) -> Bool {
        guard machine.sessionReady(session) else { return false }
        logger.debug("triton connected", metadata: ["endpoint": "\(authority)"])
        let calls = waiting
        waiting.removeAll()
        for call in calls where !call.isFinished { session.submit(call) }
        return true
    }

    /// The server is ending the session (GOAWAY) or its stream IDs ran out: new calls go to a new connection while
    /// its calls in flight finish on it.
    func sessionGoingAway(_ session: GRPCSessionHandler, reason: String) {
        guard machine.sessionGoingAway(session) else { return }
        logger.info("triton session going away", metadata: ["endpoint": "\(authority)", "reason": "\(reason)"])
    }

    /// The session's channel went away; its calls have been failed. The next call reconnects.
    func sessionEnded(_ session: GRPCSessionHandler, reason: String) {
        guard machine.sessionEnded(session) else { return }
        logger.warning("triton connection lost", metadata: ["endpoint": "\(authority)", "reason": "\(reason)"])
    }

    func close() {
        let sessions = machine.close()
        deadlineTimer?.cancel()
        deadlineTimer = nil
        timerDeadline = nil
        let calls = waiting
        waiting.removeAll()
        for call in calls { call.fail(.cancelled, "Triton client closed") }
        for session in sessions { session.close(failing: "Triton client closed") }
    }

    var isClosed: Bool { machine.isClosed }

    static func describe(_ error: any Error) -> String {
        // IOError's own description nests "(error set): … (errno: N)"; the system's message alone reads better.
        if let error = error as? IOError { return String(cString: strerror(error.errnoCode)) }
        if let error = error as? ChannelError, case .connectTimeout(let amount) = error {
            return "connect timed out after \(Duration.nanoseconds(amount.nanoseconds))"
        }
        return "\(error)"
    }
}

/// The HTTP/2 session of one channel: feeds received bytes to nghttp2 (`nghttp2_session_mem_recv`) and writes what
/// `nghttp2_session_mem_send` produces, once per batch (end of a read, or one queued flush per event-loop tick).
/// The nghttp2 session is created in `handlerAdded` and deleted in `handlerRemoved`.
final class GRPCSessionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let core: ConnectionCore
    var session: OpaquePointer?
    var context: ChannelHandlerContext?
    var streams: [Int32: GRPCCall] = [:]
    var activated = false
    var ended = false
    var flushQueued = false
    var closeReason: String?
    var headerBytes: [UInt8] = []
    var headerRanges: [(Int, Int, Int, Int)] = []
    var keepalive: KeepaliveState?
    var keepaliveTimer: Scheduled<Void>?

    init(core: ConnectionCore) {
        self.core = core
        headerBytes.reserveCapacity(512)
    }

    // MARK: channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        var callbacks: OpaquePointer?
        nghttp2_session_callbacks_new(&callbacks)
        Self.install(callbacks)
        var newSession: OpaquePointer?
        // nghttp2 copies the callbacks: the table can go at once.
        let rc = nghttp2_session_client_new(&newSession, callbacks, Unmanaged.passUnretained(self).toOpaque())
        nghttp2_session_callbacks_del(callbacks)
        guard rc == 0, let newSession else {
            closeReason = "nghttp2_session_client_new: \(rc)"
            context.close(promise: nil)
            return
        }
        session = newSession
        var entries = [
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_ENABLE_PUSH.rawValue), value: 0),
            nghttp2_settings_entry(
                settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue),
                value: UInt32(core.settings.initialWindowSize))
        ]
        _ = nghttp2_submit_settings(newSession, UInt8(NGHTTP2_FLAG_NONE.rawValue), &entries, entries.count)
        // The connection-level window is not covered by SETTINGS: raise it with a WINDOW_UPDATE.
        _ = nghttp2_session_set_local_window_size(
            newSession, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, core.settings.connectionWindowSize)
        if context.channel.isActive { activate() }
    }

    func channelActive(context: ChannelHandlerContext) {
        activate()
        context.fireChannelActive()
    }

    private func activate() {
        guard !activated, session != nil, let context else { return }
        activated = true
        if !core.sessionReady(self) {
            // The client was closed (or this connection superseded) while connecting.
            closeReason = core.isClosed ? "Triton client closed" : "superseded connection"
            context.close(promise: nil)
            return
        }
        if let interval = core.settings.keepaliveInterval {
            let now = ContinuousClock.now
            keepalive = KeepaliveState(interval: interval, timeout: core.settings.keepaliveTimeout, now: now)
            perform(keepalive!.started(now: now))
        }
        flush()
    }

    // MARK: keepalive

    /// Does what `KeepaliveState` answered.
    private func perform(_ action: KeepaliveState.Action) {
        guard let session, let context, !ended else { return }
        switch action {
        case .none:
            return
        case .arm(let at):
            arm(at, context: context)
        case .sendPing(let at):
            core.counters.keepalivePings.add(1, ordering: .relaxed)
            _ = nghttp2_submit_ping(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), nil)
            queueFlush()
            if let at { arm(at, context: context) }
        case .declareDead:
            core.counters.keepaliveTimeouts.add(1, ordering: .relaxed)
            closeReason = "no answer to an HTTP/2 PING within \(core.settings.keepaliveTimeout)"
            // At once, not at the channel's close: the next call must find the connection gone and reconnect.
            end(reason: closeReason!)
            context.close(promise: nil)
        }
    }

    private func arm(_ at: ContinuousClock.Instant, context: ChannelHandlerContext) {
        keepaliveTimer?.cancel()
        keepaliveTimer = context.eventLoop.assumeIsolated().scheduleTask(in: delay(until: at)) { [self] in
            keepaliveTimer = nil
            guard keepalive != nil else { return }
            perform(keepalive!.timerFired(now: .now, callsInFlight: !streams.isEmpty))
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        guard let session else { return }
        if keepalive != nil { perform(keepalive!.bytesRead(now: .now)) }
        let consumed = buffer.withUnsafeReadableBytes { bytes in
            nghttp2_session_mem_recv(session, bytes.baseAddress!.assumingMemoryBound(to: UInt8.self), bytes.count)
        }
        if consumed < 0 {
            closeReason = "HTTP/2 protocol error: \(String(cString: nghttp2_strerror(Int32(consumed))))"
            end(reason: closeReason!)
            context.close(promise: nil)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // SETTINGS/PING acks, WINDOW_UPDATEs and DATA the new window allows: one write for the whole read.
        flush()
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        end(reason: closeReason ?? "closed by peer")
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if closeReason == nil { closeReason = ConnectionCore.describe(error) }
        context.close(promise: nil)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        end(reason: closeReason ?? "channel closed")
        if let session { nghttp2_session_del(session) }
        session = nil
        self.context = nil
    }

    /// Fails the calls still in flight with `.connection` and tells the core; idempotent.
    private func end(reason: String) {
        guard !ended else { return }
        ended = true
        keepaliveTimer?.cancel()
        keepaliveTimer = nil
        let calls = streams.values
        streams = [:]
        for call in calls where !call.isFinished {
            call.fail(.connection, "connection to \(core.authority) lost: \(reason)")
        }
        // A channel that never became active failed its connect: the connect future reports that, with the reason.
        if activated { core.sessionEnded(self, reason: reason) }
    }

    /// close(): fails the calls in flight with `.cancelled`, then closes the channel.
    func close(failing message: String) {
        closeReason = message
        let calls = streams.values
        streams = [:]
        for call in calls where !call.isFinished { call.fail(.cancelled, message) }
        context?.close(promise: nil)
    }

    // MARK: calls

    func submit(_ call: GRPCCall) {
        guard let session else {
            call.fail(.connection, "connection to \(core.authority) is gone")
            return
        }
        let now = ContinuousClock.now
        let timeout = GRPCFraming.timeoutHeader(call.deadline - now)
        headerBytes.removeAll(keepingCapacity: true)
        headerRanges.removeAll(keepingCapacity: true)
        func add(_ name: String, _ value: String) {
            let n0 = headerBytes.count
            headerBytes.append(contentsOf: name.utf8)
            let v0 = headerBytes.count
            headerBytes.append(contentsOf: value.utf8)
            headerRanges.append((n0, v0 - n0, v0, headerBytes.count - v0))
        }
        add(":method", "POST")
        add(":scheme", "http")
        add(":path", call.method.rawValue)
        add(":authority", core.authority)
        add("content-type", "application/grpc")
        add("te", "trailers")
        add("grpc-timeout", timeout)
        add("user-agent", "te-triton-client/1.0")
        var provider = nghttp2_data_provider()
        provider.source.ptr = nil
        provider.read_callback = { _, streamID, buffer, length, flags, _, userData in
            let handler = Unmanaged<GRPCSessionHandler>.fromOpaque(userData!).takeUnretainedValue()
            guard let call = handler.streams[streamID], let buffer else {
                flags!.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
                return 0
            }
            let sent = call.progress.value.sent
            let n = min(length, call.request.count - sent)
            call.request.withUnsafeBytes { bytes in
                UnsafeMutableRawPointer(buffer).copyMemory(from: bytes.baseAddress! + sent, byteCount: n)
            }
            call.progress.value.sent = sent + n
            if sent + n == call.request.count { flags!.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue }
            return n
        }
        let streamID: Int32 = headerBytes.withUnsafeMutableBufferPointer { bytes in
            let base = bytes.baseAddress!
            return withUnsafeTemporaryAllocation(of: nghttp2_nv.self, capacity: headerRanges.count) { nva in
                for (i, r) in headerRanges.enumerated() {
                    nva[i] = nghttp2_nv(
                        name: base + r.0, value: base + r.2, namelen: r.1, valuelen: r.3,
                        flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue))
                }
                return nghttp2_submit_request(session, nil, nva.baseAddress, headerRanges.count, &provider, nil)
            }
        }
        if streamID < 0 {
            // Stream IDs exhausted or session going away (GOAWAY): this connection can take no more; a new one will.
            call.fail(
                .connection, "cannot open a stream on \(core.authority): \(String(cString: nghttp2_strerror(streamID)))"
            )
            core.sessionGoingAway(self, reason: String(cString: nghttp2_strerror(streamID)))
            if nghttp2_session_want_read(session) == 0 || streamID == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE.rawValue {
                context?.close(promise: nil)
            }
            return
        }
        call.progress.withValue { p in
            p.streamID = streamID
            p.submittedAt = now
            p.body.reserveCapacity(64)
        }
        streams[streamID] = call
        queueFlush()
    }

    /// RST_STREAM for a call that was failed locally (cancelled, deadline).
    func reset(_ call: GRPCCall) {
        let streamID = call.progress.value.streamID
        // Stream IDs are per session: the same ID on another session is another call.
        guard streamID > 0, let session, streams[streamID] === call else { return }
        _ = nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), streamID, NGHTTP2_CANCEL.rawValue)
        core.counters.streamsReset.add(1, ordering: .relaxed)
        queueFlush()
    }

    func expire(now: ContinuousClock.Instant, next: inout ContinuousClock.Instant?) {
        for call in streams.values where !call.isFinished {
            if call.deadline <= now {
                call.fail(.deadlineExceeded, "deadline passed; stream \(call.progress.value.streamID) cancelled")
                reset(call)
                if let submitted = call.progress.value.submittedAt,
                    let action = keepalive?.callExpired(sentAt: submitted, now: now)
                {
                    perform(action)
                }
            } else if next == nil || call.deadline < next! {
                next = call.deadline
            }
        }
    }

    // MARK: output

    /// Coalesces the frames of everything submitted during this tick into one write.
    private func queueFlush() {
        guard !flushQueued, let context else { return }
        flushQueued = true
        context.eventLoop.assumeIsolated().execute { [self] in flush() }
    }

    private func flush() {
        flushQueued = false
        guard let session, let context, activated, !ended else { return }
        var out: ByteBuffer?
        while true {
            var data: UnsafePointer<UInt8>?
            let length = nghttp2_session_mem_send(session, &data)
            if length < 0 {
                closeReason = "nghttp2 send error: \(String(cString: nghttp2_strerror(Int32(length))))"
                context.close(promise: nil)
                return
            }
            guard length > 0, let data else { break }
            if out == nil { out = context.channel.allocator.buffer(capacity: max(length, 512)) }
            // nghttp2's buffer is only valid until the next mem_send: copy.
            out!.writeBytes(UnsafeRawBufferPointer(start: data, count: length))
        }
        if let out { context.writeAndFlush(wrapOutboundOut(out), promise: nil) }
        if nghttp2_session_want_read(session) == 0, nghttp2_session_want_write(session) == 0 {
            closeReason = "server ended the HTTP/2 session (GOAWAY)"
            context.close(promise: nil)
        }
    }

    // MARK: nghttp2 callbacks (called from mem_recv/mem_send, i.e. on the event loop)

    private static func install(_ cbs: OpaquePointer?) {
        nghttp2_session_callbacks_set_on_frame_recv_callback(cbs) { _, frame, userData in
            guard let frame, UInt32(frame.pointee.hd.type) == NGHTTP2_GOAWAY.rawValue else { return 0 }
            let handler = Unmanaged<GRPCSessionHandler>.fromOpaque(userData!).takeUnretainedValue()
            let goaway = frame.pointee.goaway
            handler.core.sessionGoingAway(
                handler, reason: "GOAWAY (error code \(goaway.error_code), last stream \(goaway.last_stream_id))")
            return 0
        }
        nghttp2_session_callbacks_set_on_header_callback(cbs) {
            _, frame, name, nameLength, value, valueLength, _, userData in
            guard let frame, let name, let value else { return 0 }
            let handler = Unmanaged<GRPCSessionHandler>.fromOpaque(userData!).takeUnretainedValue()
            guard UInt32(frame.pointee.hd.type) == NGHTTP2_HEADERS.rawValue,
                let call = handler.streams[frame.pointee.hd.stream_id]
            else { return 0 }
            let n = UnsafeBufferPointer(start: name, count: nameLength)
            let v = UnsafeBufferPointer(start: value, count: valueLength)
            if n.elementsEqual(":status".utf8) {
                call.progress.value.httpStatus = Int(String(decoding: v, as: UTF8.self)) ?? 0
            } else if n.elementsEqual("grpc-status".utf8) {
                call.progress.value.grpcStatus = Int(String(decoding: v, as: UTF8.self)) ?? 2
            } else if n.elementsEqual("grpc-message".utf8) {
                call.progress.value.grpcMessage = GRPCFraming.decodeMessage(v)
            }
            return 0
        }
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs) { _, _, streamID, data, length, userData in
            let handler = Unmanaged<GRPCSessionHandler>.fromOpaque(userData!).takeUnretainedValue()
            if let call = handler.streams[streamID], let data {
                call.progress.withValue { p in
                    if !p.finished { p.body.append(contentsOf: UnsafeBufferPointer(start: data, count: length)) }
                }
            }
            return 0
        }
        nghttp2_session_callbacks_set_on_stream_close_callback(cbs) { _, streamID, errorCode, userData in
            let handler = Unmanaged<GRPCSessionHandler>.fromOpaque(userData!).takeUnretainedValue()
            guard let call = handler.streams.removeValue(forKey: streamID), !call.isFinished else { return 0 }
            let failure = call.progress.withValue { p in
                GRPCFraming.outcome(
                    httpStatus: p.httpStatus, grpcStatus: p.grpcStatus, grpcMessage: p.grpcMessage, resetCode: errorCode
                )
            }
            if let failure {
                call.fail(failure.code, failure.message, grpcStatus: failure.grpcStatus)
            } else {
                call.succeed()
            }
            return 0
        }
    }
}
