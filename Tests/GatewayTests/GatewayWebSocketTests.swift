import Foundation
import GatewayHTTP
import HTTPTypes
import NIOCore
import Synchronization
import TEModels
import TERedis
import TestSupport
import Testing

@testable import GatewayEngine

/// A push message as the gateway sends it over WebSocket.
struct PushMessage: Decodable, Equatable {
    let id: String
    let event: String
}

/// A push message's payload.
struct PushEnvelope<T: Decodable>: Decodable {
    let data: T
}

/// A WebSocket client on a plain socket (handshake per RFC 6455, masked client frames): it sees exactly what
/// the gateway wrote, close frame included. It reads in the background, or (`reading: false`) not at all until
/// `readToEnd` — with a small receive buffer the gateway's writes then back up at once.
final class RawWebSocket: Sendable {
    struct Frame: Equatable {
        let opcode: UInt8
        let payload: [UInt8]
        var text: String { String(decoding: payload, as: UTF8.self) }
        /// A close frame's code and reason.
        var close: (code: Int, reason: String)? {
            guard opcode == 0x8, payload.count >= 2 else { return nil }
            return (Int(payload[0]) << 8 | Int(payload[1]), String(decoding: payload.dropFirst(2), as: UTF8.self))
        }
    }

    /// What arrived, parsed as it comes: the response head, then frames (and the text messages' envelopes).
    struct Wire {
        var bytes: [UInt8] = []
        var parsed = 0  // bytes consumed into `response` and `frames`
        var response: RawResponse?
        var frames: [Frame] = []
        var messages: [PushMessage] = []
        var texts: [String] = []
        var ended = false

        mutating func append(_ chunk: ArraySlice<UInt8>) {
            bytes += chunk
            if response == nil {
                guard let (head, start) = Self.parseHead(bytes) else { return }
                response = head
                parsed = head.status == 101 ? start : bytes.count
            }
            guard response?.status == 101 else { return }
            while bytes.count - parsed >= 2 {
                let opcode = bytes[parsed] & 0x0F
                var length = Int(bytes[parsed + 1] & 0x7F)
                var offset = parsed + 2
                if length == 126 {
                    guard bytes.count - offset >= 2 else { return }
                    length = Int(bytes[offset]) << 8 | Int(bytes[offset + 1])
                    offset += 2
                } else if length == 127 {
                    guard bytes.count - offset >= 8 else { return }
                    length = bytes[offset..<offset + 8].reduce(0) { $0 << 8 | Int($1) }
                    offset += 8
                }
                guard bytes.count - offset >= length else { return }
                let frame = Frame(opcode: opcode, payload: Array(bytes[offset..<offset + length]))
                frames.append(frame)
                if opcode == 0x1 {
                    texts.append(frame.text)
                    if let message = try? JSONDecoder().decode(PushMessage.self, from: Data(frame.payload)) {
                        messages.append(message)
                    }
                }
                parsed = offset + length
            }
            if parsed > 1 << 20 {  // keep the unparsed tail only
                bytes.removeFirst(parsed)
                parsed = 0
            }
        }

        static func parseHead(_ bytes: [UInt8]) -> (RawResponse, Int)? {
            guard bytes.count >= 4,
                let end = (0...(bytes.count - 4)).first(where: {
                    bytes[$0] == 13 && bytes[$0 + 1] == 10 && bytes[$0 + 2] == 13 && bytes[$0 + 3] == 10
                })
            else { return nil }
            let lines = String(decoding: bytes[..<end], as: UTF8.self).split(separator: "\r\n")
            guard let status = lines.first.flatMap({ Int($0.dropFirst(9).prefix(3)) }) else { return nil }
            var headers: [String: String] = [:]
            for line in lines.dropFirst() {
                guard let colon = line.firstIndex(of: ":") else { continue }
                headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(
                    in: .whitespaces)
            }
            var body = ""
            if status != 101 {
                let length = Int(headers["content-length"] ?? "0") ?? 0
                guard bytes.count - (end + 4) >= length else { return nil }
                body = String(decoding: bytes[(end + 4)..<(end + 4 + length)], as: UTF8.self)
            }
            return (RawResponse(status: status, headers: headers, body: body), end + 4)
        }
    }

    final class Shared: Sendable {
        let fd: Int32
        let wire = Mutex(Wire())
        init(fd: Int32) { self.fd = fd }

