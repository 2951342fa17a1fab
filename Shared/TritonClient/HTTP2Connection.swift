import CNghttp2
import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The gRPC methods of `inference.GRPCInferenceService` this client calls.
enum GRPCMethod: String, Sendable {
    case serverLive = "/inference.GRPCInferenceService/ServerLive"
    case serverReady = "/inference.GRPCInferenceService/ServerReady"
    case modelReady = "/inference.GRPCInferenceService/ModelReady"
    case modelMetadata = "/inference.GRPCInferenceService/ModelMetadata"
    case modelConfig = "/inference.GRPCInferenceService/ModelConfig"
    case modelInfer = "/inference.GRPCInferenceService/ModelInfer"
}

/// One unary gRPC call.
///
/// `@unchecked Sendable` is safe because of a strict hand-over: the submitting task writes `continuation` before it
/// enqueues the call through the connection's mailbox `Mutex` (whose lock/unlock orders that write before the I/O
/// thread's reads); from then on every `var` is read and written only by the connection's I/O thread.
/// The one field other threads touch afterwards, `cancelRequested`, is an `Atomic`.
final class GRPCCall: @unchecked Sendable {
    let method: GRPCMethod
    let request: [UInt8]
    let deadline: ContinuousClock.Instant
    let file: String
    let line: Int
    let cancelRequested = Atomic<Bool>(false)

    var continuation: CheckedContinuation<[UInt8], any Error>?
    /// Set once the I/O thread has processed the call's start command.
    var started = false
    var streamID: Int32 = 0
    var sent = 0
    var body: [UInt8] = []
    var httpStatus = 0
    var grpcStatus: Int?
    var grpcMessage: String?

    init(method: GRPCMethod, request: [UInt8], deadline: ContinuousClock.Instant, file: String, line: Int) {
        self.method = method
        self.request = request
        self.deadline = deadline
        self.file = file
        self.line = line
    }

    var isFinished: Bool { continuation == nil }

    func succeed(_ body: [UInt8]) {
        continuation?.resume(returning: body)
        continuation = nil
    }

    func fail(_ code: TritonError.Code, _ message: String, grpcStatus: Int? = nil) {
        continuation?.resume(throwing: TritonError(
            code: code, message: message, grpcStatus: grpcStatus, file: file, line: line))
        continuation = nil
    }
}

struct ConnectionSettings: Sendable {
    var host: String
    var port: Int
    var connectTimeout: Duration
    var reconnectBackoff: Duration
    var initialWindowSize: Int32
    var connectionWindowSize: Int32
}

/// One HTTP/2 (h2c, prior knowledge) connection to a Triton gRPC endpoint, multiplexing calls as streams.
///
/// All nghttp2 state, the socket and the calls in flight belong to one dedicated I/O thread (`ConnectionLoop`),
/// which polls the non-blocking socket and a wake-up pipe; no blocking call ever runs on Swift's cooperative pool.
/// Other threads talk to it only through `mailbox`.
final class HTTP2Connection: Sendable {
    enum Command: Sendable {
        case start(GRPCCall)
        case cancel(GRPCCall)
        case shutdown
    }
    struct Mailbox {
        var commands: [Command] = []
        var wakePending = false
        var closed = false
    }

    let mailbox = Mutex(Mailbox())
    let wakeRead: Int32
    let wakeWrite: Int32
    let settings: ConnectionSettings

    init(settings: ConnectionSettings, logger: Logger) {
        var fds: [Int32] = [-1, -1]
        precondition(pipe(&fds) == 0, "pipe() failed: errno \(errno)")
        for fd in fds {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        wakeRead = fds[0]
        wakeWrite = fds[1]
        self.settings = settings
        let thread = Thread { [self] in
            let loop = ConnectionLoop(connection: self, logger: logger)
            loop.run()
        }
        thread.name = "triton-io \(settings.host):\(settings.port)"
        thread.start()
    }

    /// Hands a command to the I/O thread; false when the connection is closed.
    @discardableResult
    func enqueue(_ command: Command) -> Bool {
        let wake: Bool? = mailbox.withLock { box in
            if box.closed { return nil }
            box.commands.append(command)
            if case .shutdown = command { box.closed = true }
            if box.wakePending { return false }
            box.wakePending = true
            return true
        }
        guard let wake else { return false }
        if wake {
            var byte: UInt8 = 1
            _ = write(wakeWrite, &byte, 1)
        }
        return true
    }

    /// Runs one unary call; the raw gRPC response body (framed) on success.
    func call(
        _ method: GRPCMethod, request: [UInt8], deadline: ContinuousClock.Instant, file: String, line: Int
    ) async throws -> [UInt8] {
        let call = GRPCCall(method: method, request: request, deadline: deadline, file: file, line: line)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<[UInt8], any Error>) in
                call.continuation = continuation
                if !enqueue(.start(call)) {
                    call.continuation = nil
                    continuation.resume(throwing: TritonError(
                        code: .cancelled, message: "Triton client is closed", file: file, line: line))
                }
            }
        } onCancel: {
            call.cancelRequested.store(true, ordering: .releasing)
            enqueue(.cancel(call))
        }
    }

    func shutdown() { enqueue(.shutdown) }
}

