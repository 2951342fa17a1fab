import Foundation
import GatewayEngine
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import Metrics
import NIOCore
import ServiceKit
import ServiceLifecycle
import Synchronization
import TEModels
import TERedis

/// The gateway's request context: Hummingbird's core context plus the connection's channel, which a push
/// stream closes when it drops a slow client (the write it waits in would otherwise wait on that client).
public struct GatewayRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

/// One stream entry as a push client receives it: its id (the SSE event id, `Last-Event-ID` on resume), the
/// symbol it is about (for `?symbol=`) and its JSON.
public struct PushEvent: Sendable, Equatable {
    public let id: String
    public let symbol: String
    public let json: String
}

/// How a push client is served: Server-Sent Events on the GET, or WebSocket messages after an upgrade of it.
public enum PushTransport: String, Sendable, CaseIterable {
    case sse
    case websocket
}

/// Fans one Redis stream out to the push clients: one reader for all (`PushFeed`), a bounded queue per
/// client. A client whose queue is full is dropped (reason `slow_consumer`, its connection closed) at once, so
/// a slow client never slows the reader, the gateway or the other clients; at most `maxClients` at a time.
public final class PushBroadcaster: Sendable {
    public enum Message: Sendable, Equatable {
        case event(PushEvent)
        case heartbeat
    }

    public enum DropReason: String, Sendable {
        case slowConsumer = "slow_consumer"
        case shutdown
    }

    public struct Subscription: Sendable {
        public let id: Int
        public let messages: AsyncStream<Message>
    }

    private struct Client {
        let continuation: AsyncStream<Message>.Continuation
        let symbol: String?
        let transport: PushTransport
        let onDrop: @Sendable () -> Void
    }

    private struct State {
        var clients: [Int: Client] = [:]
        var nextID = 0
        var closed = false
    }

    public let name: String
    public let maxClients: Int
    public let queueLimit: Int
    private let state = Mutex(State())
    private let clientsGauges: [PushTransport: Meter]
    private let eventsSent: Counter
    private let drops: [PushTransport: [DropReason: Counter]]
    private let refused: [PushTransport: Counter]

    /// Metrics through swift-metrics onto `factory` (the gateway's, `GatewayMetrics.factory`).
    init(name: String, maxClients: Int, queueLimit: Int, factory: any MetricsFactory) {
        self.name = name
        self.maxClients = maxClients
        self.queueLimit = queueLimit
        eventsSent = Counter(label: "te_gateway_push_events_total", dimensions: [("stream", name)], factory: factory)
        var gauges: [PushTransport: Meter] = [:]
        var drops: [PushTransport: [DropReason: Counter]] = [:]
        var refused: [PushTransport: Counter] = [:]
        for transport in PushTransport.allCases {
            let labels = [("stream", name), ("transport", transport.rawValue)]
            gauges[transport] = Meter(label: "te_gateway_push_clients", dimensions: labels, factory: factory)
            for reason in [DropReason.slowConsumer, .shutdown] {
                drops[transport, default: [:]][reason] = Counter(
                    label: "te_gateway_push_dropped_total", dimensions: labels + [("reason", reason.rawValue)],
                    factory: factory)
            }
            refused[transport] = Counter(label: "te_gateway_push_refused_total", dimensions: labels, factory: factory)
        }
        clientsGauges = gauges
        self.drops = drops
        self.refused = refused
    }

    /// A new client's queue, or nil at the client limit (or after shutdown). `onDrop` runs when the gateway
    /// drops the client (its queue overflowed): it closes the connection.
    public func subscribe(
        symbol: String?, transport: PushTransport, onDrop: @escaping @Sendable () -> Void
    ) -> Subscription? {
        let (messages, continuation) = AsyncStream.makeStream(
            of: Message.self, bufferingPolicy: .bufferingOldest(queueLimit))
        let id = state.withLock { s -> Int? in
            guard !s.closed, s.clients.count < maxClients else { return nil }
            s.nextID += 1
            s.clients[s.nextID] = Client(
                continuation: continuation, symbol: symbol, transport: transport, onDrop: onDrop)
            return s.nextID
        }
        guard let id else {
            refused[transport]?.increment()
            continuation.finish()
            return nil
        }
        clientsGauges[transport]?.increment()
        return Subscription(id: id, messages: messages)
    }

    /// The client left (or its stream ended); safe to call more than once.
    public func unsubscribe(_ id: Int) {
        let client = state.withLock { $0.clients.removeValue(forKey: id) }
        guard let client else { return }
        client.continuation.finish()
        clientsGauges[client.transport]?.decrement()
    }

    public var clientCount: Int { state.withLock { $0.clients.count } }

    /// Queues `events` to every client whose symbol matches; never waits.
    public func publish(_ events: [PushEvent]) {
        guard !events.isEmpty else { return }
        var dropped: [Client] = []
        var queued = 0
        state.withLock { s in
            for (id, client) in s.clients {
                for event in events where client.symbol == nil || client.symbol == event.symbol {
                    if case .dropped = client.continuation.yield(.event(event)) {
                        s.clients[id] = nil
                        dropped.append(client)
                        break
                    }
                    queued += 1
                }
            }
        }
        if queued > 0 { eventsSent.increment(by: Int64(queued)) }
        drop(dropped, .slowConsumer)
    }

