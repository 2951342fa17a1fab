import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOWebSocket
import ServiceLifecycle
import TERedis

/// The push streams over WebSocket, on the API port and the same paths as Server-Sent Events: a GET with
/// `Upgrade: websocket` as a connection's first request switches to WebSocket (101), any other request is
/// HTTP as before. Each entry is one text message `{"id":"<entry id>","event":"opportunity","data":{…}}`;
/// resume, `?symbol=`, keys, rate limit, client limit and the per-client queue are the SSE ones (`PushRoute`,
/// `PushBroadcaster`). A client that falls a queue behind gets close 1008 `slow_consumer`, graceful shutdown
/// close 1001 `shutdown`; a ping goes out on every heartbeat.
enum PushWebSocket {
    /// How long a closing connection waits for the client to take the close frame and answer it.
    static let closeTimeout = TimeAmount.seconds(10)

    static func isUpgrade(_ headers: HTTPFields) -> Bool {
        headers[.upgrade]?.lowercased() == "websocket"
    }

    /// One entry as a WebSocket message (`json` is the entry's JSON object, `id` a stream id: nothing to escape).
    static func message(_ e: PushEvent, event: String) -> String {
        "{\"id\":\"\(e.id)\",\"event\":\"\(event)\",\"data\":\(e.json)}"
    }
}

/// The gateway's connections: HTTP/1.1 (Hummingbird, the score fast path and the framing-error answers,
/// exactly as `HTTP1Channel` sets them up) behind NIO's upgrade handler, which switches a push stream's GET to
/// WebSocket when `shouldUpgrade` admits it.
///
/// Why not hummingbird-websocket's `HTTP1WebSocketUpgradeChannel`: it answers every refused upgrade with an empty
/// 400, where a push client must see the API's 401/429/400/503 with the error JSON. Here a refused upgrade
/// goes on as plain HTTP to the router, whose middleware and `pushStream` answer it like the SSE request.
struct GatewayChannel: ServerChildChannel, HTTPChannelHandler {
    enum Upgrade: Sendable {
        case http(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
        case websocket(PushWebSocketSession)
    }

    struct Value: ServerChildChannelValue {
        let upgrade: EventLoopFuture<Upgrade>
        let channel: any Channel
    }

    let responder: HTTPChannelHandler.Responder
    let api: GatewayAPI
    let routes: [String: PushRoute]
    let additionalChannelHandlers: @Sendable () -> [any RemovableChannelHandler]

