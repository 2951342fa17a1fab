import Foundation
import HTTPTypes
import NIOCore
import NIOHTTPTypes
import ServiceKit
import Synchronization
import TEModels

/// Serves `POST /v1/score` on the connection's event loop, in the channel pipeline ahead of
/// Hummingbird's router; every other request passes through to Hummingbird unchanged.
///
/// Why: through Hummingbird every request crosses NIOAsyncChannel's async sequences, a Request/Response
/// pair and the router. Measured on this 2-core machine (release, 32 connections): 41 µs of gateway CPU
/// per `GET /healthz`, which alone capped the gateway near 33k requests/s before any scoring. Here the
/// body is parsed straight from the channel's buffer, one Task runs the decision, and the answer is
/// written from the event loop.
///
/// HTTP/1.1 ordering: a connection's answers must leave in request order. The handler takes a score
/// request only while no request it passed to Hummingbird is still unanswered (otherwise that score
/// request goes to Hummingbird's own `/v1/score` route: same code, slower). While its own answer is
/// pending, later pipelined parts wait in `held` and the channel stops reading; they are replayed once
/// the answer is written.
///
/// Graceful shutdown: Hummingbird's connection-state handler (after this one) closes a connection on
/// `ChannelShouldQuiesceEvent` unless a request it saw is in progress, and it never sees this handler's.
/// So the event is held while a score request is being read or answered; the answer then goes out with
/// `Connection: close` and the connection closes after it.
final class ScoreFastPathHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private enum Phase {
        case idle
        /// Reading a score request's body (`nil` once it exceeded the limit: answered 400 at its end).
        case collecting(HTTPRequest, ByteBuffer?, arrival: ContinuousClock.Instant)
        /// The current request belongs to Hummingbird.
        case forwarding
        /// A score answer is being computed; nothing else is read meanwhile.
        case answering
    }

    private let api: GatewayAPI
    private var phase = Phase.idle
    /// Requests passed to Hummingbird whose response has not been written yet.
    private var forwardedUnanswered = 0
    private var held = CircularBuffer<HTTPRequestPart>()
    private var readHeld = false
    /// The server is shutting down: close after the pending answer.
    private var quiescing = false

    init(api: GatewayAPI) { self.api = api }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if case .answering = phase {
            held.append(part)
            return
        }
        handle(part, context: context)
    }

    private func handle(_ part: HTTPRequestPart, context: ChannelHandlerContext) {
        switch (phase, part) {
        case (.idle, .head(let head)):
            if forwardedUnanswered == 0, head.method == .post, Self.isScorePath(head.path) {
                let bodyLimitExceeded = head.headerFields[.contentLength].flatMap { Int($0) }.map {
                    $0 > ScoreRequestParser.maxBodyBytes
                } ?? false
                phase = .collecting(
                    head, bodyLimitExceeded ? nil : context.channel.allocator.buffer(capacity: 256), arrival: .now)
            } else {
                forwardedUnanswered += 1
                phase = .forwarding
                context.fireChannelRead(wrapInboundOut(part))
            }
        case (.collecting(let head, var body?, let arrival), .body(var chunk)):
            phase = .idle  // drop the reference so `body` is uniquely owned while appending
            if body.readableBytes + chunk.readableBytes > ScoreRequestParser.maxBodyBytes {
                phase = .collecting(head, nil, arrival: arrival)
            } else {
                body.writeBuffer(&chunk)
                phase = .collecting(head, body, arrival: arrival)
            }
        case (.collecting(_, nil, _), .body):
            break  // over the limit: discarded, answered 400 at the end
        case (.collecting(let head, let body, let arrival), .end):
            phase = .answering
            answer(head, body: body, arrival: arrival, context: context)
        case (.forwarding, .end):
            phase = .idle
            context.fireChannelRead(wrapInboundOut(part))
        case (.forwarding, _), (.idle, _):
            // `.idle` with a body/end part cannot come from the HTTP decoder; Hummingbird rejects it.
            context.fireChannelRead(wrapInboundOut(part))
        case (.collecting, .head), (.answering, _):
            // A head inside a request cannot come from the HTTP decoder; `.answering` never reaches here.
            context.close(promise: nil)
        }
    }

    static func isScorePath(_ path: String?) -> Bool {
        guard let path else { return false }
        return path == "/v1/score" || path.hasPrefix("/v1/score?")
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            switch phase {
            case .collecting, .answering:
                quiescing = true
                return
            case .idle, .forwarding:
                break
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func answer(_ head: HTTPRequest, body: ByteBuffer?, arrival: ContinuousClock.Instant, context: ChannelHandlerContext) {
        let closeAfter = head.headerFields[.connection]?.lowercased() == "close"
        let client: APIClient
        switch api.admit(authorization: head.headerFields[.authorization]) {
        case .admitted(let admitted): client = admitted
        case .refused(let status, let body, let retryAfter):
            write(status, body, retryAfter: retryAfter, closeAfter: closeAfter, context: context)
            return
        }
        let request: ScoreRequest
        let requestID: String?
        switch GatewayAPI.admitScore(body: body, headers: head.headerFields) {
        case .success(let (r, id)): (request, requestID) = (r, id)
        case .failure(let error):
            write(error.status, error.json, closeAfter: closeAfter, context: context)
            return
        }
        let engine = api.d.engine
        let eventLoop = context.eventLoop
        let bound = NIOLoopBound((self, context), eventLoop: eventLoop)
        // Trace context only when a trace is on or came in: otherwise the untraced call, unchanged.
        let incoming = GatewayAPI.traceHeaders(head.headerFields)
        Task {
            let answer: ScoreAnswer
            let traceparent: String?
            if let incoming {
                let traced = await engine.score(
                    request, requestID: requestID, arrival: arrival, client: client, trace: incoming)
                answer = traced.0
                traceparent = traced.traceparent
            } else {
                answer = await engine.score(request, requestID: requestID, arrival: arrival, client: client)
                traceparent = nil
            }
            let (status, json) = ScoreResponseJSON.answer(answer)
            if eventLoop.inEventLoop {
                let (handler, context) = bound.value
                handler.write(status, json, traceparent: traceparent, closeAfter: closeAfter, context: context)
            } else {
                eventLoop.execute {
                    let (handler, context) = bound.value
                    handler.write(status, json, traceparent: traceparent, closeAfter: closeAfter, context: context)
                }
            }
        }
    }

    /// Writes a score answer, then replays what was held back while it was computed.
    private func write(
        _ status: HTTPResponse.Status, _ json: String, retryAfter: Int? = nil, traceparent: String? = nil,
        closeAfter requested: Bool, context: ChannelHandlerContext
    ) {
        let closeAfter = requested || quiescing
        var body = context.channel.allocator.buffer(capacity: json.utf8.count)
        body.writeString(json)
        var fields = HTTPFields()
        fields.reserveCapacity(7)
        fields[.contentType] = "application/json"
        fields[.contentLength] = String(body.readableBytes)
        fields[.date] = HTTPDate.now()
        fields[.server] = "te-gateway"
        if status == .unauthorized { fields[.wwwAuthenticate] = "Bearer" }
        if let retryAfter { fields[.retryAfter] = String(retryAfter) }
        if let traceparent { fields[GatewayAPI.traceparentHeader] = traceparent }
        if closeAfter { fields[.connection] = "close" }
        context.write(wrapOutboundOut(.head(HTTPResponse(status: status, headerFields: fields))), promise: nil)
        context.write(wrapOutboundOut(.body(body)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        phase = .idle
        if closeAfter {
            held.removeAll()
            context.close(promise: nil)
            return
        }
        // Replayed parts reach Hummingbird like fresh reads: its async channel hands them over at the
        // read-complete event.
        let replayed = !held.isEmpty
        defer { if replayed { context.fireChannelReadComplete() } }
        while let part = held.popFirst() {
            handle(part, context: context)
            if case .answering = phase { return }  // the next answer replays the rest
        }
        if readHeld {
            readHeld = false
            context.read()
        }
    }

    // MARK: outbound

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { forwardedUnanswered -= 1 }
        context.write(data, promise: promise)
    }

    /// Backpressure: no new bytes while an answer is pending (pipelined parts already read wait in `held`).
    func read(context: ChannelHandlerContext) {
        if case .answering = phase {
            readHeld = true
        } else {
            context.read()
        }
    }
}

/// The `Date` header value (IMF-fixdate), formatted at most once per second per process.
enum HTTPDate {
    private static let cache = Mutex<(second: Int, value: String)>((-1, ""))

    static func now() -> String {
        let second = Int(time(nil))
        if let hit = cache.withLock({ $0.second == second ? $0.value : nil }) { return hit }
        var t = time_t(second)
        var parts = tm()
        gmtime_r(&t, &parts)
        var buffer = [CChar](repeating: 0, count: 40)
        let n = strftime(&buffer, buffer.count, "%a, %d %b %Y %H:%M:%S GMT", &parts)
        let value = String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        cache.withLock { $0 = (second, value) }
        return value
    }
}
