import Logging
import NIOCore
import NIOPosix
import Synchronization
import TECore

/// Configuration of a `TritonClient`.
public struct TritonClientConfiguration: Sendable {
    /// gRPC endpoint host.
    public var host: String
    /// gRPC endpoint port.
    public var port: Int
    /// HTTP/2 connections. Default (nil): one per event loop of `eventLoopGroup`, so that a caller running on
    /// one of those loops uses that loop's connection without a thread switch. An explicit count spreads the
    /// connections over the group's loops in order.
    public var connections: Int?
    /// The event loops that drive the connections. Default (nil): `MultiThreadedEventLoopGroup.singleton`, the
    /// group the gateway serves HTTP on and runs Swift Concurrency on. A group of your own must outlive the client:
    /// `close()` it before shutting the group down.
    public var eventLoopGroup: (any EventLoopGroup)?
    /// Give up connecting after this long (calls with an earlier deadline fail at their deadline). Default: 1 s.
    public var connectTimeout: Duration = .seconds(1)
    /// After a failed connect, calls fail at once with `.connection` for this long instead of retrying the
    /// connect on every call; doubled after each further failed connect up to `reconnectBackoffMax`, less up to
    /// 20 % at random. Default: 100 ms.
    public var reconnectBackoff: Duration = .milliseconds(100)
    /// The longest wait between connects to an unreachable endpoint. Default: 1 s.
    public var reconnectBackoffMax: Duration = .seconds(1)
    /// HTTP/2 SETTINGS_INITIAL_WINDOW_SIZE we announce (per stream). Default: 16 MiB.
    public var initialWindowSize: Int32 = 16 << 20
    /// Connection-level receive window, raised by WINDOW_UPDATE after the preface. Default: 1 GiB.
    public var connectionWindowSize: Int32 = 1 << 30
    /// An HTTP/2 PING goes out after this long without anything read on a connection with calls in flight
    /// (and at once when a call's deadline passes with nothing read since it was sent; never on an idle
    /// connection, see `KeepaliveState`); nil: no keepalive. Default: 10 s.
    public var keepaliveInterval: Duration? = .seconds(10)
    /// A connection whose PING gets no answer within this is dropped: its calls fail with `.connection` and
    /// the next call reconnects. Default: 2 s.
    public var keepaliveTimeout: Duration = .seconds(2)

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `TRITON_URL`-style endpoints: `host:port`, optionally prefixed with `grpc://` or `http://`.
    public init(url: String) throws(TritonError) {
        var rest = Substring(url.trimmingCharacters(in: " \t\n"))
        for scheme in ["grpc://", "http://", "h2c://"] where rest.hasPrefix(scheme) {
            rest = rest.dropFirst(scheme.count)
        }
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]), port > 0,
            port < 65536, colon != rest.startIndex
        else {
            throw TritonError(code: .invalidArgument, message: "Triton URL must be host:port, got '\(url)'")
        }
        var host = String(rest[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        self.init(host: host, port: port)
    }
}

extension String {
    fileprivate func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s = s.dropFirst() }
        while let l = s.last, set.contains(l) { s = s.dropLast() }
        return String(s)
    }
}

/// Async client for Triton's KServe v2 gRPC API (`inference.GRPCInferenceService`) over HTTP/2 (nghttp2) with
/// protobuf-c messages.
///
/// Calls are multiplexed as streams over HTTP/2 connections, each a SwiftNIO channel on one event loop of
/// `configuration.eventLoopGroup`. A call made on one of those loops uses that loop's connection and starts without
/// a thread switch; other callers are handed to a connection's loop round robin. Every call has a deadline: when it
/// passes the stream is reset (RST_STREAM) and the call throws
/// `TritonError.Code.deadlineExceeded` at once. A lost connection fails its calls with `.connection`; the next call
/// reconnects. Errors the server sends surface as `TritonError` with the server's `grpc-message`.
public final class TritonClient: Sendable {
    public let configuration: TritonClientConfiguration
    private let connections: [HTTP2Connection]
    private let nextConnection = Atomic<Int>(0)