    static let upgradePhaseName = "te-upgrade-phase"

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            // Set by `shouldUpgrade`, taken by the pipeline handler once the 101 is out; both on the event loop.
            let admitted = NIOLoopBoundBox<PushWebSocketSession?>(nil, eventLoop: channel.eventLoop)
            let upgrader = NIOTypedWebSocketServerUpgrader<Upgrade>(
                shouldUpgrade: { channel, head in
                    channel.eventLoop.makeCompletedFuture {
                        guard let session = admit(head, channel: channel, logger: logger) else { return nil }
                        admitted.value = session
                        return HTTPHeaders()
                    }
                },
                upgradePipelineHandler: { channel, _ in
                    channel.eventLoop.makeCompletedFuture {
                        guard let session = admitted.value else { throw ChannelError.inappropriateOperationForState }
                        let sync = channel.pipeline.syncOperations
                        try sync.removeHandler(context: try sync.context(name: Self.upgradePhaseName), promise: nil)
                        try sync.addHandler(session.handler.value)
                        return .websocket(session)
                    }
                })
            var configuration = NIOUpgradableHTTPServerPipelineConfiguration<Upgrade>(
                upgradeConfiguration: .init(
                    upgraders: [upgrader],
                    notUpgradingCompletionHandler: { channel in
                        channel.eventLoop.makeCompletedFuture {
                            let sync = channel.pipeline.syncOperations
                            try sync.removeHandler(context: try sync.context(name: Self.upgradePhaseName), promise: nil)
                            try sync.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                            try sync.addHandlers(additionalChannelHandlers())
                            try sync.addHandler(HTTPConnectionStateHandler(logger: logger))
                            return .http(
                                try NIOAsyncChannel(
                                    wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true)))
                        }
                    }))
            // As Hummingbird's HTTP1Channel: requests are ordered by the async channel, errors answered by the app.
            configuration.enablePipelining = false
            configuration.enableErrorHandling = false
            configuration.enableResponseHeaderValidation = false
            let upgrade = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(configuration: configuration)
            try channel.pipeline.syncOperations.addHandler(UpgradePhaseHandler(), name: Self.upgradePhaseName)
            return Value(upgrade: upgrade, channel: channel)
        }
    }

    func handle(value: Value, logger: Logger) async {
        do {
            switch try await value.upgrade.get() {
            case .http(let asyncChannel): await handleHTTP(asyncChannel: asyncChannel, logger: logger)
            case .websocket(let session): await session.run(redis: api.d.redis, logger: logger)
            }
        } catch {
            logger.debug("connection ended before its first request", metadata: ["error": "\(error)"])
        }
    }

    /// Whether a GET with `Upgrade: websocket` becomes a push client: the stream's path, a valid query, the
    /// client's key and rate limit, a free slot. Nil: not upgraded — the request goes on to the router, which
    /// gives the reason (its admission takes the rate limit's token only when this one did not).
    func admit(_ head: HTTPRequestHead, channel: any Channel, logger: Logger) -> PushWebSocketSession? {
        guard head.method == .GET else { return nil }
        let uri = URI(head.uri)
        var path = uri.path
        if path.count > 1, path.hasSuffix("/") { path.removeLast() }
        guard let route = routes[path],
            case .success(let query) = PushQuery.parse(uri, lastEventID: head.headers.first(name: "Last-Event-ID"))
        else { return nil }
        guard case .admitted = api.admit(authorization: head.headers.first(name: "Authorization")) else { return nil }
        let handler = NIOLoopBound(PushWebSocketHandler(eventLoop: channel.eventLoop), eventLoop: channel.eventLoop)
        let eventLoop = channel.eventLoop
        guard
            let subscription = route.broadcaster.subscribe(
                symbol: query.symbol, transport: .websocket,
                onDrop: { eventLoop.execute { handler.value.close(.policyViolation, reason: "slow_consumer") } })
        else { return nil }
        let broadcaster = route.broadcaster
        channel.closeFuture.whenComplete { _ in broadcaster.unsubscribe(subscription.id) }
        logger.debug("push websocket", metadata: ["stream": "\(route.broadcaster.name)", "symbol": "\(query.symbol ?? "*")"])
        return PushWebSocketSession(route: route, query: query, subscription: subscription, channel: channel, handler: handler)
    }
}

/// Until the connection's first request is known, NIO's upgrade handler holds the pipeline and Hummingbird's
/// handlers are not there yet: this one answers what they would — a request the decoder cannot frame gets
/// the error JSON, a graceful shutdown closes the idle connection — and swallows the upgrader's refusal (the
/// request then goes on as HTTP). Removed as soon as the first request is upgraded or not.
final class UpgradePhaseHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is NIOWebSocketUpgradeError { return }
        guard let framing = FramingErrorHandler.requestError(error) else {
            context.fireErrorCaught(error)
            return
        }
        let body = ByteBuffer(string: framing.json)
        var head = HTTPResponseHead(version: .http1_1, status: .badRequest)
        head.headers = [
            "Content-Type": "application/json", "Content-Length": String(body.readableBytes), "Connection": "close",
            "Server": "te-gateway",
        ]
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in context.close(promise: nil) }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}

/// One WebSocket push client: its subscription and the handler that owns the connection's writes. `run`
/// feeds it (backlog, then live entries) until the subscription ends.
final class PushWebSocketSession: Sendable {
    let route: PushRoute
    let query: PushQuery
    let subscription: PushBroadcaster.Subscription
    let channel: any Channel
    let handler: NIOLoopBound<PushWebSocketHandler>

    init(
        route: PushRoute, query: PushQuery, subscription: PushBroadcaster.Subscription, channel: any Channel,
        handler: NIOLoopBound<PushWebSocketHandler>
    ) {
        self.route = route
        self.query = query
        self.subscription = subscription
        self.channel = channel
        self.handler = handler
    }