    /// A keep-alive for every client (proxies close idle streams); a client that cannot take even that is dropped.
    public func heartbeat() {
        var dropped: [Client] = []
        state.withLock { s in
            for (id, client) in s.clients {
                if case .dropped = client.continuation.yield(.heartbeat) {
                    s.clients[id] = nil
                    dropped.append(client)
                }
            }
        }
        drop(dropped, .slowConsumer)
    }

    /// Ends every client's stream (graceful shutdown); later subscriptions are refused.
    public func close() {
        let all = state.withLock { s -> [Client] in
            s.closed = true
            defer { s.clients.removeAll() }
            return Array(s.clients.values)
        }
        for client in all {
            client.continuation.finish()
            clientsGauges[client.transport]?.decrement()
            drops[client.transport]?[.shutdown]?.increment()
        }
    }

    private func drop(_ clients: [Client], _ reason: DropReason) {
        for client in clients {
            client.continuation.finish()
            client.onDrop()
            clientsGauges[client.transport]?.decrement()
            drops[client.transport]?[reason]?.increment()
        }
    }
}

/// Reads one stream from its tail (`XREAD BLOCK`, on a connection of its own) and publishes each entry to
/// the broadcaster; a heartbeat every `heartbeatInterval`. Stops the broadcaster's clients at shutdown.
public struct PushFeed: Service {
    let redis: RedisClient
    let stream: String
    let broadcaster: PushBroadcaster
    let encode: @Sendable (StreamEntry) -> PushEvent?
    let heartbeatInterval: Duration
    let logger: Logger

    public init(
        redis: RedisClient, stream: String, broadcaster: PushBroadcaster, heartbeatInterval: Duration = .seconds(15),
        logger: Logger, encode: @escaping @Sendable (StreamEntry) -> PushEvent?
    ) {
        self.redis = redis
        self.stream = stream
        self.broadcaster = broadcaster
        self.encode = encode
        self.heartbeatInterval = heartbeatInterval
        self.logger = logger
    }

    public func run() async throws {
        await withGracefulShutdownHandler {
            await cancelWhenGracefulShutdown {
                var lastHeartbeat = ContinuousClock.now
                await StreamTail.follow(
                    redis: redis, stream: stream, logger: logger,
                    onWake: {
                        guard ContinuousClock.now - lastHeartbeat >= heartbeatInterval else { return }
                        broadcaster.heartbeat()
                        lastHeartbeat = .now
                    }
                ) { entries in broadcaster.publish(entries.compactMap(encode)) }
            }
        } onGracefulShutdown: {
            broadcaster.close()
        }
    }
}

/// The two push streams the gateway serves: opportunities and decisions.
public struct PushStreams: Sendable {
    public let opportunities: PushBroadcaster
    public let decisions: PushBroadcaster

    init(config: GatewayConfiguration, metrics: GatewayMetrics) {
        opportunities = PushBroadcaster(
            name: "opportunities", maxClients: config.pushMaxClients, queueLimit: config.pushQueueLimit,
            factory: metrics.factory)
        decisions = PushBroadcaster(
            name: "decisions", maxClients: config.pushMaxClients, queueLimit: config.pushQueueLimit,
            factory: metrics.factory)
    }

}

/// A stream entry as the JSON a push client receives (the same encoding as `GET /v1/opportunities`).
enum PushEncoding {
    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }()

    static func opportunity(_ entry: StreamEntry) -> PushEvent? {
        guard let o = try? StreamFieldDecoder.decode(Opportunity.self, from: entry.fields),
            let json = try? encoder.encode(o)
        else { return nil }
        return PushEvent(id: entry.id, symbol: o.symbol, json: String(decoding: json, as: UTF8.self))
    }

    static func decision(_ entry: StreamEntry) -> PushEvent? {
        guard let r = try? StreamFieldDecoder.decode(AuditRecord.self, from: entry.fields),
            let json = try? encoder.encode(r)
        else { return nil }
        return PushEvent(id: entry.id, symbol: r.symbol, json: String(decoding: json, as: UTF8.self))
    }
}

/// A push request's query, validated: `?symbol=` and where to resume (`Last-Event-ID` or `?last_event_id=`).
struct PushQuery: Sendable {
    let symbol: String?
    let resumeFrom: StreamID?

    static func parse(_ uri: URI, lastEventID: String?) -> Result<PushQuery, RequestError> {
        let query = uri.queryParameters
        let symbol = query["symbol"].map(String.init)
        if let symbol, !Symbol.isValid(symbol) {
            return .failure(RequestError(.invalidSymbol, "not a valid symbol", field: "symbol"))
        }
        let resumeText = lastEventID ?? query["last_event_id"].map(String.init)
        let resumeFrom = resumeText.flatMap { StreamID($0) }
        if resumeText != nil && resumeFrom == nil {
            return .failure(
                RequestError(
                    .invalidQuery, "Last-Event-ID must be a stream entry id (<ms>-<seq>)", field: "Last-Event-ID"))
        }
        return .success(PushQuery(symbol: symbol, resumeFrom: resumeFrom))
    }
}

