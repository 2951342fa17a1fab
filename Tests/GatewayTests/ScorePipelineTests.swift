import Foundation
import HTTPTypes
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import ServiceKit
import Synchronization
import Testing

@testable import GatewayEngine
@testable import GatewayHTTP

/// The pipelining rules as a pure state machine: what the fast path takes, holds and replays.
@Suite struct ScorePipelineStateMachineTests {
    let arrival = ContinuousClock.now

    func head(_ method: HTTPRequest.Method, _ path: String, _ fields: HTTPFields = [:]) -> HTTPRequestPart {
        .head(HTTPRequest(method: method, scheme: nil, authority: "gw", path: path, headerFields: fields))
    }

    func now() -> ContinuousClock.Instant { arrival }

    @Test func takesAScoreRequestAndHoldsWhatFollowsUntilItIsAnswered() throws {
        var s = ScorePipelineStateMachine()
        guard case .none = s.read(head(.post, "/v1/score?x=1"), now: now) else {
            Issue.record("head")
            return
        }
        guard case .none = s.read(.body(ByteBuffer(string: "{\"a\":")), now: now) else {
            Issue.record("body")
            return
        }
        guard case .none = s.read(.body(ByteBuffer(string: "1}")), now: now) else {
            Issue.record("body")
            return
        }
        guard case .answer(_, let body?, let at) = s.read(.end(nil), now: now) else {
            Issue.record("answer")
            return
        }
        #expect(String(buffer: body) == "{\"a\":1}")
        #expect(at == arrival)
        // Pipelined behind it: held, and no read while the answer is pending.
        guard case .none = s.read(head(.get, "/healthz"), now: now) else {
            Issue.record("held")
            return
        }
        guard case .none = s.read(.end(nil), now: now) else {
            Issue.record("held")
            return
        }
        #expect(s.heldParts == 2)
        #expect(s.readRequested() == false)
        #expect(s.inputClosed() == false, "the half-close waits for the answer")
        #expect(s.quiesce() == false)
        // The answer closes (the server is quiescing): the held parts are dropped.
        #expect(s.answerReady() == true)
        #expect(s.heldParts == 0)
        guard case .done(false, false, false) = s.replayNext(now: now) else {
            Issue.record("done")
            return
        }
    }

    @Test func replaysHeldPartsThenTheHeldReadAndHalfClose() throws {
        var s = ScorePipelineStateMachine()
        _ = s.read(head(.post, "/v1/score"), now: now)
        guard case .answer(_, let body?, _) = s.read(.end(nil), now: now) else {
            Issue.record("answer")
            return
        }
        #expect(body.readableBytes == 0, "no body: an empty one, for the parser to refuse")
        _ = s.read(head(.get, "/healthz"), now: now)
        _ = s.read(.end(nil), now: now)
        #expect(s.readRequested() == false)
        #expect(s.inputClosed() == false)
        #expect(s.answerReady() == false)
        guard case .part(.forward(.head)) = s.replayNext(now: now) else {
            Issue.record("head replay")
            return
        }
        guard case .part(.forward(.end)) = s.replayNext(now: now) else {
            Issue.record("end replay")
            return
        }
        guard case .done(readComplete: true, read: true, inputClosed: true) = s.replayNext(now: now) else {
            Issue.record("done")
            return
        }
        #expect(s.forwardedUnanswered == 1)
    }

    @Test func aScoreRequestBehindAnUnansweredRouteGoesToTheRouter() {
        var s = ScorePipelineStateMachine()
        guard case .forward = s.read(head(.get, "/v1/opportunities"), now: now) else {
            Issue.record("get")
            return
        }
        guard case .forward = s.read(.end(nil), now: now) else {
            Issue.record("end")
            return
        }
        guard case .forward = s.read(head(.post, "/v1/score"), now: now) else {
            Issue.record("score forwarded")
            return
        }
        guard case .forward = s.read(.end(nil), now: now) else {
            Issue.record("end")
            return
        }
        s.forwardedResponseEnded()
        s.forwardedResponseEnded()
        guard case .none = s.read(head(.post, "/v1/score"), now: now) else {
            Issue.record("taken")
            return
        }
    }

