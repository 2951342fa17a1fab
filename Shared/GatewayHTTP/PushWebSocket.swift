import GatewayEngine
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
/// WebSocket once `PushUpgradeGate` has admitted it.
///
/// Why not hummingbird-websocket's `HTTP1WebSocketUpgradeChannel`: it answers every refused upgrade with an
/// empty 400, where a push client must see the API's 401/429/400/503 with the error JSON. NIO's upgrade handler
/// cannot hand a refused upgrade request on to the router either (it keeps no copy of the head), so the gate
/// in front of it decides first and answers refusals itself.
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

    /// The gateway's handlers in front of Hummingbird's on a connection that stays HTTP (`additionalChannelHandlers`;
    /// the http-framing fuzz target builds its connections with the same).
    static func httpHandlers(api: GatewayAPI, fastPath: Bool) -> [any RemovableChannelHandler] {
        [FramingErrorHandler()] + (fastPath ? [ScoreFastPathHandler(responder: api, decisions: api.d.decisions)] : [])
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            // Set by the gate, taken by the upgrader; both on the event loop.
            let admitted = NIOLoopBoundBox<PushWebSocketSession?>(nil, eventLoop: channel.eventLoop)
            let upgrader = NIOTypedWebSocketServerUpgrader<Upgrade>(
                shouldUpgrade: { channel, _ in
                    channel.eventLoop.makeSucceededFuture(admitted.value == nil ? nil : HTTPHeaders())
                },
                upgradePipelineHandler: { channel, _ in
                    channel.eventLoop.makeCompletedFuture { () throws -> Upgrade in
                        guard let session = admitted.value else { throw ChannelError.inappropriateOperationForState }
                        try channel.pipeline.syncOperations.addHandler(session.handler.value)
                        return .websocket(session)
                    }
                })
            var configuration = NIOUpgradableHTTPServerPipelineConfiguration<Upgrade>(
                upgradeConfiguration: .init(
                    upgraders: [upgrader],
                    notUpgradingCompletionHandler: { channel in
                        channel.eventLoop.makeCompletedFuture { () throws -> Upgrade in
                            let sync = channel.pipeline.syncOperations
                            try sync.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                            try sync.addHandlers(additionalChannelHandlers())
                            try sync.addHandler(HTTPConnectionStateHandler(logger: logger))
                            return .http(
                                try NIOAsyncChannel(
                                    wrappingChannelSynchronously: channel,
                                    configuration: .init(isOutboundHalfClosureEnabled: true)))
                        }
                    }))
            // As Hummingbird's HTTP1Channel: requests are ordered by the async channel, errors answered by the app.
            configuration.enablePipelining = false
            configuration.enableErrorHandling = false
            configuration.enableResponseHeaderValidation = false
            let upgrade = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(
                configuration: configuration)
            let gate = PushUpgradeGate(admitted: admitted) { head in admit(head, channel: channel, logger: logger) }
            let upgradeHandler = try channel.pipeline.syncOperations.handler(
                type: NIOTypedHTTPServerUpgradeHandler<Upgrade>.self)
            try channel.pipeline.syncOperations.addHandler(gate, position: .before(upgradeHandler))
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
            logger.debug("connection ended before its first request was served", metadata: ["error": "\(error)"])
        }
    }

    /// What becomes of a first request that asks for `Upgrade: websocket`, in the order the SSE request is
    /// judged (key and rate limit, query, client limit): a push client, or the API's refusal. Anything else
    /// that asks for an upgrade (another path, another protocol) is served as plain HTTP.
    func admit(_ head: HTTPRequestHead, channel: any Channel, logger: Logger) -> PushUpgradeGate.Decision {
        guard head.method == .GET,
            head.headers[canonicalForm: "upgrade"].contains(where: { $0.lowercased() == "websocket" })
        else { return .plainHTTP }
        let uri = URI(head.uri)
        var path = uri.path
        if path.count > 1, path.hasSuffix("/") { path.removeLast() }
        guard let route = routes[path] else { return .plainHTTP }
        if case .refused(let status, let body, let retryAfter) = api.admit(
            authorization: head.headers.first(name: "Authorization"))
        {
            return .refuse(status, body, retryAfter: retryAfter)
        }
        let query: PushQuery
        switch PushQuery.parse(uri, lastEventID: head.headers.first(name: "Last-Event-ID")) {
        case .failure(let error): return .refuse(error.status, error.json, retryAfter: nil)
        case .success(let parsed): query = parsed
        }
        guard head.headers.first(name: "Sec-WebSocket-Key")?.isEmpty == false,
            head.headers.first(name: "Sec-WebSocket-Version") == "13"
        else {
            let error = RequestError(
                .malformedHTTP, "a WebSocket upgrade needs Sec-WebSocket-Key and Sec-WebSocket-Version: 13",
                field: "Sec-WebSocket-Version")
            return .refuse(error.status, error.json, retryAfter: nil)
        }
        let eventLoop = channel.eventLoop
        let handler = NIOLoopBound(PushWebSocketHandler(eventLoop: eventLoop), eventLoop: eventLoop)
        guard
            let subscription = route.broadcaster.subscribe(
                symbol: query.symbol, transport: .websocket,
                onDrop: { eventLoop.execute { handler.value.close(.policyViolation, reason: "slow_consumer") } })
        else { return .refuse(.serviceUnavailable, route.tooManyStreams, retryAfter: nil) }
        let broadcaster = route.broadcaster
        channel.closeFuture.whenComplete { _ in broadcaster.unsubscribe(subscription.id) }
        logger.debug(
            "push websocket", metadata: ["stream": "\(route.broadcaster.name)", "symbol": "\(query.symbol ?? "*")"])
        return .upgrade(
            PushWebSocketSession(
                route: route, query: query, subscription: subscription, channel: channel, handler: handler))
    }
}

