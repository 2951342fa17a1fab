import Foundation
import FuzzTargets
import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1

// The pipeline's own handlers (FramingErrorHandler, ScoreFastPathHandler, GatewayAPI) are internal to
// GatewayHTTP; debug builds (the tests' and fuzz/'s) are built for testing.
@testable import GatewayEngine
@testable import GatewayHTTP

/// The gateway's HTTP/1.1 framing over arbitrary bytes (fuzz/corpus/http-framing): the input is one
/// connection's byte stream into the pipeline the gateway sets up for every connection, on an
/// `EmbeddedChannel`: `GatewayChannel.setup` itself (NIO's decoder and encoder, `PushUpgradeGate` and NIO's
/// upgrade handler for the first request, then the head conversion and `GatewayChannel.httpHandlers` —
/// `FramingErrorHandler` and `ScoreFastPathHandler` — built from real `GatewayDependencies`). The router is
/// Hummingbird's async responder, which cannot run on an `EmbeddedChannel`: `RouterStandIn`, added last of
/// `additionalChannelHandlers` (so the `HTTPConnectionStateHandler` and async channel behind it see nothing),
/// takes its place and answers each request 404 (error JSON naming the request's index) when its last part
/// arrives. Authentication is on with a key no input carries (made at random per
/// process), so every score request the fast path takes is answered on the event loop (401) after its body
/// was read, every WebSocket upgrade of a push stream is refused (401), and no input reaches Triton or Redis.
///
/// Invariants: nothing crashes; the bytes written are a sequence of well-formed HTTP/1.1 responses (status
/// line, headers, `Content-Length` body); every response is a 4xx carrying the error JSON
/// (`{"error":{"code","message",…}}`), never a 5xx; and they answer the requests in order: one per request
/// the decoder completed — the fast path's 401 for `POST /v1/score`, the stand-in's for the rest, numbered
/// in sequence — up to a `Connection: close` request, then (if the bytes stop framing) one 400
/// `malformed_http`, and nothing after it. `Upgrade` is for the first request only: a first request that is
/// a WebSocket upgrade of a push stream (GET, `Upgrade: websocket`, a push path) gets the 401 alone, at its
/// head, and nothing after it; any other first `Upgrade` is served as plain HTTP; a later WebSocket upgrade
/// of a push stream gets the router's 400 `malformed_http` (the stand-in answers it as `pushStream` does,
/// with `Connection: close`) and nothing after it.
public enum HTTPFramingFuzz {
    public static let name = "http-framing"

    static let dependencies: GatewayDependencies = {
        let key = (0..<32).map { _ in String(UInt8.random(in: 0...255), radix: 16) }.joined()
        do {
            let config = try GatewayConfiguration(environment: [
                "REDIS_URL": "redis://127.0.0.1:1/0", "TRITON_URL": "127.0.0.1:1", "GATEWAY_API_KEYS": "fuzz:\(key)"
            ])
            return try buildDependencies(config)
        } catch {
            fatalError("http-framing harness: \(error)")
        }
    }()
    static let api = GatewayAPI(dependencies)
    static let routes = PushRoute.all(dependencies)
    /// Every connection's setup, as `buildApplication` makes it (fast path on), with the stand-in behind.
    static let gateway = GatewayChannel(
        responder: { _, _, _ in }, api: api, routes: routes,
        additionalChannelHandlers: { GatewayChannel.httpHandlers(api: api, fastPath: true) + [RouterStandIn()] })
    static let logger = Logger(label: "http-framing-fuzz")

    public static func run(_ bytes: [UInt8]) throws(FuzzViolation) {
        let expected = expectedAnswers(bytes)
        let written: [UInt8]
        do {
            written = try serve(bytes)
        } catch {
            throw FuzzViolation("the pipeline threw \(error)")
        }
        let responses = try parseResponses(written)
        guard responses.map(\.kind) == expected else {
            throw FuzzViolation("answers \(responses.map(\.kind)) where the requests call for \(expected)")
        }
    }

    public static func fuzz(_ start: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
        fuzzCallback(name, start, count, run)
    }

    // MARK: The pipeline

    /// Feeds `bytes` to the gateway's pipeline in two writes (split in the middle, so a request can arrive
    /// in pieces) and returns every byte it wrote.
    static func serve(_ bytes: [UInt8]) throws -> [UInt8] {
        let channel = EmbeddedChannel()
        defer { _ = try? channel.finish(acceptAlreadyClosed: true) }
        try channel.pipeline.syncOperations.addHandler(SocketStandIn())
        // The rest is the gateway's: the decoder, the upgrade gate and handler; the HTTP handlers (and the
        // stand-in) once the first request is not an upgrade.
        _ = try gateway.setup(channel: channel, logger: logger).wait()
        // Active, as an accepted connection is (EmbeddedChannel starts inactive).
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        let middle = bytes.count / 2
        for piece in [bytes[..<middle], bytes[middle...]] where !piece.isEmpty && channel.isActive {
            var buffer = channel.allocator.buffer(capacity: piece.count)
            buffer.writeBytes(piece)
            // A decoder error is handled in the pipeline (FramingErrorHandler); EmbeddedChannel rethrows it.
            _ = try? channel.writeInbound(buffer)
        }
        channel.embeddedEventLoop.run()
        var out: [UInt8] = []
        // HTTPResponseEncoder writes IOData.
        while let data = try channel.readOutbound(as: IOData.self) {
            guard case .byteBuffer(let buffer) = data else { throw FuzzViolation("the pipeline wrote a file region") }
            out += buffer.readableBytesView
        }
        return out
    }