    @Test func oversizedBodiesAreAnsweredWithoutABody() {
        var s = ScorePipelineStateMachine()
        _ = s.read(head(.post, "/v1/score", [.contentLength: String(ScoreRequestParser.maxBodyBytes + 1)]), now: now)
        guard case .answer(_, nil, _) = s.read(.end(nil), now: now) else {
            Issue.record("declared")
            return
        }
        _ = s.answerReady()
        _ = s.replayNext(now: now)
        _ = s.read(head(.post, "/v1/score"), now: now)
        let big = ByteBuffer(repeating: 0x20, count: ScoreRequestParser.maxBodyBytes / 2 + 1)
        _ = s.read(.body(big), now: now)
        _ = s.read(.body(big), now: now)
        guard case .answer(_, nil, _) = s.read(.end(nil), now: now) else {
            Issue.record("found while reading")
            return
        }
    }

    @Test func aHeadInsideARequestCloses() {
        var s = ScorePipelineStateMachine()
        _ = s.read(head(.post, "/v1/score"), now: now)
        guard case .close = s.read(head(.post, "/v1/score"), now: now) else {
            Issue.record("close")
            return
        }
        guard case .none = s.read(.end(nil), now: now) else {
            Issue.record("dropped")
            return
        }
    }

    @Test func readsWaitWhileTheChannelIsNotWritable() {
        var s = ScorePipelineStateMachine()
        #expect(s.readRequested() == true)
        #expect(s.writabilityChanged(isWritable: false) == false)
        #expect(s.readRequested() == false)
        #expect(s.writabilityChanged(isWritable: true) == true, "the read that waited")
        #expect(s.writabilityChanged(isWritable: true) == false, "only once")
    }
}