/// Between the HTTP decoder and NIO's upgrade handler, for the connection's first request only: a push GET
/// asking for WebSocket is admitted (the upgrader then switches) or refused here with the error JSON and
/// `Connection: close`; any other `Upgrade` header is dropped so the request is served as plain HTTP/1.1 (the
/// upgrade handler would otherwise swallow it). Until that first head it also answers what Hummingbird's
/// handlers, not there yet, would: a request the decoder cannot frame gets the error JSON, a graceful shutdown
/// closes the idle connection.
final class PushUpgradeGate: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    enum Decision {
        case plainHTTP
        case upgrade(PushWebSocketSession)
        case refuse(HTTPResponse.Status, String, retryAfter: Int?)
    }

    private let admitted: NIOLoopBoundBox<PushWebSocketSession?>
    private let decide: (HTTPRequestHead) -> Decision
    /// A refusal was written: the rest of the request is dropped and the connection closes.
    private var refused = false

    init(admitted: NIOLoopBoundBox<PushWebSocketSession?>, decide: @escaping (HTTPRequestHead) -> Decision) {
        self.admitted = admitted
        self.decide = decide
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if refused { return }
        guard case .head(var head) = unwrapInboundIn(data) else {
            context.fireChannelRead(data)
            return
        }
        if head.headers.contains(name: "Upgrade") {
            switch decide(head) {
            case .plainHTTP:
                head.headers.remove(name: "Upgrade")
            case .upgrade(let session):
                admitted.value = session
            case .refuse(let status, let body, let retryAfter):
                refused = true
                var headers: HTTPHeaders = [
                    "Content-Type": "application/json", "Connection": "close", "Server": "te-gateway"
                ]
                if status == .unauthorized { headers.add(name: "WWW-Authenticate", value: "Bearer") }
                if let retryAfter { headers.add(name: "Retry-After", value: String(retryAfter)) }
                respond(context: context, status: status, body: body, headers: headers)
                return
            }
        }
        context.fireChannelRead(wrapInboundOut(.head(head)))
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard !refused, let framing = FramingErrorHandler.requestError(error) else {
            if !refused { context.fireErrorCaught(error) }
            return
        }
        refused = true
        respond(
            context: context, status: framing.status, body: framing.json,
            headers: ["Content-Type": "application/json", "Connection": "close", "Server": "te-gateway"])
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func respond(
        context: ChannelHandlerContext, status: HTTPResponse.Status, body: String, headers: HTTPHeaders
    ) {
        let buffer = context.channel.allocator.buffer(string: body)
        var head = HTTPResponseHead(version: .http1_1, status: .init(statusCode: status.code), headers: headers)
        head.headers.add(name: "Content-Length", value: String(buffer.readableBytes))
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in context.close(promise: nil) }
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
        if let pending = pendingClose { close(pending.0, reason: pending.1) }
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
        context.writeAndFlush(
            wrapOutboundOut(WebSocketFrame(fin: true, opcode: .ping, data: ByteBuffer())), promise: nil)
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
        context.writeAndFlush(
            wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: data)), promise: nil)
        closeTimer = context.eventLoop.scheduleTask(in: PushWebSocket.closeTimeout) { context.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .ping:
            guard !closeSent else { return }
            context.writeAndFlush(
                wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)), promise: nil)
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
                context.writeAndFlush(
                    wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: answer))
                )
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
