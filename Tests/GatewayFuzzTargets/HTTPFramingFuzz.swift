import Foundation
import FuzzTargets
// The pipeline's own handlers (FramingErrorHandler, ScoreFastPathHandler, GatewayAPI) are internal to
// GatewayCore; debug builds (the tests' and fuzz/'s) are built for testing.
@testable import GatewayCore
import HTTPTypes
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1

/// The gateway's HTTP/1.1 framing over arbitrary bytes (fuzz/corpus/http-framing): the input is one
/// connection's byte stream into the gateway's own pipeline on an `EmbeddedChannel` — NIO's decoder and
/// encoder as Hummingbird configures them, the head conversion, `FramingErrorHandler` and
/// `ScoreFastPathHandler` built from real `GatewayDependencies`. Behind them, where Hummingbird's router
/// sits, `RouterStandIn` answers each forwarded request 404 (error JSON naming the request's index) when
/// its last part arrives. Authentication is on with a key no input carries (made at random per process),
/// so every score request the fast path takes is answered on the event loop (401) after its body was
/// read, and no input reaches Triton or Redis.
///
/// Invariants: nothing crashes; the bytes written are a sequence of well-formed HTTP/1.1 responses (status
/// line, headers, `Content-Length` body); every response is a 4xx carrying the error JSON
/// (`{"error":{"code","message",…}}`), never a 5xx; and they answer the requests in order: one per request
/// the decoder completed — the fast path's 401 for `POST /v1/score`, the stand-in's for the rest, numbered
/// in sequence — up to a `Connection: close` request, then (if the bytes stop framing) one 400
/// `malformed_http`, and nothing after it.
public enum HTTPFramingFuzz {
    public static let name = "http-framing"

    static let api: GatewayAPI = {
        let key = (0..<32).map { _ in String(UInt8.random(in: 0...255), radix: 16) }.joined()
        do {
            let config = try GatewayConfiguration(environment: [
                "REDIS_URL": "redis://127.0.0.1:1/0", "TRITON_URL": "127.0.0.1:1", "GATEWAY_API_KEYS": "fuzz:\(key)",
            ])
            return GatewayAPI(try buildDependencies(config))
        } catch {
            fatalError("http-framing harness: \(error)")
        }
    }()

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

    public static func fuzz(_ start: UnsafePointer<UInt8>?, _ count: Int) -> Int32 { fuzzCallback(name, start, count, run) }

    // MARK: The pipeline

    /// Feeds `bytes` to the gateway's pipeline in two writes (split in the middle, so a request can arrive
    /// in pieces) and returns every byte it wrote.
    static func serve(_ bytes: [UInt8]) throws -> [UInt8] {
        let channel = EmbeddedChannel()
        defer { _ = try? channel.finish(acceptAlreadyClosed: true) }
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(SocketStandIn())
        try sync.configureHTTPServerPipeline(
            withPipeliningAssistance: false, withErrorHandling: false, withOutboundHeaderValidation: false)
        try sync.addHandler(HTTP1ToHTTPServerCodec(secure: false))
        try sync.addHandler(FramingErrorHandler())
        try sync.addHandler(ScoreFastPathHandler(api: api))
        try sync.addHandler(RouterStandIn())
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
    /// message names the request's index among the stand-in's (so the order is visible on the wire).
    final class RouterStandIn: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = HTTPRequestPart
        typealias OutboundOut = HTTPResponsePart
        private var index = 0
        private var close = false

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head): close = head.headerFields[.connection]?.lowercased() == "close"
            case .body: break
            case .end:
                let json = RequestError.json(code: "not_found", message: "stand-in #\(index)", field: nil)
                index += 1
                var body = context.channel.allocator.buffer(capacity: json.utf8.count)
                body.writeString(json)
                var fields: HTTPFields = [.contentType: "application/json", .contentLength: String(body.readableBytes)]
                if close { fields[.connection] = "close" }
                context.write(wrapOutboundOut(.head(HTTPResponse(status: .notFound, headerFields: fields))), promise: nil)
                context.write(wrapOutboundOut(.body(body)), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
                if close { context.close(promise: nil) }
            }
        }

        // Errors are FramingErrorHandler's to answer; what reaches here is dropped like Hummingbird does.
        func errorCaught(context: ChannelHandlerContext, error: any Error) {}
    }

    // MARK: What the requests call for

    enum Kind: Equatable, CustomStringConvertible {
        /// The fast path's answer to a score request (401: no key).
        case score
        /// The stand-in's answer to request number n of those it got.
        case routed(Int)
        /// The framing error's 400 `malformed_http`.
        case malformed

        var description: String {
            switch self {
            case .score: "score 401"
            case .routed(let n): "routed #\(n)"
            case .malformed: "400 malformed_http"
            }
        }
    }

    /// The answers `bytes` call for, from NIO's decoder and the head conversion alone: one per complete
    /// request in order (up to one that says `Connection: close`), then the framing error's if the bytes stop
    /// framing before such a request.
    static func expectedAnswers(_ bytes: [UInt8]) -> [Kind] {
        let channel = EmbeddedChannel()
        defer { _ = try? channel.finish(acceptAlreadyClosed: true) }
        var failed = false
        do {
            try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)))
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
        var answers: [Kind] = []
        var routed = 0
        var current: (score: Bool, close: Bool)?
        while let part = try? channel.readInbound(as: HTTPRequestPart.self) {
            switch part {
            case .head(let head):
                current = (head.method == .post && ScoreFastPathHandler.isScorePath(head.path),
                           head.headerFields[.connection]?.lowercased() == "close")
            case .body: break
            case .end:
                guard let request = current else { continue }
                if request.score {
                    answers.append(.score)
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
                throw FuzzViolation("response \(out.count + 1): no end of head in \(String(decoding: rest.prefix(200), as: UTF8.self).debugDescription)")
            }
            let head = String(decoding: rest[..<headEnd], as: UTF8.self)
            rest = rest[(headEnd + 4)...]
            var lines = head.components(separatedBy: "\r\n")
            let statusLine = lines.removeFirst()
            let parts = statusLine.split(separator: " ", maxSplits: 2)
            guard parts.count >= 2, parts[0] == "HTTP/1.1", let status = Int(parts[1]), (100...599).contains(status) else {
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
                throw FuzzViolation("response \(out.count + 1) (\(status)): no Content-Length, or a body shorter than it")
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
                throw FuzzViolation("response \(out.count + 1) (\(status)): body is not the error JSON: \(String(decoding: body, as: UTF8.self).debugDescription)")
            }
            let kind: Kind
            switch (status, code) {
            case (401, "unauthorized"): kind = .score
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