/// `ScoreFastPathHandler` itself, on an in-memory channel with the gateway's HTTP/1.1 pipeline (NIO's decoder
/// and encoder, the head conversion, `FramingErrorHandler`, the fast path) and a stand-in for Hummingbird
/// behind it. The decisions come from `GatedResponder`, which answers when the test lets it; no servers.
@Suite(.timeLimit(.minutes(1))) struct ScoreFastPathHandlerTests {
    let valid = #"{"symbol":"BTCUSDT","features":[0.5,0.3,0.2,1,2,0.1,10,0.05]}"#

    @Test func pipelinedRequestsAreAnsweredInOrder() async throws {
        let responder = GatedResponder(blocking: ["a"])
        let wire = try await Wire(responder)
        try await wire.send(
            RawHTTP.score(valid, requestID: "a") + RawHTTP.get("/one") + RawHTTP.score(valid, requestID: "b")
                + RawHTTP.get("/two"))
        try await responder.waitUntilWaiting("a")
        #expect(try await wire.written().isEmpty, "nothing goes out before the first answer")
        #expect(responder.decided.isEmpty)
        responder.release("a")
        let responses = try await wire.responses(4)
        #expect(responses.map(\.status) == [200, 404, 200, 404])
        #expect(responses[0].body == #"{"request_id":"a"}"#)
        #expect(responses[1].body.contains("stand-in #0"))
        #expect(responses[2].body == #"{"request_id":"b"}"#)
        #expect(responses[3].body.contains("stand-in #1"))
        #expect(responses[0].headers["server"] == "te-gateway")
        #expect(responder.decided == ["a", "b"])
        try await wire.finish()
    }

    @Test func aRequestSplitAcrossReads() async throws {
        let responder = GatedResponder()
        let wire = try await Wire(responder)
        let whole = RawHTTP.score(valid, requestID: "split")
        let cuts = [whole.index(whole.startIndex, offsetBy: 20), whole.index(whole.endIndex, offsetBy: -30)]
        for piece in [whole[..<cuts[0]], whole[cuts[0]..<cuts[1]], whole[cuts[1]...]] {
            try await wire.send(String(piece))
        }
        var chunked =
            "POST /v1/score HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nX-Request-Id: chunked\r\n"
            + "Transfer-Encoding: chunked\r\n\r\n"
        for piece in [valid.prefix(10), valid.dropFirst(10)] {
            chunked += String(piece.utf8.count, radix: 16) + "\r\n" + piece + "\r\n"
        }
        try await wire.send(chunked)
        try await wire.send("0\r\n\r\n")
        let responses = try await wire.responses(2)
        #expect(responses.map(\.body) == [#"{"request_id":"split"}"#, #"{"request_id":"chunked"}"#])
        try await wire.finish()
    }

    @Test func clientErrorsAndMalformedFramingAre4xxWithTheErrorJSON() async throws {
        let responder = GatedResponder(blocking: ["first"])
        let wire = try await Wire(responder)
        // A score request in flight, a body that is not a score request, one over the limit, then bytes
        // that do not frame: each answered in order, the framing error last with `Connection: close`.
        let oversized = #"{"symbol":""# + String(repeating: "a", count: ScoreRequestParser.maxBodyBytes) + #""}"#
        try await wire.send(
            RawHTTP.score(valid, requestID: "first") + RawHTTP.score(#"{"symbol":"BTCUSDT","features":[1]}"#)
                + RawHTTP.score(oversized) + "POST /v1/score HTTP/1.1\r\nContent-Length: x\r\n\r\n")
        try await responder.waitUntilWaiting("first")
        responder.release("first")
        let responses = try await wire.responses(4)
        #expect(responses.map(\.status) == [200, 400, 400, 400])
        let codes = try responses.dropFirst().map { r in
            let json = try #require(try JSONSerialization.jsonObject(with: Data(r.body.utf8)) as? [String: Any])
            let error = try #require(json["error"] as? [String: Any])
            #expect((error["message"] as? String)?.isEmpty == false)
            return error["code"] as? String
        }
        #expect(codes == ["invalid_features", "body_too_large", "malformed_http"])
        #expect(responses[3].headers["connection"] == "close")
        try await wire.closed()
    }

    @Test func clientHalfCloseWithRequestsInFlight() async throws {
        let responder = GatedResponder(blocking: ["a"])
        let wire = try await Wire(responder)
        try await wire.send(
            RawHTTP.score(valid, requestID: "a") + RawHTTP.get("/after") + RawHTTP.score(valid, requestID: "c"))
        try await responder.waitUntilWaiting("a")
        // The client shuts its side; the stand-in, like Hummingbird, closes the connection when it sees that.
        try await wire.halfClose()
        #expect(wire.router.sawInputClosed == false, "held while answers are owed")
        responder.release("a")
        let responses = try await wire.responses(3)
        #expect(responses.map(\.status) == [200, 404, 200])
        #expect(responses[0].body == #"{"request_id":"a"}"#)
        #expect(responses[1].body.contains("stand-in #0"))
        #expect(responses[2].body == #"{"request_id":"c"}"#)
        try await wire.closed()
        #expect(wire.router.sawInputClosed)
    }

    @Test func writeBackPressureStopsReading() async throws {
        let responder = GatedResponder(blocking: ["a"])
        let wire = try await Wire(responder)
        let before = wire.socket.reads
        try await wire.setWritable(false)
        try await wire.read()
        #expect(wire.socket.reads == before, "no read while the client does not take its answers")
        try await wire.setWritable(true)
        #expect(wire.socket.reads == before + 1, "the read that waited")
        // Reads also wait for a pending answer, and go out once it is written.
        try await wire.send(RawHTTP.score(valid, requestID: "a"))
        try await responder.waitUntilWaiting("a")
        try await wire.read()
        #expect(wire.socket.reads == before + 1)
        responder.release("a")
        _ = try await wire.responses(1)
        #expect(wire.socket.reads == before + 2)
        try await wire.finish()
    }

    @Test func quiesceClosesAfterThePendingAnswer() async throws {
        let responder = GatedResponder(blocking: ["a"])
        let wire = try await Wire(responder)
        try await wire.send(RawHTTP.score(valid, requestID: "a") + RawHTTP.get("/dropped"))
        try await responder.waitUntilWaiting("a")
        try await wire.quiesce()
        #expect(wire.router.sawQuiesce == false)
        responder.release("a")
        let responses = try await wire.responses(1)
        #expect(responses[0].headers["connection"] == "close")
        try await wire.closed()
        #expect(try RawHTTP.parse(try await wire.written()).count == 1, "the held request is not served")
    }

    /// Once the decisions service has stopped (it stops after the HTTP server, so only a connection the server
    /// is closing anyway can see this) a score request is not left hanging: the connection closes unanswered.
    @Test func aScoreRequestAfterTheDecisionsStoppedClosesTheConnection() async throws {
        let responder = GatedResponder()
        let wire = try await Wire(responder)
        wire.stopDecisions()
        while wire.decisions.submit({}) { await Task.yield() }
        try await wire.send(RawHTTP.score(valid, requestID: "late"))
        try await wire.closed()
        #expect(try await wire.written().isEmpty)
        #expect(responder.decided.isEmpty)
    }
}

/// Decides `X-Request-Id` as `{"request_id":…}` (validation by the real parser and the real error JSON),
/// holding back the ids in `blocking` until `release`.
final class GatedResponder: ScoreResponder {
    private struct State {
        var blocking: Set<String>
        var waiting: [String: CheckedContinuation<Void, Never>] = [:]
        var decided: [String] = []
    }
    private let state: Mutex<State>

    init(blocking: Set<String> = []) { state = Mutex(State(blocking: blocking)) }

    var decided: [String] { state.withLock { $0.decided } }

    func admit(_ head: HTTPRequest, body: ByteBuffer?) -> ScoreAdmission<String> {
        guard let body else { return .reply(GatewayAPI.bodyTooLarge.reply) }
        switch body.withUnsafeReadableBytes({ ScoreRequestParser.parseResult($0) }) {
        case .failure(let error): return .reply(error.reply)
        case .success: return .decide(head.headerFields[GatewayAPI.requestIDHeader] ?? "")
        }
    }

    func decide(_ id: String, arrival: ContinuousClock.Instant) async -> ScoreReply {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s in
                guard s.blocking.contains(id) else { return true }
                s.waiting[id] = c
                return false
            }
            if now { c.resume() }
        }
        state.withLock { $0.decided.append(id) }
        return ScoreReply(status: .ok, json: #"{"request_id":"\#(id)"}"#)
    }

    func release(_ id: String) {
        let waiting = state.withLock { s in
            s.blocking.remove(id)
            return s.waiting.removeValue(forKey: id)
        }
        waiting?.resume()
    }

    func waitUntilWaiting(_ id: String) async throws {
        while state.withLock({ $0.waiting[id] == nil }) { try await Task.sleep(for: .milliseconds(1)) }
    }
}