/// The I/O thread's state: socket, nghttp2 session, calls. Touched only by that thread.
private final class ConnectionLoop {
    enum State {
        case idle
        case connecting(giveUpAt: ContinuousClock.Instant)
        case ready
    }

    let connection: HTTP2Connection
    let settings: ConnectionSettings
    let logger: Logger
    let authority: String
    var state = State.idle
    var fd: Int32 = -1
    var session: OpaquePointer?
    var callbacks: OpaquePointer?
    /// Calls waiting for the connection to come up.
    var waiting: [GRPCCall] = []
    var streams: [Int32: GRPCCall] = [:]
    var lastConnectFailure: (at: ContinuousClock.Instant, reason: String)?
    /// Bytes nghttp2 produced that the socket did not take yet.
    var pendingOut: [UInt8] = []
    var pendingOutOffset = 0
    var drained: [Command] = []
    var running = true
    let readBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 * 1024, alignment: 16)
    var headerBytes: [UInt8] = []
    var headerRanges: [(Int, Int, Int, Int)] = []
    typealias Command = HTTP2Connection.Command

    init(connection: HTTP2Connection, logger: Logger) {
        self.connection = connection
        self.settings = connection.settings
        self.logger = logger
        self.authority = "\(settings.host):\(settings.port)"
        headerBytes.reserveCapacity(512)
        installCallbacks()
    }

    deinit {
        readBuffer.deallocate()
        if let callbacks { nghttp2_session_callbacks_del(callbacks) }
    }

    // MARK: loop

    func run() {
        var fds = [pollfd](repeating: pollfd(), count: 2)
        while running {
            drainMailbox()
            if !running { break }
            expireDeadlines()
            if case .ready = state { flush() }
            if case .ready = state, let session, nghttp2_session_want_read(session) == 0,
                nghttp2_session_want_write(session) == 0, pendingOutOffset >= pendingOut.count
            {
                disconnect(reason: "server ended the HTTP/2 session (GOAWAY)")
            }

            fds[0] = pollfd(fd: connection.wakeRead, events: Int16(POLLIN), revents: 0)
            var count = 1
            switch state {
            case .idle:
                break
            case .connecting:
                fds[1] = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                count = 2
            case .ready:
                let wantWrite = pendingOutOffset < pendingOut.count
                fds[1] = pollfd(fd: fd, events: Int16(POLLIN) | (wantWrite ? Int16(POLLOUT) : 0), revents: 0)
                count = 2
            }
            let timeout = pollTimeoutMilliseconds()
            let n = poll(&fds, nfds_t(count), timeout)
            if n < 0 {
                if errno == EINTR { continue }
                logger.error("poll failed", metadata: ["errno": "\(errno)"])
                continue
            }
            if fds[0].revents != 0 { drainWakePipe() }
            if count == 2 && fds[1].revents != 0 {
                switch state {
                case .idle: break
                case .connecting: finishConnect()
                case .ready: socketReady(revents: fds[1].revents)
                }
            }
            if case .connecting(let giveUpAt) = state, ContinuousClock.now >= giveUpAt {
                connectFailed("connect timed out after \(settings.connectTimeout)")
            }
        }
        teardown()
    }

    func drainMailbox() {
        connection.mailbox.withLock { box in
            swap(&box.commands, &drained)
            box.wakePending = false
        }
        for command in drained {
            switch command {
            case .start(let call): start(call)
            case .cancel(let call): cancel(call)
            case .shutdown: running = false
            }
        }
        drained.removeAll(keepingCapacity: true)
    }

    func drainWakePipe() {
        var sink = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        while withUnsafeMutableBytes(of: &sink, { read(connection.wakeRead, $0.baseAddress, $0.count) }) > 0 {}
    }

    func pollTimeoutMilliseconds() -> Int32 {
        var earliest: ContinuousClock.Instant?
        for call in waiting where !call.isFinished {
            if earliest == nil || call.deadline < earliest! { earliest = call.deadline }
        }
        for call in streams.values where !call.isFinished {
            if earliest == nil || call.deadline < earliest! { earliest = call.deadline }
        }
        if case .connecting(let giveUpAt) = state, earliest == nil || giveUpAt < earliest! { earliest = giveUpAt }
        guard let earliest else { return -1 }
        let remaining = earliest - ContinuousClock.now
        if remaining <= .zero { return 0 }
        let (s, atto) = remaining.components
        let ms = s * 1000 + (atto + 999_999_999_999_999) / 1_000_000_000_000_000
        return Int32(clamping: ms)
    }

    // MARK: calls

    func start(_ call: GRPCCall) {
        call.started = true
        if call.cancelRequested.load(ordering: .acquiring) {
            call.fail(.cancelled, "call cancelled")
            return
        }
        if ContinuousClock.now >= call.deadline {
            call.fail(.deadlineExceeded, "deadline passed before the call was sent")
            return
        }
        switch state {
        case .ready:
            submit(call)
        case .connecting:
            waiting.append(call)
        case .idle:
            if let failure = lastConnectFailure, ContinuousClock.now - failure.at < settings.reconnectBackoff {
                call.fail(.connection, "\(authority) unreachable: \(failure.reason)")
                return
            }
            waiting.append(call)
            startConnect()
        }
    }

    func cancel(_ call: GRPCCall) {
        guard call.started, !call.isFinished else { return }
        call.fail(.cancelled, "call cancelled")
        resetStream(of: call)
    }

    func resetStream(of call: GRPCCall) {
        if call.streamID > 0, let session {
            _ = nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), call.streamID,
                                          NGHTTP2_CANCEL.rawValue)
        }
    }

    func expireDeadlines() {
        let now = ContinuousClock.now
        if !waiting.isEmpty {
            for call in waiting where !call.isFinished && call.deadline <= now {
                call.fail(.deadlineExceeded, "deadline passed while connecting to \(authority)")
            }
            waiting.removeAll { $0.isFinished }
        }
        for call in streams.values where !call.isFinished && call.deadline <= now {
            call.fail(.deadlineExceeded, "deadline passed; stream \(call.streamID) cancelled")
            resetStream(of: call)
        }
    }

    func submit(_ call: GRPCCall) {
        guard let session else { return }
        let timeout = GRPCFraming.timeoutHeader(call.deadline - ContinuousClock.now)
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
        add(":authority", authority)
        add("content-type", "application/grpc")
        add("te", "trailers")
        add("grpc-timeout", timeout)
        add("user-agent", "te-triton-client/1.0")
        var provider = nghttp2_data_provider()
        provider.source.ptr = nil
        provider.read_callback = { session, streamID, buffer, length, flags, _, userData in
            let loop = Unmanaged<ConnectionLoop>.fromOpaque(userData!).takeUnretainedValue()
            guard let call = loop.streams[streamID], let buffer else {
                flags!.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
                return 0
            }
            let n = min(length, call.request.count - call.sent)
            call.request.withUnsafeBytes { bytes in
                UnsafeMutableRawPointer(buffer).copyMemory(from: bytes.baseAddress! + call.sent, byteCount: n)
            }
            call.sent += n
            if call.sent == call.request.count { flags!.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue }
            return n
        }
        let streamID: Int32 = headerBytes.withUnsafeMutableBufferPointer { bytes in
            let base = bytes.baseAddress!
            return withUnsafeTemporaryAllocation(of: nghttp2_nv.self, capacity: headerRanges.count) { nva in
                for (i, r) in headerRanges.enumerated() {
                    nva[i] = nghttp2_nv(name: base + r.0, value: base + r.2, namelen: r.1, valuelen: r.3,
                                        flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue))
                }
                return nghttp2_submit_request(session, nil, nva.baseAddress, headerRanges.count, &provider, nil)
            }
        }
        if streamID < 0 {
            // Stream IDs exhausted or session going away: this connection can take no more; a new one will.
            call.fail(.connection, "cannot open a stream on \(authority): \(String(cString: nghttp2_strerror(streamID)))")
            return
        }
        call.streamID = streamID
        call.body.reserveCapacity(64)
        streams[streamID] = call
    }

    // MARK: socket

    func startConnect() {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(settings.host, String(settings.port), &hints, &result)
        guard rc == 0, let info = result else {
            connectFailed("cannot resolve \(settings.host): \(String(cString: gai_strerror(rc)))")
            return
        }
        defer { freeaddrinfo(result) }
        let s = socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue)
                       | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard s >= 0 else {
            connectFailed("socket(): \(String(cString: strerror(errno)))")
            return
        }
        var one: Int32 = 1
        _ = setsockopt(s, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        fd = s
        if connect(s, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 {
            connected()
        } else if errno == EINPROGRESS {
            state = .connecting(giveUpAt: ContinuousClock.now + settings.connectTimeout)
        } else {
            connectFailed(String(cString: strerror(errno)))
        }
    }

    func finishConnect() {
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        _ = getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
        if error == 0 { connected() } else { connectFailed(String(cString: strerror(error))) }
    }

    func connectFailed(_ reason: String) {
        if fd >= 0 { close(fd); fd = -1 }
        state = .idle
        lastConnectFailure = (ContinuousClock.now, reason)
        logger.warning("triton connect failed", metadata: ["endpoint": "\(authority)", "reason": "\(reason)"])
        for call in waiting { call.fail(.connection, "connect to \(authority) failed: \(reason)") }
        waiting.removeAll()
    }

    func connected() {
        var newSession: OpaquePointer?
        let rc = nghttp2_session_client_new(&newSession, callbacks, Unmanaged.passUnretained(self).toOpaque())
        guard rc == 0, let newSession else {
            connectFailed("nghttp2_session_client_new: \(rc)")
            return
        }
        session = newSession
        var entries = [
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_ENABLE_PUSH.rawValue), value: 0),
            nghttp2_settings_entry(
                settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue),
                value: UInt32(settings.initialWindowSize)),
        ]
        _ = nghttp2_submit_settings(newSession, UInt8(NGHTTP2_FLAG_NONE.rawValue), &entries, entries.count)
        // The connection-level window is not covered by SETTINGS: raise it with a WINDOW_UPDATE.
        _ = nghttp2_session_set_local_window_size(
            newSession, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, settings.connectionWindowSize)
        state = .ready
        lastConnectFailure = nil
        pendingOut.removeAll(keepingCapacity: true)
        pendingOutOffset = 0
        logger.debug("triton connected", metadata: ["endpoint": "\(authority)"])
        let calls = waiting
        waiting.removeAll()
        for call in calls where !call.isFinished { submit(call) }
    }

    /// Fails every call in flight and drops the socket; the next call reconnects.
    func disconnect(reason: String) {
        let calls = streams.values
        streams = [:]
        for call in calls where !call.isFinished {
            call.fail(.connection, "connection to \(authority) lost: \(reason)")
        }
        if let session { nghttp2_session_del(session) }
        session = nil
        if fd >= 0 { close(fd); fd = -1 }
        state = .idle
        pendingOut.removeAll(keepingCapacity: true)
        pendingOutOffset = 0
        logger.warning("triton connection lost", metadata: ["endpoint": "\(authority)", "reason": "\(reason)"])
    }

    func socketReady(revents: Int16) {
        if revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
            guard receive() else { return }
        }
        if revents & Int16(POLLOUT) != 0 { flush() }
    }

    /// Reads everything available and feeds nghttp2; false when the connection went away.
    func receive() -> Bool {
        while true {
            let n = read(fd, readBuffer.baseAddress, readBuffer.count)
            if n > 0 {
                let consumed = nghttp2_session_mem_recv(
                    session, readBuffer.baseAddress!.assumingMemoryBound(to: UInt8.self), n)
                if consumed < 0 {
                    disconnect(reason: "HTTP/2 protocol error: \(String(cString: nghttp2_strerror(Int32(consumed))))")
                    return false
                }
                if n < readBuffer.count { return true }
            } else if n == 0 {
                disconnect(reason: "closed by peer")
                return false
            } else {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { return true }
                disconnect(reason: String(cString: strerror(errno)))
                return false
            }
        }
    }

    /// Writes what nghttp2 wants to send until the socket would block.
    func flush() {
        guard case .ready = state, let session else { return }
        while true {
            if pendingOutOffset < pendingOut.count {
                let n = pendingOut.withUnsafeBytes { bytes in
                    send(fd, bytes.baseAddress! + pendingOutOffset, bytes.count - pendingOutOffset, Int32(MSG_NOSIGNAL))
                }
                if n < 0 {
                    if errno == EINTR { continue }
                    if errno == EAGAIN || errno == EWOULDBLOCK { return }
                    disconnect(reason: String(cString: strerror(errno)))
                    return
                }
                pendingOutOffset += n
                if pendingOutOffset < pendingOut.count { return }
                pendingOut.removeAll(keepingCapacity: true)
                pendingOutOffset = 0
            }
            var data: UnsafePointer<UInt8>?
            let length = nghttp2_session_mem_send(session, &data)
            if length < 0 {
                disconnect(reason: "nghttp2 send error: \(String(cString: nghttp2_strerror(Int32(length))))")
                return
            }
            if length == 0 { return }
            var written = 0
            while written < length {
                let n = send(fd, data! + written, length - written, Int32(MSG_NOSIGNAL))
                if n < 0 {
                    if errno == EINTR { continue }
                    if errno == EAGAIN || errno == EWOULDBLOCK { break }
                    disconnect(reason: String(cString: strerror(errno)))
                    return
                }
                written += n
            }
            if written < length {
                // nghttp2's buffer is only valid until the next mem_send: keep the rest ourselves.
                pendingOut.append(contentsOf: UnsafeBufferPointer(start: data! + written, count: length - written))
            }
        }
    }

    func teardown() {
        for call in waiting where !call.isFinished { call.fail(.cancelled, "Triton client closed") }
        waiting.removeAll()
        let calls = streams.values
        streams = [:]
        for call in calls where !call.isFinished { call.fail(.cancelled, "Triton client closed") }
        if let session { nghttp2_session_del(session) }
        session = nil
        if fd >= 0 { close(fd); fd = -1 }
        // Commands that raced with shutdown.
        connection.mailbox.withLock { box in swap(&box.commands, &drained) }
        for case .start(let call) in drained where !call.isFinished { call.fail(.cancelled, "Triton client closed") }
        close(connection.wakeRead)
        close(connection.wakeWrite)
    }

    // MARK: nghttp2 callbacks

    func installCallbacks() {
        var cbs: OpaquePointer?
        nghttp2_session_callbacks_new(&cbs)
        nghttp2_session_callbacks_set_on_header_callback(cbs) { _, frame, name, nameLength, value, valueLength, _, userData in
            guard let frame, let name, let value else { return 0 }
            let loop = Unmanaged<ConnectionLoop>.fromOpaque(userData!).takeUnretainedValue()
            guard UInt32(frame.pointee.hd.type) == NGHTTP2_HEADERS.rawValue,
                let call = loop.streams[frame.pointee.hd.stream_id]
            else { return 0 }
            let n = UnsafeBufferPointer(start: name, count: nameLength)
            let v = UnsafeBufferPointer(start: value, count: valueLength)
            if n.elementsEqual(":status".utf8) {
                call.httpStatus = Int(String(decoding: v, as: UTF8.self)) ?? 0
            } else if n.elementsEqual("grpc-status".utf8) {
                call.grpcStatus = Int(String(decoding: v, as: UTF8.self)) ?? 2
            } else if n.elementsEqual("grpc-message".utf8) {
                call.grpcMessage = GRPCFraming.decodeMessage(v)
            }
            return 0
        }
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs) { _, _, streamID, data, length, userData in
            let loop = Unmanaged<ConnectionLoop>.fromOpaque(userData!).takeUnretainedValue()
            if let call = loop.streams[streamID], !call.isFinished, let data {
                call.body.append(contentsOf: UnsafeBufferPointer(start: data, count: length))
            }
            return 0
        }
        nghttp2_session_callbacks_set_on_stream_close_callback(cbs) { _, streamID, errorCode, userData in
            let loop = Unmanaged<ConnectionLoop>.fromOpaque(userData!).takeUnretainedValue()
            guard let call = loop.streams.removeValue(forKey: streamID), !call.isFinished else { return 0 }
            if let failure = GRPCFraming.outcome(
                httpStatus: call.httpStatus, grpcStatus: call.grpcStatus, grpcMessage: call.grpcMessage,
                resetCode: errorCode)
            {
                call.fail(failure.code, failure.message, grpcStatus: failure.grpcStatus)
            } else {
                call.succeed(call.body)
            }
            return 0
        }
        callbacks = cbs
    }
}