    /// Where the socket is: once the connection is closed nothing more reaches the peer (EmbeddedChannel
    /// would still collect what handlers write while the close runs through the pipeline).
    final class SocketStandIn: ChannelOutboundHandler, RemovableChannelHandler {
        typealias OutboundIn = IOData
        private var closed = false

        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            if closed {
                promise?.fail(ChannelError.ioOnClosedChannel)
                return
            }
            context.write(data, promise: promise)
        }

        func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
            if mode == .all { closed = true }
            context.close(mode: mode, promise: promise)
        }
    }

    /// Where Hummingbird's router sits: answers each request at its end, 404 with the error JSON whose
    /// message names the request's index among the stand-in's (so the order is visible on the wire); a
    /// WebSocket upgrade of a push stream (a later request: the gate takes `Upgrade` off the first) gets
    /// `pushStream`'s 400 `malformed_http` and `Connection: close`.
    final class RouterStandIn: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = HTTPRequestPart
        typealias OutboundOut = HTTPResponsePart
        private var index = 0
        private var close = false
        private var lateUpgrade = false

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                lateUpgrade = HTTPFramingFuzz.isPushUpgrade(head)
                close = lateUpgrade || head.headerFields[.connection]?.lowercased() == "close"
            case .body: break
            case .end:
                let status: HTTPResponse.Status = lateUpgrade ? .badRequest : .notFound
                let json =
                    lateUpgrade
                    ? RequestError.json(
                        code: "malformed_http", message: "stand-in #\(index): late upgrade", field: "Upgrade")
                    : RequestError.json(code: "not_found", message: "stand-in #\(index)", field: nil)
                index += 1
                var body = context.channel.allocator.buffer(capacity: json.utf8.count)
                body.writeString(json)
                var fields: HTTPFields = [.contentType: "application/json", .contentLength: String(body.readableBytes)]
                if close { fields[.connection] = "close" }
                context.write(wrapOutboundOut(.head(HTTPResponse(status: status, headerFields: fields))), promise: nil)
                context.write(wrapOutboundOut(.body(body)), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
                if close { context.close(promise: nil) }
            }
        }

        // Errors are FramingErrorHandler's to answer; what reaches here is dropped like Hummingbird does.
        func errorCaught(context: ChannelHandlerContext, error: any Error) {}
    }

    // MARK: What the requests call for

    /// A GET asking for `Upgrade: websocket` on a push stream's path (as `PushWebSocket.isUpgrade` and the
    /// router read it).
    static func isPushUpgrade(_ head: HTTPRequest) -> Bool {
        head.method == .get && PushWebSocket.isUpgrade(head.headerFields) && routes[pushPath(head.path ?? "")] != nil
    }

    /// A first request's head that `GatewayChannel` takes as a WebSocket upgrade of a push stream (then
    /// refused: no input carries the key): a GET whose `Upgrade` values include `websocket`, on a push path.
    static func isFirstPushUpgrade(_ head: HTTPRequestHead) -> Bool {
        head.method == .GET && head.headers[canonicalForm: "upgrade"].contains { $0.lowercased() == "websocket" }
            && routes[pushPath(head.uri)] != nil
    }

    static func pushPath(_ uri: String) -> String {
        var path = URI(uri).path
        if path.count > 1, path.hasSuffix("/") { path.removeLast() }
        return path
    }

    enum Kind: Equatable, CustomStringConvertible {
        /// 401 `unauthorized`: the fast path's answer to a score request, or the refused WebSocket upgrade of
        /// a first request (no key).
        case unauthorized
        /// The stand-in's answer to request number n of those it got.
        case routed(Int)
        /// The stand-in's (the router's) 400 `malformed_http` to request number n, a late WebSocket upgrade.
        case lateUpgrade(Int)
        /// The framing error's 400 `malformed_http`.
        case malformed

        var description: String {
            switch self {
            case .unauthorized: "401 unauthorized"
            case .routed(let n): "routed #\(n)"
            case .lateUpgrade(let n): "late upgrade 400 #\(n)"
            case .malformed: "400 malformed_http"
            }
        }
    }

    /// Between the model's decoder and head conversion: the first request's head as `PushUpgradeGate` sees it.
    final class FirstHead: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias InboundOut = HTTPServerRequestPart
        var head: HTTPRequestHead?

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            if head == nil, case .head(let first) = unwrapInboundIn(data) { head = first }
            context.fireChannelRead(data)
        }
    }

    /// The answers `bytes` call for, from NIO's decoder and the head conversion alone: one per complete
    /// request in order (up to one that says `Connection: close`), then the framing error's if the bytes stop
    /// framing before such a request.
    static func expectedAnswers(_ bytes: [UInt8]) -> [Kind] {
        let channel = EmbeddedChannel()
        defer { _ = try? channel.finish(acceptAlreadyClosed: true) }
        var failed = false
        let first = FirstHead()
        do {
            try channel.pipeline.syncOperations.addHandler(
                ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)))
            try channel.pipeline.syncOperations.addHandler(first)
            try channel.pipeline.syncOperations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
            let middle = bytes.count / 2
            for piece in [bytes[..<middle], bytes[middle...]] where !piece.isEmpty {
                var buffer = channel.allocator.buffer(capacity: piece.count)
                buffer.writeBytes(piece)
                try channel.writeInbound(buffer)
            }
        } catch {
            failed = true
        }
        // The gate answers the first head and drops the rest (framing errors included), then closes.
        if let head = first.head, isFirstPushUpgrade(head) { return [.unauthorized] }
        var answers: [Kind] = []
        var routed = 0
        var heads = 0
        var current: (score: Bool, lateUpgrade: Bool, close: Bool)?
        while let part = try? channel.readInbound(as: HTTPRequestPart.self) {
            switch part {
            case .head(let head):
                heads += 1
                current = (
                    head.method == .post && ScorePipelineStateMachine.isScorePath(head.path),
                    heads > 1 && isPushUpgrade(head),
                    head.headerFields[.connection]?.lowercased() == "close"
                )
            case .body: break
            case .end:
                guard let request = current else { continue }
                if request.score {
                    answers.append(.unauthorized)
                } else if request.lateUpgrade {
                    answers.append(.lateUpgrade(routed))
                    return answers
                } else {
                    answers.append(.routed(routed))
                    routed += 1
                }
                if request.close { return answers }
                current = nil
            }
        }
        if failed { answers.append(.malformed) }
        return answers
    }

    // MARK: What was written

    struct Response {
        var status: Int
        var kind: Kind
    }

    /// Splits the written bytes into responses, checking each is well-formed and a 4xx with the error JSON.
    static func parseResponses(_ bytes: [UInt8]) throws(FuzzViolation) -> [Response] {
        var out: [Response] = []
        var rest = bytes[...]
        let crlfcrlf: [UInt8] = Array("\r\n\r\n".utf8)
        while !rest.isEmpty {
            guard let headEnd = rest.indices.first(where: { rest[$0...].starts(with: crlfcrlf) }) else {
                throw FuzzViolation(
                    "response \(out.count + 1): no end of head in \(String(decoding: rest.prefix(200), as: UTF8.self).debugDescription)"
                )
            }
            let head = String(decoding: rest[..<headEnd], as: UTF8.self)
            rest = rest[(headEnd + 4)...]
            var lines = head.components(separatedBy: "\r\n")
            let statusLine = lines.removeFirst()
            let parts = statusLine.split(separator: " ", maxSplits: 2)
            guard parts.count >= 2, parts[0] == "HTTP/1.1", let status = Int(parts[1]), (100...599).contains(status)
            else {
                throw FuzzViolation("response \(out.count + 1): bad status line \(statusLine.debugDescription)")
            }
            var length: Int?
            for line in lines {
                guard let colon = line.firstIndex(of: ":"), colon != line.startIndex else {
                    throw FuzzViolation("response \(out.count + 1): bad header line \(line.debugDescription)")
                }
                if line[..<colon].lowercased() == "content-length" {
                    length = Int(line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
                }
            }
            guard let length, length <= rest.count else {
                throw FuzzViolation(
                    "response \(out.count + 1) (\(status)): no Content-Length, or a body shorter than it")
            }
            let body = Array(rest.prefix(length))
            rest = rest.dropFirst(length)
            guard (400...499).contains(status) else {
                throw FuzzViolation("response \(out.count + 1): status \(status) for a client's bytes")
            }
            guard let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any],
                let error = object["error"] as? [String: Any], let code = error["code"] as? String,
                let message = error["message"] as? String
            else {
                throw FuzzViolation(
                    "response \(out.count + 1) (\(status)): body is not the error JSON: \(String(decoding: body, as: UTF8.self).debugDescription)"
                )
            }
            let kind: Kind
            switch (status, code) {
            case (401, "unauthorized"): kind = .unauthorized
            case (400, "malformed_http") where message.hasPrefix("stand-in #") && message.hasSuffix(": late upgrade"):
                guard let n = Int(message.dropFirst("stand-in #".count).dropLast(": late upgrade".count)) else {
                    throw FuzzViolation("response \(out.count + 1): stand-in message \(message)")
                }
                kind = .lateUpgrade(n)
            case (404, "not_found") where message.hasPrefix("stand-in #"):
                guard let n = Int(message.dropFirst("stand-in #".count)) else {
                    throw FuzzViolation("response \(out.count + 1): stand-in message \(message)")
                }
                kind = .routed(n)
            case (400, "malformed_http"): kind = .malformed
            default: throw FuzzViolation("response \(out.count + 1): unexpected \(status) \(code): \(message)")
            }
            out.append(Response(status: status, kind: kind))
        }
        return out
    }
}