/// One in-memory connection through the gateway's HTTP/1.1 handlers.
final class Wire: Sendable {
    let channel: NIOAsyncTestingChannel
    let socket: SocketEnd
    let router: RouterEnd
    private let output = Mutex("")
    /// Runs the decisions the handler hands over, as the gateway's `decisions` service does in its group.
    let decisions: BackgroundTasks
    private let running: Task<Void, Never>

    init<R: ScoreResponder>(_ responder: R) async throws {
        let socket = SocketEnd()
        let router = RouterEnd()
        let decisions = BackgroundTasks()
        self.decisions = decisions
        // The test's stand-in for the gateway's ServiceGroup; cancelled when the wire goes.
        running = Task { await decisions.run() }
        channel = try await NIOAsyncTestingChannel { channel in
            let sync = channel.pipeline.syncOperations
            try sync.addHandler(socket)
            try sync.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: false)
            try sync.addHandler(HTTP1ToHTTPServerCodec(secure: false))
            try sync.addHandler(FramingErrorHandler())
            try sync.addHandler(ScoreFastPathHandler(responder: responder, decisions: decisions))
            try sync.addHandler(router)
        }
        self.socket = socket
        self.router = router
        try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).get()
    }

    func send(_ text: String) async throws {
        // A decoder error is answered in the pipeline (FramingErrorHandler); the channel rethrows it.
        _ = try? await channel.writeInbound(ByteBuffer(string: text))
    }

    func halfClose() async throws {
        let channel = self.channel
        try await channel.testingEventLoop.executeInContext {
            channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        }
    }

    func quiesce() async throws {
        let channel = self.channel
        try await channel.testingEventLoop.executeInContext {
            channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
    }

    func read() async throws {
        let channel = self.channel
        try await channel.testingEventLoop.executeInContext { channel.read() }
    }

    func setWritable(_ writable: Bool) async throws {
        let channel = self.channel
        channel.isWritable = writable
        try await channel.testingEventLoop.executeInContext { channel.pipeline.fireChannelWritabilityChanged() }
    }

    private func append(_ data: IOData) throws {
        guard case .byteBuffer(let buffer) = data else { throw GatewayTestError(description: "a file region") }
        output.withLock { $0 += String(buffer: buffer) }
    }

    /// Everything written so far.
    func written() async throws -> String {
        while let data = try await channel.readOutbound(as: IOData.self) { try append(data) }
        return output.withLock { $0 }
    }

    /// Waits for `n` complete responses.
    func responses(_ n: Int) async throws -> [RawResponse] {
        while true {
            if let parsed = try? RawHTTP.parse(try await written()), parsed.count >= n { return parsed }
            try append(try await channel.waitForOutboundWrite(as: IOData.self))
        }
    }

    func closed() async throws {
        try await channel.closeFuture.get()
    }

    deinit { running.cancel() }

    /// Stops the decisions service as a shutdown does (it refuses new jobs from then on).
    func stopDecisions() { running.cancel() }

    func finish() async throws {
        #expect(channel.isActive)
        _ = try await channel.finish(acceptAlreadyClosed: false)
    }
}