    public init(configuration: TritonClientConfiguration, logger: Logger = Logger(label: "triton-client")) {
        self.configuration = configuration
        let settings = ConnectionSettings(
            host: configuration.host, port: configuration.port, connectTimeout: configuration.connectTimeout,
            reconnectBackoff: RetryPolicy(
                initial: configuration.reconnectBackoff,
                maximum: max(configuration.reconnectBackoff, configuration.reconnectBackoffMax),
                jitter: 0.2),
            initialWindowSize: configuration.initialWindowSize,
            connectionWindowSize: configuration.connectionWindowSize,
            keepaliveInterval: configuration.keepaliveInterval,
            keepaliveTimeout: configuration.keepaliveTimeout)
        let group = configuration.eventLoopGroup ?? MultiThreadedEventLoopGroup.singleton
        var loops = Array(group.makeIterator())
        if loops.isEmpty { loops = [group.next()] }
        let count = configuration.connections.map { max(1, $0) } ?? loops.count
        connections = (0..<count).map { i in
            HTTP2Connection(eventLoop: loops[i % loops.count], settings: settings, logger: logger)
        }
    }

    /// A client for `url` (`host:port`, as in `TRITON_URL`); `connections` nil = one per event loop of the
    /// singleton group.
    public convenience init(url: String, connections: Int? = nil, logger: Logger = Logger(label: "triton-client"))
        throws(TritonError)
    {
        var configuration = try TritonClientConfiguration(url: url)
        configuration.connections = connections
        self.init(configuration: configuration, logger: logger)
    }

    deinit { close() }

    /// Fails calls in flight with `.cancelled` and closes the connections. Idempotent; later calls fail with
    /// `.cancelled`.
    public func close() {
        for connection in connections { connection.shutdown() }
    }

    // MARK: inference

    /// Scores `rowCount` rows of the model's input (`rows` holds rowCount × featureCount FP32 values, row-major),
    /// sent as one request (`features` FP32 [rowCount, featureCount] in raw_input_contents); returns one `score`
    /// per row. `parameters` become the request's InferParameter map (e.g. the test model's `delay_ms`).
    nonisolated(nonsending) public func infer(
        model: String, version: String, rows: [Float], rowCount: Int, featureCount: Int = 8,
        deadline: ContinuousClock.Instant, parameters: [(String, InferParameterValue)] = [],
        file: String = #fileID, line: Int = #line
    ) async throws -> [Float] {
        guard rowCount >= 0, rows.count == rowCount * featureCount else {
            throw TritonError(
                code: .invalidArgument,
                message: "rows holds \(rows.count) values, expected \(rowCount) × \(featureCount)", file: file,
                line: line)
        }
        let request = rows.withUnsafeBufferPointer {
            InferenceCodec.inferRequest(
                model: model, version: version, rows: $0, rowCount: rowCount, featureCount: featureCount,
                parameters: parameters)
        }
        let body = try await call(.modelInfer, request, deadline: deadline, file: file, line: line)
        return try decode(file: file, line: line) { () throws(TritonError) in
            try InferenceCodec.scores(from: body, expectedCount: rowCount)
        }
    }

    // MARK: health and metadata

    nonisolated(nonsending) public func serverLive(
        deadline: ContinuousClock.Instant = .now + .seconds(2), file: String = #fileID, line: Int = #line
    ) async throws -> Bool {
        let body = try await call(
            .serverLive, InferenceCodec.emptyRequest(), deadline: deadline, file: file, line: line)
        return try decode(file: file, line: line) { () throws(TritonError) in try InferenceCodec.flag(from: body) }
    }

    nonisolated(nonsending) public func serverReady(
        deadline: ContinuousClock.Instant = .now + .seconds(2), file: String = #fileID, line: Int = #line
    ) async throws -> Bool {
        let body = try await call(
            .serverReady, InferenceCodec.emptyRequest(), deadline: deadline, file: file, line: line)
        return try decode(file: file, line: line) { () throws(TritonError) in try InferenceCodec.flag(from: body) }
    }

    /// Whether `model` (version `version`; "" = the server's choice) is ready to serve.
    nonisolated(nonsending) public func modelReady(
        model: String, version: String = "", deadline: ContinuousClock.Instant = .now + .seconds(2),
        file: String = #fileID, line: Int = #line
    ) async throws -> Bool {
        let request = InferenceCodec.modelRequest(name: model, version: version)
        let body = try await call(.modelReady, request, deadline: deadline, file: file, line: line)
        return try decode(file: file, line: line) { () throws(TritonError) in try InferenceCodec.flag(from: body) }
    }