        /// Reads what has arrived; true once the gateway closed the connection.
        func readAvailable() -> Bool {
            var chunk = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if n > 0 {
                    wire.withLock { $0.append(chunk[..<n]) }
                    continue
                }
                let closed = n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)
                if closed { wire.withLock { $0.ended = true } }
                return closed
            }
        }

        deinit { close(fd) }
    }

    private let shared: Shared
    private let reader: Task<Void, Never>?

    /// `request`: sent instead of the WebSocket handshake (a plain HTTP request, read with `response()`).
    init(
        port: Int, path: String, headers: [String] = [], request: String? = nil, reading: Bool = true,
        receiveBuffer: Int32 = 1 << 20
    ) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var size = receiveBuffer
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else {
            close(fd)
            throw GatewayTestError(description: "connect failed: errno \(errno)")
        }
        let request =
            request ?? "GET \(path) HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            + headers.map { $0 + "\r\n" }.joined() + "\r\n"
        let bytes = Array(request.utf8)
        _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        let shared = Shared(fd: fd)
        self.shared = shared
        reader =
            reading
            ? Task {
                while !Task.isCancelled, !shared.readAvailable() { try? await Task.sleep(for: .milliseconds(2)) }
            } : nil
    }

    deinit { reader?.cancel() }

    var ended: Bool { shared.wire.withLock { $0.ended } }
    /// Everything read so far, as text (for plain HTTP answers).
    var raw: String { String(decoding: shared.wire.withLock { $0.bytes }, as: UTF8.self) }
    var frames: [Frame] { shared.wire.withLock { $0.frames } }
    var messages: [PushMessage] { shared.wire.withLock { $0.messages } }
    /// The close frame's code and reason, once one arrived.
    var closeFrame: (code: Int, reason: String)? { shared.wire.withLock { $0.frames.last?.close } }

    /// The `data` of each text message decoded as `T`.
    func data<T: Decodable>(_: T.Type) throws -> [T] {
        try shared.wire.withLock { $0.texts }.map {
            try JSONDecoder().decode(PushEnvelope<T>.self, from: Data($0.utf8)).data
        }
    }

    /// Waits until `count` messages have arrived or the connection ended; returns the envelopes.
    func messages(count: Int, timeout: Duration = .seconds(30)) async -> [PushMessage] {
        _ = await TestEnv.eventually(timeout: timeout, every: .milliseconds(10)) {
            self.messages.count >= count || self.ended
        }
        return messages
    }

    /// The response head (and a refusal's body).
    func response(timeout: Duration = .seconds(10)) async throws -> RawResponse {
        _ = await TestEnv.eventually(timeout: timeout, every: .milliseconds(10)) {
            if reader == nil { _ = shared.readAvailable() }
            return shared.wire.withLock { $0.response != nil || $0.ended }
        }
        return try #require(shared.wire.withLock { $0.response }, "no response head")
    }

    /// Sends one client frame (masked, as RFC 6455 requires of clients); payload under 126 bytes.
    func sendMasked(opcode: UInt8, payload: [UInt8]) {
        let mask: [UInt8] = [0x37, 0xFA, 0x21, 0x3D]
        let bytes =
            [0x80 | opcode, 0x80 | UInt8(payload.count)] + mask
            + payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
        _ = bytes.withUnsafeBytes { send(shared.fd, $0.baseAddress, $0.count, 0) }
    }

    /// Reads until the gateway closes the connection (true) or `timeout` passes (false).
    func readToEnd(timeout: Duration = .seconds(30)) async -> Bool {
        await TestEnv.eventually(timeout: timeout, every: .milliseconds(10)) {
            reader == nil ? shared.readAvailable() : ended
        }
    }

    /// Reads what has arrived (for a client created with `reading: false`).
    func readNow() { _ = shared.readAvailable() }
}

@Suite("push API: WebSocket", .serialized, .timeLimit(.minutes(4)))
struct GatewayWebSocketTests {
    static func publishPaced(_ opportunities: [Opportunity], to stream: String, redis: RedisClient) async throws
        -> [String]
    {
        // In chunks with pauses, so the clients read while entries are still being written.
        var ids: [String] = []
        for chunk in stride(from: 0, to: opportunities.count, by: 10) {
            ids += try await GatewayPushTests.publish(
                Array(opportunities[chunk..<min(chunk + 10, opportunities.count)]), to: stream, redis: redis)
            try await Task.sleep(for: .milliseconds(20))
        }
        return ids
    }

