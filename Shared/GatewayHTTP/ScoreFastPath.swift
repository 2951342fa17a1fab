import Foundation
import GatewayEngine
import HTTPTypes
import NIOCore
import NIOHTTPTypes
import ServiceKit
import Synchronization
import TEModels

/// `POST /v1/score` as one piece of code for both ways in: the fast path (`ScoreFastPathHandler`) and the
/// router's route (`GatewayAPI.score`) both admit with `admit`/`validate` and answer with `decide`.
protocol ScoreResponder: Sendable {
    associatedtype Admitted: Sendable
    /// On the event loop, before anything is awaited: the answer to give at once (401, 429, a 4xx for the
    /// body or its headers) or the admitted request.
    func admit(_ head: HTTPRequest, body: ByteBuffer?) -> ScoreAdmission<Admitted>
    /// The decision for an admitted request, encoded.
    func decide(_ admitted: Admitted, arrival: ContinuousClock.Instant) async -> ScoreReply
}

enum ScoreAdmission<Admitted: Sendable>: Sendable {
    case reply(ScoreReply)
    case decide(Admitted)
}

/// A score answer: the decision or an error JSON, and the headers that go with it.
struct ScoreReply: Sendable, Equatable {
    var status: HTTPResponse.Status
    var json: String
    /// `Retry-After` seconds (429).
    var retryAfter: Int? = nil
    /// The W3C `traceparent` to answer with.
    var traceparent: String? = nil

    /// Content type, `WWW-Authenticate` (401), `Retry-After`, `traceparent`.
    func addHeaders(to fields: inout HTTPFields) {
        fields[.contentType] = "application/json"
        if status == .unauthorized { fields[.wwwAuthenticate] = "Bearer" }
        if let retryAfter { fields[.retryAfter] = String(retryAfter) }
        if let traceparent { fields[GatewayAPI.traceparentHeader] = traceparent }
    }
}

extension RequestError {
    var reply: ScoreReply { ScoreReply(status: status, json: json) }
}

/// Serves `POST /v1/score` on the connection's event loop, in the channel pipeline ahead of
/// Hummingbird's router; every other request passes through to Hummingbird unchanged. A thin driver of
/// `ScorePipelineStateMachine` (which says what is taken, held and replayed, and when): it performs the
/// machine's actions, hands the decision to `decisions` (a child task of that service, not an unstructured
/// `Task`: the ServiceGroup owns every decision in flight) and writes the answer from the event loop.
///
/// Why: through Hummingbird every request crosses NIOAsyncChannel's async sequences, a Request/Response
/// pair and the router: 41 µs of gateway CPU per `GET /healthz` on this 2-core machine (release, 32
/// connections). Here the body is parsed straight from the channel's buffer.
///
/// Graceful shutdown: Hummingbird's connection-state handler (after this one) closes a connection on
/// `ChannelShouldQuiesceEvent` unless a request it saw is in progress, and it never sees this handler's;
/// the machine holds the event and the pending answer goes out with `Connection: close`. A client's
/// half-close is held the same way until the answers it waits for are written.
final class ScoreFastPathHandler<Responder: ScoreResponder>: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let responder: Responder
    private let decisions: BackgroundTasks
    private var state = ScorePipelineStateMachine()

    /// `decisions` runs each admitted request's decision; a service listed before the HTTP server, so it stops
    /// after the server has drained its connections (and with them this handler's answers).
    init(responder: Responder, decisions: BackgroundTasks) {
        self.responder = responder
        self.decisions = decisions
    }

    // MARK: inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        perform(state.read(unwrapInboundIn(data), now: { .now }), context: context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            guard state.quiesce() else { return }
        } else if let event = event as? ChannelEvent, event == .inputClosed {
            guard state.inputClosed() else { return }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if state.writabilityChanged(isWritable: context.channel.isWritable) { context.read() }
        context.fireChannelWritabilityChanged()
    }

    private func perform(_ action: ScorePipelineStateMachine.ReadAction, context: ChannelHandlerContext) {
        switch action {
        case .none: break
        case .forward(let part): context.fireChannelRead(wrapInboundOut(part))
        case .answer(let head, let body, let arrival): answer(head, body: body, arrival: arrival, context: context)
        case .close: context.close(promise: nil)
        }
    }

    private func answer(
        _ head: HTTPRequest, body: ByteBuffer?, arrival: ContinuousClock.Instant, context: ChannelHandlerContext
    ) {
        let admitted: Responder.Admitted
        switch responder.admit(head, body: body) {
        case .reply(let reply):
            write(reply, context: context)
            return
        case .decide(let a): admitted = a
        }
        let responder = self.responder
        let eventLoop = context.eventLoop
        let bound = NIOLoopBound((self, context), eventLoop: eventLoop)
        let taken = decisions.submit {
            let reply = await responder.decide(admitted, arrival: arrival)
            if eventLoop.inEventLoop {
                let (handler, context) = bound.value
                handler.write(reply, context: context)
            } else {
                eventLoop.execute {
                    let (handler, context) = bound.value
                    handler.write(reply, context: context)
                }
            }
        }
        // Refused only once the decisions service has begun to stop, which is after the HTTP server has: a
        // connection still reading then is one the server is closing anyway.
        if !taken { context.close(promise: nil) }
    }

    /// Writes a score answer, then replays what was held back while it was computed.
    private func write(_ reply: ScoreReply, context: ChannelHandlerContext) {
        let closeAfter = state.answerReady()
        var body = context.channel.allocator.buffer(capacity: reply.json.utf8.count)
        body.writeString(reply.json)
        var fields = HTTPFields()
        fields.reserveCapacity(7)
        reply.addHeaders(to: &fields)
        fields[.contentLength] = String(body.readableBytes)
        fields[.date] = HTTPDate.now()
        fields[.server] = "te-gateway"
        if closeAfter { fields[.connection] = "close" }
        context.write(wrapOutboundOut(.head(HTTPResponse(status: reply.status, headerFields: fields))), promise: nil)
        context.write(wrapOutboundOut(.body(body)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        if closeAfter {
            context.close(promise: nil)
            return
        }
        while true {
            switch state.replayNext(now: { .now }) {
            case .part(let action):
                perform(action, context: context)
            case .done(let readComplete, let read, let inputClosed):
                // Replayed parts reach Hummingbird like fresh reads: its async channel takes them at the
                // read-complete event.
                if readComplete { context.fireChannelReadComplete() }
                if inputClosed { context.fireUserInboundEventTriggered(ChannelEvent.inputClosed) }
                if read { context.read() }
                return
            }
        }
    }

    // MARK: outbound

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { state.forwardedResponseEnded() }
        context.write(data, promise: promise)
    }

    func read(context: ChannelHandlerContext) {
        if state.readRequested() { context.read() }
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