    nonisolated(nonsending) public func modelMetadata(
        model: String, version: String = "", deadline: ContinuousClock.Instant = .now + .seconds(2),
        file: String = #fileID, line: Int = #line
    ) async throws -> ModelMetadata {
        let request = InferenceCodec.modelRequest(name: model, version: version)
        let body = try await call(.modelMetadata, request, deadline: deadline, file: file, line: line)
        return try decode(file: file, line: line) { () throws(TritonError) in
            try InferenceCodec.modelMetadata(from: body)
        }
    }

    nonisolated(nonsending) public func modelConfig(
        model: String, version: String = "", deadline: ContinuousClock.Instant = .now + .seconds(2),
        file: String = #fileID, line: Int = #line
    ) async throws -> ModelConfig {
        let request = InferenceCodec.modelRequest(name: model, version: version)
        let body = try await call(.modelConfig, request, deadline: deadline, file: file, line: line)
        return try decode(file: file, line: line) { () throws(TritonError) in try InferenceCodec.modelConfig(from: body)
        }
    }

    /// The sha256 of the weights that `version` of `model` serves, as the server reports it: model config parameter
    /// `artefact_sha256_v<version>` (the model refuses to load when its weights do not match it).
    /// Throws `.notFound` when the model has no such parameter.
    nonisolated(nonsending) public func artefactHash(
        model: String, version: String, deadline: ContinuousClock.Instant = .now + .seconds(2),
        file: String = #fileID, line: Int = #line
    ) async throws -> String {
        let config = try await modelConfig(model: model, version: version, deadline: deadline, file: file, line: line)
        guard let hash = config.artefactHash(version: version) else {
            throw TritonError(
                code: .notFound, message: "model \(model) has no config parameter artefact_sha256_v\(version)",
                file: file, line: line)
        }
        return hash
    }

    // MARK: plumbing

    /// Runs on the caller's executor (`nonisolated(nonsending)` all the way down), so that a caller on an event
    /// loop of the group is still on it when the connection is chosen and the stream submitted.
    nonisolated(nonsending) private func call(
        _ method: GRPCMethod, _ request: [UInt8], deadline: ContinuousClock.Instant, file: String, line: Int
    ) async throws -> [UInt8] {
        try await connection().call(method, request: request, deadline: deadline, file: file, line: line)
    }

    /// The connection on the current event loop if there is one, else the next one round robin.
    private func connection() -> HTTP2Connection {
        for connection in connections where connection.eventLoop.inEventLoop { return connection }
        if connections.count == 1 { return connections[0] }
        let index = nextConnection.wrappingAdd(1, ordering: .relaxed).oldValue
        return connections[Int(UInt(bitPattern: index) % UInt(connections.count))]
    }

    // MARK: diagnostics

    /// How one connection has been used, for tests and debugging (counters since the client was created).
    public struct ConnectionStatistics: Sendable {
        /// The event loop that drives the connection.
        public let eventLoop: any EventLoop
        /// Calls made on `eventLoop` itself, started without a thread switch.
        public let callsStartedOnLoop: Int
        /// Calls made elsewhere and handed to `eventLoop`.
        public let callsHandedOver: Int
        /// TCP connects attempted (the first call connects; a lost connection reconnects on the next call).
        public let connectsStarted: Int
        /// Streams this client reset (RST_STREAM) because their call was cancelled or passed its deadline.
        public let streamsReset: Int
        /// Keepalive PINGs sent.
        public let keepalivePings: Int
        /// Connections dropped because a PING got no answer within `keepaliveTimeout`.
        public let keepaliveTimeouts: Int
    }

    /// One entry per connection, in order.
    public var connectionStatistics: [ConnectionStatistics] {
        connections.map { c in
            ConnectionStatistics(
                eventLoop: c.eventLoop, callsStartedOnLoop: c.counters.callsStartedOnLoop.load(ordering: .relaxed),
                callsHandedOver: c.counters.callsHandedOver.load(ordering: .relaxed),
                connectsStarted: c.counters.connectsStarted.load(ordering: .relaxed),
                streamsReset: c.counters.streamsReset.load(ordering: .relaxed),
                keepalivePings: c.counters.keepalivePings.load(ordering: .relaxed),
                keepaliveTimeouts: c.counters.keepaliveTimeouts.load(ordering: .relaxed))
        }
    }

    /// Re-stamps decoding errors with the caller's site.
    private func decode<T>(file: String, line: Int, _ body: () throws(TritonError) -> T) throws(TritonError) -> T {
        do {
            return try body()
        } catch {
            throw TritonError(
                code: error.code, message: error.message, grpcStatus: error.grpcStatus, file: file, line: line)
        }
    }
}