    @Test(
        "every opportunity once, in order, with its entry id, while being published; ?symbol= filters; Last-Event-ID resumes without a gap or duplicate"
    )
    func orderResumeAndFilter() async throws {
        let config = try GatewayTestEnv.config("ws-order")
        try await GatewayTestEnv.withGateway(config, waitForIdentity: false) { deps, client in
            let port = try #require(client.port)
            let redis = RedisClient(configuration: try TestEnv.redisConfiguration(), name: "ws-test")
            defer { redis.close() }
            let all = try RawWebSocket(port: port, path: "/v1/opportunities/stream")
            let eth = try RawWebSocket(port: port, path: "/v1/opportunities/stream?symbol=ETHUSDT")
            #expect(await TestEnv.eventually { deps.push.opportunities.clientCount == 2 })
            #expect(try await all.response().status == 101)

            let opportunities = (0..<200).map {
                GatewayPushTests.opportunity($0, symbol: $0 % 3 == 0 ? "ETHUSDT" : "BTCUSDT")
            }
            let ids = try await Self.publishPaced(opportunities, to: config.opportunitiesStream, redis: redis)
            let received = await all.messages(count: 200)
            #expect(received.map(\.id) == ids)
            #expect(received.allSatisfy { $0.event == "opportunity" })
            #expect(try all.data(Opportunity.self) == opportunities)
            let ethIDs = zip(ids, opportunities).filter { $0.1.symbol == "ETHUSDT" }.map(\.0)
            #expect(await eth.messages(count: ethIDs.count).map(\.id) == ethIDs)

            // A client that saw up to ids[99] comes back (header, and the query form): the rest of the backlog
            // first, then live entries, while more are being published.
            let resumed = try RawWebSocket(
                port: port, path: "/v1/opportunities/stream", headers: ["Last-Event-ID: \(ids[99])"])
            let resumedByQuery = try RawWebSocket(
                port: port, path: "/v1/opportunities/stream?symbol=BTCUSDT&last_event_id=\(ids[99])")
            let more = try await Self.publishPaced(
                (200..<260).map { GatewayPushTests.opportunity($0) }, to: config.opportunitiesStream, redis: redis)
            let after = await resumed.messages(count: 160)
            #expect(after.map(\.id) == Array(ids[100...]) + more, "no gap and no duplicate across the switch to live")
            let btcAfter = zip(ids, opportunities).dropFirst(100).filter { $0.1.symbol == "BTCUSDT" }.map(\.0) + more
            #expect(await resumedByQuery.messages(count: btcAfter.count).map(\.id) == btcAfter)
            #expect(await all.messages(count: 260).map(\.id) == ids + more)
        }
    }

