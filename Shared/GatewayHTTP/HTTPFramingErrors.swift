import GatewayEngine
import HTTPTypes
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1

/// When to answer a request the HTTP/1.1 decoder could not frame (bad or conflicting `Content-Length`,
/// a bad chunk size, `Transfer-Encoding` with `Content-Length`, an unconvertible head): once every
/// complete request before it has been answered, so answers keep request order; then nothing more is
/// read or written and the connection closes.
struct FramingErrorState {
    enum Phase: Equatable {
        case open
        /// The error answer waits for earlier requests' answers.
        case pending(RequestError)
        /// The error answer is written; what is still read or written is dropped.
        case failed
    }

    enum Action: Equatable {
        case none
        case answer(RequestError)
    }

    private(set) var phase = Phase.open
    /// Requests whose last part arrived.
    private var completeRequests = 0
    /// Responses whose last part was written (a response may go out before its request's body is read).
    private var answeredResponses = 0

    var dropsTraffic: Bool { phase == .failed }

    mutating func requestEnded() {
        if case .open = phase { completeRequests += 1 }
    }

    mutating func framingFailed(_ error: RequestError) -> Action {
        guard case .open = phase else { return .none }
        phase = .pending(error)
        return answerIfDue()
    }

    mutating func responseEnded() -> Action {
        answeredResponses += 1
        return answerIfDue()
    }

    private mutating func answerIfDue() -> Action {
        guard case .pending(let error) = phase, answeredResponses >= completeRequests else { return .none }
        phase = .failed
        return .answer(error)
    }
}

/// Answers framing errors with the error JSON (status 400, `Connection: close`) instead of Hummingbird's
/// empty 400. First of the handlers after the HTTP codec, so it sees every request's end and every
/// response's end, from the score fast path and from Hummingbird alike; it swallows the decoder's error
/// so Hummingbird writes nothing of its own.
final class FramingErrorHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private var state = FramingErrorState()

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if state.dropsTraffic { return }
        if case .end = unwrapInboundIn(data) { state.requestEnded() }
        context.fireChannelRead(data)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if state.dropsTraffic { return }  // e.g. the decoder reporting data after its error
        guard let framing = Self.requestError(error) else {
            context.fireErrorCaught(error)
            return
        }
        perform(state.framingFailed(framing), context: context)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if state.dropsTraffic {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        guard case .end = unwrapOutboundIn(data) else {
            context.write(data, promise: promise)
            return
        }
        let action = state.responseEnded()
        context.write(data, promise: promise)
        perform(action, context: context)
    }

    private func perform(_ action: FramingErrorState.Action, context: ChannelHandlerContext) {
        guard case .answer(let error) = action else { return }
        let json = error.json
        var body = context.channel.allocator.buffer(capacity: json.utf8.count)
        body.writeString(json)
        let head = HTTPResponse(
            status: .badRequest,
            headerFields: [
                .contentType: "application/json", .contentLength: String(body.readableBytes), .connection: "close",
                .date: HTTPDate.now(), .server: "te-gateway"
            ])
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(body)), promise: nil)
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: written)
        written.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }

    /// The client error for what the decoder or the head conversion reported; nil for anything else.
    static func requestError(_ error: any Error) -> RequestError? {
        if let parser = error as? HTTPParserError {
            let field: String? =
                switch parser {
                case .invalidContentLength, .unexpectedContentLength: "Content-Length"
                default: nil
                }
            return RequestError(.malformedHTTP, "malformed HTTP/1.1 request: \(parser.debugDescription)", field: field)
        }
        if let conversion = error as? HTTP1TypeConversionError {
            return RequestError(.malformedHTTP, "malformed HTTP/1.1 request head: \(conversion)")
        }
        return nil
    }
}