    func run(redis: RedisClient, logger: Logger) async {
        defer { route.broadcaster.unsubscribe(subscription.id) }
        let handler = self.handler
        let event = route.event
        var ending = (WebSocketErrorCode.goingAway, "shutdown")
        do {
            try await withGracefulShutdownHandler {
                try await route.deliver(
                    subscription, query: query, redis: redis,
                    send: { events in
                        let texts = events.map { PushWebSocket.message($0, event: event) }
                        // Waits until the frames are in the socket: a client that does not read holds this
                        // loop, so its queue fills and the broadcaster drops it.
                        try await channel.eventLoop.flatSubmit { handler.value.send(texts) }.get()
                    },
                    keepAlive: { channel.eventLoop.execute { handler.value.ping() } })
            } onGracefulShutdown: { [route, subscription] in
                route.broadcaster.unsubscribe(subscription.id)
            }
        } catch {
            // Redis failed under the backlog read, or the connection went away (then closing is a no-op).
            logger.debug("push websocket ended", metadata: ["error": "\(error)"])
            ending = (.unexpectedServerError, "redis_unavailable")
        }
        // The subscription ended: shutdown, or the client was dropped or left (the handler already closed).
        let (code, reason) = ending
        channel.eventLoop.execute { handler.value.close(code, reason: reason) }
    }
}

/// Owns a push WebSocket's writes on its event loop, so nothing follows the close frame: entry messages,
/// pings, answers to the client's pings, and the close handshake (close frame, then the TCP connection closed
/// when the client answers or after `PushWebSocket.closeTimeout`).
final class PushWebSocketHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let eventLoop: any EventLoop
    private var context: ChannelHandlerContext?
    /// A close asked for before the handler was in the pipeline (a drop racing the upgrade).
    private var pendingClose: (WebSocketErrorCode, String)?
    private var closeSent = false
    private var closeTimer: Scheduled<Void>?

    init(eventLoop: any EventLoop) { self.eventLoop = eventLoop }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if let (code, reason) = pendingClose { close(code, reason: reason) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        closeTimer?.cancel()
        self.context = nil
    }

    /// Writes the messages; the future completes once they are written to the socket.
    func send(_ texts: [String]) -> EventLoopFuture<Void> {
        guard let context else { return eventLoop.makeFailedFuture(ChannelError.ioOnClosedChannel) }
        // After the close frame nothing more is written; the loop drains the ended subscription.
        guard !closeSent else { return eventLoop.makeSucceededVoidFuture() }
        var last: EventLoopFuture<Void>?
        for text in texts {
            let data = context.channel.allocator.buffer(string: text)
            last = context.write(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .text, data: data)))
        }
        context.flush()
        return last ?? eventLoop.makeSucceededVoidFuture()
    }

    func ping() {
        guard let context, !closeSent else { return }
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .ping, data: ByteBuffer())), promise: nil)
    }

    func close(_ code: WebSocketErrorCode, reason: String) {
        guard let context else {
            if pendingClose == nil { pendingClose = (code, reason) }
            return
        }
        guard !closeSent else { return }
        closeSent = true
        var data = context.channel.allocator.buffer(capacity: 2 + reason.utf8.count)
        data.write(webSocketErrorCode: code)
        data.writeString(reason)
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: data)), promise: nil)
        closeTimer = context.eventLoop.scheduleTask(in: PushWebSocket.closeTimeout) { context.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .ping:
            guard !closeSent else { return }
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)), promise: nil)
        case .connectionClose:
            if closeSent {
                context.close(promise: nil)
            } else {
                // The client closes: answer with its code, then close the connection.
                closeSent = true
                var data = frame.unmaskedData
                let code = data.readWebSocketErrorCode() ?? .normalClosure
                var answer = context.channel.allocator.buffer(capacity: 2)
                answer.write(webSocketErrorCode: code)
                context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: answer)))
                    .whenComplete { _ in context.close(promise: nil) }
            }
        default:
            break  // the stream is one-way: the client's messages and pongs need no answer
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            close(.goingAway, reason: "shutdown")
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}