/// Where the socket is: counts reads asked for; after a close nothing more goes out.
final class SocketEnd: ChannelOutboundHandler, RemovableChannelHandler, Sendable {
    typealias OutboundIn = IOData
    private let state = Mutex((reads: 0, closed: false))

    var reads: Int { state.withLock { $0.reads } }

    func read(context: ChannelHandlerContext) {
        state.withLock { $0.reads += 1 }
        context.read()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if state.withLock({ $0.closed }) {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        context.write(data, promise: promise)
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if mode == .all { state.withLock { $0.closed = true } }
        context.close(mode: mode, promise: promise)
    }
}

/// Where Hummingbird is: answers each request at its end, 404 with the error JSON numbering the requests it
/// got; closes the connection when the client's side closes (Hummingbird's loop ends there).
final class RouterEnd: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = HTTPRequestPart
    typealias OutboundOut = HTTPResponsePart
    private let state = Mutex((index: 0, inputClosed: false, quiesce: false))

    var sawInputClosed: Bool { state.withLock { $0.inputClosed } }
    var sawQuiesce: Bool { state.withLock { $0.quiesce } }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .end = unwrapInboundIn(data) else { return }
        let index = state.withLock { s in
            defer { s.index += 1 }
            return s.index
        }
        let json = RequestError.json(code: "not_found", message: "stand-in #\(index)", field: nil)
        let fields: HTTPFields = [.contentType: "application/json", .contentLength: String(json.utf8.count)]
        context.write(wrapOutboundOut(.head(HTTPResponse(status: .notFound, headerFields: fields))), promise: nil)
        context.write(wrapOutboundOut(.body(ByteBuffer(string: json))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent { state.withLock { $0.quiesce = true } }
        if let event = event as? ChannelEvent, event == .inputClosed {
            state.withLock { $0.inputClosed = true }
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {}
}