    @Test(
        "a stalled client is dropped with close 1008 slow_consumer, counted, while a second client receives everything")
    func slowClientDropped() async throws {
        let config = try GatewayTestEnv.config("ws-slow") { $0.pushQueueLimit = 1500 }
        try await GatewayTestEnv.withGateway(config, waitForIdentity: false) { deps, client in
            let port = try #require(client.port)
            let redis = RedisClient(configuration: try TestEnv.redisConfiguration(), name: "ws-slow")
            defer { redis.close() }
            let stalled = try RawWebSocket(
                port: port, path: "/v1/opportunities/stream", reading: false, receiveBuffer: 4096)
            let reader = try RawWebSocket(port: port, path: "/v1/opportunities/stream")
            #expect(await TestEnv.eventually { deps.push.opportunities.clientCount == 2 })
            #expect(try await stalled.response().status == 101)
            // Once dropped, the stalled client reads again: what was in flight, then the close frame.
            let drained = Task { () -> Bool in
                guard await TestEnv.eventually(timeout: .seconds(120), { deps.push.opportunities.clientCount == 1 })
                else { return false }
                guard
                    await TestEnv.eventually(
                        timeout: .seconds(30),
                        {
                            stalled.readNow()
                            return stalled.closeFrame != nil
                        })
                else { return false }
                stalled.sendMasked(opcode: 0x8, payload: [0x03, 0xF0])  // answers the close (1008)
                return await stalled.readToEnd()
            }
            // ~2.5 KB per message, in waves the reading client takes in before the next (see the SSE test).
            let signals = (0..<64).map { "sig-\($0)-\(String(repeating: "x", count: 24))" }
            var ids: [String] = []
            for wave in 0..<16 {
                let batch = (wave * 500..<(wave + 1) * 500).map { i -> Opportunity in
                    var o = GatewayPushTests.opportunity(i)
                    o.signalIds = signals
                    return o
                }
                ids += try await GatewayPushTests.publish(batch, to: config.opportunitiesStream, redis: redis)
                _ = await reader.messages(count: ids.count, timeout: .seconds(60))
            }
            #expect(reader.messages.map(\.id) == ids, "the reading client got every message in order")
            #expect(await drained.value, "the gateway closed the stalled client's connection")
            let frames = stalled.frames
            let close = try #require(
                frames.last?.close, "the last frame is a close frame: \(frames.last.map { "\($0.opcode)" } ?? "none")")
            #expect(close.code == 1008)
            #expect(close.reason == "slow_consumer")
            // What it got before the close is a gap-free prefix of the stream.
            let got = frames.filter { $0.opcode == 0x1 }.compactMap {
                try? JSONDecoder().decode(PushMessage.self, from: Data($0.text.utf8)).id
            }
            #expect(got == Array(ids.prefix(got.count)))
            let metrics = String(buffer: try await client.execute(uri: "/metrics", method: .get).body)
            #expect(
                metrics.contains(
                    "te_gateway_push_dropped_total{stream=\"opportunities\",transport=\"websocket\",reason=\"slow_consumer\"} 1"
                ),
                "\(metrics)")
        }
    }

    @Test(
        "refusals keep the API's answers: 401 without a key, 400 for a bad id or symbol, 503 past the limit SSE and WebSocket share, 429 over the rate"
    )
    func limitsAndErrors() async throws {
        let config = try GatewayTestEnv.config("ws-limits") {
            $0.pushMaxClients = 1
            $0.apiKeys = try! APIKeyTable.parse("desk-a:ws-key", separator: ",", source: "test")
        }
        try await GatewayTestEnv.withGateway(config, waitForIdentity: false) { deps, client in
            let port = try #require(client.port)
            let auth = "Authorization: Bearer ws-key"
            let unauthorized = try await RawWebSocket(port: port, path: "/v1/opportunities/stream").response()
            #expect(unauthorized.status == 401)
            #expect(unauthorized.body.contains("\"code\":\"unauthorized\""), "\(unauthorized.body)")
            for (path, code) in [
                ("/v1/opportunities/stream?last_event_id=yesterday", "invalid_query"),
                ("/v1/decisions/stream?symbol=%20bad", "invalid_symbol")
            ] {
                let bad = try await RawWebSocket(port: port, path: path, headers: [auth]).response()
                #expect(bad.status == 400, "\(path)")
                #expect(bad.body.contains("\"code\":\"\(code)\""), "\(path): \(bad.body)")
            }

            let first = try RawWebSocket(port: port, path: "/v1/opportunities/stream", headers: [auth])
            #expect(try await first.response().status == 101)
            #expect(await TestEnv.eventually { deps.push.opportunities.clientCount == 1 })
            let second = try await RawWebSocket(port: port, path: "/v1/opportunities/stream", headers: [auth])
                .response()
            #expect(second.status == 503)
            #expect(second.body.contains("\"code\":\"too_many_streams\""), "\(second.body)")
            // One limit for both transports: an SSE client finds the slot taken too.
            let sse = try await SSETestClient(port: port, path: "/v1/opportunities/stream", headers: [auth])
            defer { sse.close() }
            #expect(await TestEnv.eventually { sse.status != nil && sse.body.contains("too_many_streams") })
            #expect(sse.status == 503)
            let metrics = String(
                buffer: try await client.execute(
                    uri: "/metrics", method: .get, headers: [.authorization: "Bearer ws-key"]
                ).body)
            #expect(
                metrics.contains("te_gateway_push_clients{stream=\"opportunities\",transport=\"websocket\"} 1"),
                "\(metrics)")
            #expect(
                metrics.contains("te_gateway_push_refused_total{stream=\"opportunities\",transport=\"websocket\"} 1"),
                "\(metrics)")
        }
        let limited = try GatewayTestEnv.config("ws-rate") {
            $0.apiKeys = try! APIKeyTable.parse("desk-b:rate-key", separator: ",", source: "test")
            $0.rateLimit = 0.01  // a burst of one, then one every 100 s
        }
        try await GatewayTestEnv.withGateway(limited, waitForIdentity: false) { deps, client in
            let port = try #require(client.port)
            let first = try RawWebSocket(
                port: port, path: "/v1/decisions/stream", headers: ["Authorization: Bearer rate-key"])
            #expect(try await first.response().status == 101)
            let second = try await RawWebSocket(
                port: port, path: "/v1/decisions/stream", headers: ["Authorization: Bearer rate-key"]
            ).response()
            #expect(second.status == 429)
            #expect(second.headers["retry-after"] != nil)
            #expect(second.body.contains("\"code\":\"rate_limited\""), "\(second.body)")
        }
    }

    @Test(
        "other upgrades are plain HTTP: Upgrade: h2c is served as HTTP/1.1; a WebSocket upgrade after a connection's first request is 400"
    )
    func otherUpgrades() async throws {
        let config = try GatewayTestEnv.config("ws-other")
        try await GatewayTestEnv.withGateway(config, waitForIdentity: false) { _, client in
            let port = try #require(client.port)
            let websocket =
                "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            // (NIO's decoder reads nothing after a request that asks for an upgrade: one request per connection.)
            let h2c = try await RawWebSocket(
                port: port, path: "/healthz",
                request: RawHTTP.get(
                    "/healthz",
                    extraHeaders:
                        "Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n"
                )
            ).response()
            #expect(h2c.status == 200)
            #expect(h2c.body == #"{"status":"ok"}"#)
            let pipelined = try RawWebSocket(
                port: port, path: "/healthz",
                request: RawHTTP.get("/healthz") + RawHTTP.get("/v1/opportunities/stream", extraHeaders: websocket))
            var responses: [RawResponse] = []
            _ = await TestEnv.eventually {
                responses = (try? RawHTTP.parse(pipelined.raw)) ?? []
                return responses.count == 2
            }
            try #require(responses.count == 2, "\(pipelined.raw)")
            #expect(responses[0].status == 200)
            #expect(responses[1].status == 400)
            #expect(responses[1].body.contains("\"code\":\"malformed_http\""), "\(responses[1].body)")
            #expect(responses[1].headers["connection"] == "close")
        }
    }

    @Test("keep-alive: a WebSocket ping and an SSE comment on every heartbeat; the client's ping is answered")
    func keepAlive() async throws {
        let config = try GatewayTestEnv.config("ws-heartbeat") { $0.pushHeartbeatMs = 100 }
        try await GatewayTestEnv.withGateway(config, waitForIdentity: false) { deps, client in
            let port = try #require(client.port)
            let ws = try RawWebSocket(port: port, path: "/v1/decisions/stream")
            let sse = try await SSETestClient(port: port, path: "/v1/decisions/stream")
            defer { sse.close() }
            #expect(try await ws.response().status == 101)
            #expect(await TestEnv.eventually { ws.frames.contains { $0.opcode == 0x9 } }, "a ping from the gateway")
            ws.sendMasked(opcode: 0x9, payload: Array("are-you-there".utf8))
            #expect(
                await TestEnv.eventually {
                    ws.frames.contains(RawWebSocket.Frame(opcode: 0xA, payload: Array("are-you-there".utf8)))
                },
                "the gateway's pong carries the ping's payload")
            #expect(await TestEnv.eventually { sse.comments > 0 }, "an SSE keep-alive comment")
        }
    }
}