/// One push stream as the routes and the WebSocket upgrade serve it.
struct PushRoute: Sendable {
    let broadcaster: PushBroadcaster
    let stream: String
    /// The SSE `event:` name and the WebSocket message's `event`.
    let event: String
    let encode: @Sendable (StreamEntry) -> PushEvent?

    static func all(_ d: GatewayDependencies) -> [String: PushRoute] {
        [
            "/v1/opportunities/stream": PushRoute(
                broadcaster: d.push.opportunities, stream: d.config.opportunitiesStream, event: "opportunity",
                encode: PushEncoding.opportunity),
            "/v1/decisions/stream": PushRoute(
                broadcaster: d.push.decisions, stream: d.config.auditStream, event: "decision",
                encode: PushEncoding.decision)
        ]
    }

    /// The 503 body past the client limit.
    var tooManyStreams: String {
        RequestError.json(
            code: "too_many_streams",
            message: "the gateway serves at most \(broadcaster.maxClients) \(broadcaster.name) streams at a time",
            field: nil)
    }

    /// What a client gets, whatever the transport: after `query.resumeFrom` the entries the stream still holds
    /// (XRANGE, a page at a time), then the live entries the broadcaster queued meanwhile, skipping those the
    /// backlog already sent; a keep-alive on each heartbeat. Returns when the subscription ends.
    func deliver(
        _ subscription: PushBroadcaster.Subscription, query: PushQuery, redis: RedisClient,
        send: ([PushEvent]) async throws -> Void, keepAlive: () async throws -> Void
    ) async throws {
        var last = query.resumeFrom
        if let from = query.resumeFrom {
            var start = "(" + from.description
            while true {
                let page = try await redis.xrange(stream, start: start, end: "+", count: 500)
                guard let tail = page.last else { break }
                let events = page.compactMap(encode).filter { query.symbol == nil || $0.symbol == query.symbol }
                if !events.isEmpty { try await send(events) }
                last = StreamID(tail.id)
                start = "(" + tail.id
            }
        }
        for await message in subscription.messages {
            switch message {
            case .heartbeat:
                try await keepAlive()
            case .event(let e):
                if let last, let id = StreamID(e.id), id <= last { continue }
                try await send([e])
            }
        }
    }
}

extension GatewayAPI {
    /// `GET /v1/opportunities/stream` and `GET /v1/decisions/stream`: Server-Sent Events, one event per stream
    /// entry (`id:` the entry id, `event:` opportunity/decision, `data:` its JSON), in stream order. With
    /// `Last-Event-ID` (or `?last_event_id=`) the entries after that id are sent first (resume without a gap
    /// while the stream still holds them), then live ones. `?symbol=` filters. The same GET with
    /// `Upgrade: websocket` as a connection's first request is upgraded or refused by `GatewayChannel`.
    func pushStream(_ request: Request, _ context: GatewayRequestContext, route: PushRoute) async throws -> Response {
        let query: PushQuery
        switch PushQuery.parse(request.uri, lastEventID: request.headers[Self.lastEventIDHeader]) {
        case .failure(let error): return Self.clientError(error)
        case .success(let parsed): query = parsed
        }
        if PushWebSocket.isUpgrade(request.headers) {
            // `GatewayChannel` upgrades (or refuses) a connection's first request; a later one cannot switch.
            var response = Self.clientError(
                RequestError(
                    .malformedHTTP, "a WebSocket upgrade must be the connection's first request", field: "Upgrade"))
            response.headers[.connection] = "close"
            return response
        }
        let channel = context.channel
        guard
            let subscription = route.broadcaster.subscribe(
                symbol: query.symbol, transport: .sse, onDrop: { channel.close(promise: nil) })
        else {
            return Self.json(.serviceUnavailable, route.tooManyStreams)
        }
        let redis = d.redis
        let headers: HTTPFields = [
            .contentType: "text/event-stream", .cacheControl: "no-cache", HTTPField.Name("X-Accel-Buffering")!: "no"
        ]
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                defer { route.broadcaster.unsubscribe(subscription.id) }
                try await withGracefulShutdownHandler {
                    try await writer.write(ByteBuffer(string: "retry: 1000\n\n"))
                    try await route.deliver(
                        subscription, query: query, redis: redis,
                        send: { events in
                            var frames = ByteBuffer()
                            for e in events { Self.appendFrame(e, event: route.event, to: &frames) }
                            try await writer.write(frames)
                        },
                        keepAlive: { try await writer.write(ByteBuffer(string: ": keep-alive\n\n")) })
                    try await writer.finish(nil)
                } onGracefulShutdown: {
                    route.broadcaster.unsubscribe(subscription.id)
                }
            })
    }

    static let lastEventIDHeader = HTTPField.Name("Last-Event-ID")!

    static func appendFrame(_ e: PushEvent, event: String, to buffer: inout ByteBuffer) {
        buffer.writeString("id: \(e.id)\nevent: \(event)\ndata: \(e.json)\n\n")
    }
}