/// The gateway binary on a redis-server of the test's own (it reads the fixed `te:opportunities`), so the
/// test can kill and restart that server.
@Suite("push API: the gateway binary", .serialized, .timeLimit(.minutes(4)))
struct GatewayPushBinaryTests {
    @Test(
        "the push feed rides out Redis going away and coming back; SIGTERM closes WebSocket clients with 1001 and the gateway exits 0"
    )
    func redisRestartAndShutdown() async throws {
        // The grants as they are in this tree (the push feeds' XREAD/XRANGE), as the gateway's own user.
        let aclFile = try await StoreUsers.renderStrictACL()
        defer { try? FileManager.default.removeItem(atPath: aclFile) }
        var server = try await PrivateRedisServer(aclFile: aclFile)
        let redisPort = server.port
        let port = try TestEnv.freePort()
        let gateway = try ChildProcess.built(
            "gateway",
            environment: [
                "REDIS_URL": server.url, "HTTP_PORT": String(port), "HTTP_HOST": "127.0.0.1",
                "TRITON_URL": try GatewayTestEnv.tritonURL(), "LOG_LEVEL": "info"
            ])
        defer { gateway.kill9() }
        let ready = await TestEnv.eventually(timeout: .seconds(30)) {
            (try? await RawHTTP.exchange(port: port, [RawHTTP.get("/readyz", extraHeaders: "Connection: close\r\n")])
                .first?.status) == 200
        }
        try #require(ready, "\(gateway.output().suffix(2000))")

        let ws = try RawWebSocket(port: port, path: "/v1/opportunities/stream")
        let sse = try await SSETestClient(port: port, path: "/v1/opportunities/stream")
        defer { sse.close() }
        let clients = await TestEnv.eventually {
            let metrics =
                (try? await RawHTTP.exchange(
                    port: port, [RawHTTP.get("/metrics", extraHeaders: "Connection: close\r\n")]
                ).first?.body) ?? ""
            return metrics.contains("te_gateway_push_clients{stream=\"opportunities\",transport=\"websocket\"} 1")
                && metrics.contains("te_gateway_push_clients{stream=\"opportunities\",transport=\"sse\"} 1")
        }
        try #require(clients, "\(gateway.output().suffix(2000))")

        var redis = RedisClient(configuration: try RedisConfiguration(url: server.url), name: "ws-binary")
        let before = try await GatewayPushTests.publish(
            (0..<20).map { GatewayPushTests.opportunity($0) }, to: StreamKey.opportunities, redis: redis)
        #expect(await ws.messages(count: 20).map(\.id) == before)
        #expect(await sse.events(count: 20).map(\.id) == before)

        // Redis goes away (SIGKILL) and comes back empty on the same port: the clients stay connected, and what is
        // written after the feed reconnected reaches them. One entry at a time until the first arrives (the feed
        // retries with a doubling pause), then a batch.
        redis.close()
        try await server.kill()
        try await Task.sleep(for: .seconds(1))
        server = try await PrivateRedisServer(port: redisPort, aclFile: aclFile)
        redis = RedisClient(configuration: try RedisConfiguration(url: server.url), name: "ws-binary")
        defer { redis.close() }
        var probes: [String] = []
        let resumed = await TestEnv.eventually(timeout: .seconds(30), every: .milliseconds(200)) {
            probes +=
                (try? await GatewayPushTests.publish(
                    [GatewayPushTests.opportunity(100 + probes.count)], to: StreamKey.opportunities, redis: redis))
                ?? []
            return ws.messages.count > 20
        }
        #expect(resumed, "\(gateway.output().suffix(2000))")
        #expect(!ws.ended && !sse.closed, "the clients stayed connected")
        let after = try await GatewayPushTests.publish(
            (200..<220).map { GatewayPushTests.opportunity($0) }, to: StreamKey.opportunities, redis: redis)
        #expect(
            await TestEnv.eventually(timeout: .seconds(30)) {
                ws.messages.last?.id == after.last && sse.events.last?.id == after.last
            })
        let wsAfter = ws.messages.map(\.id).dropFirst(20)
        // The probes written before the feed was back are not pushed (it follows the tail); none is duplicated
        // or reordered, and everything after the first one it saw arrives.
        let firstSeen = try #require(wsAfter.first.flatMap { probes.firstIndex(of: $0) })
        #expect(Array(wsAfter) == Array(probes[firstSeen...]) + after)
        #expect(sse.events.compactMap(\.id).dropFirst(20) == wsAfter)

        gateway.terminate()
        #expect(
            await TestEnv.eventually(timeout: .seconds(20)) { ws.closeFrame != nil }, "\(gateway.output().suffix(2000))"
        )
        #expect(ws.closeFrame?.code == 1001)
        #expect(ws.closeFrame?.reason == "shutdown")
        ws.sendMasked(opcode: 0x8, payload: [0x03, 0xE9])  // answers the close (1001): the gateway closes at once
        #expect(try await gateway.waitForExit(timeout: .seconds(30)) == 0, "\(gateway.output().suffix(2000))")
    }
}
