import Foundation
import GatewayHTTP
import NIOCore
import NIOPosix
import Synchronization
import TEModels
import TERedis
import TestSupport
import Testing

@testable import GatewayEngine

/// One Server-Sent Events event as a client reads it.
struct SSEEvent: Equatable {
    var id: String?
    var event: String?
    var data: String
}

/// A push client on a raw connection: sends the GET, decodes the chunked body and parses SSE events as they
/// arrive.
final class SSETestClient: Sendable {
    struct State {
        var status: Int?
        var headers: [String: String] = [:]
        var body = ""  // decoded (de-chunked) body not yet parsed into events
        var events: [SSEEvent] = []
        var comments = 0  // keep-alives
        var closed = false
    }

    final class Box: Sendable { let state = Mutex(State()) }
    private let box = Box()
    private let task: Task<Void, any Error>

    init(port: Int, path: String, headers: [String] = []) async throws {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.socketOption(.so_rcvbuf), value: 4096)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        let request =
            "GET \(path) HTTP/1.1\r\nHost: gw\r\nAccept: text/event-stream\r\n" + headers.map { $0 + "\r\n" }.joined()
            + "\r\n"
        let box = self.box
        task = Task {
            try await channel.executeThenClose { inbound, outbound in
                try await outbound.write(ByteBuffer(string: request))
                var raw = ""
                do {
                    for try await buffer in inbound {
                        raw += String(buffer: buffer)
                        box.state.withLock { Self.consume(&raw, into: &$0) }
                    }
                } catch {}
                box.state.withLock { $0.closed = true }
            }
        }
    }

    /// Parses what `raw` holds so far: the response head, then chunked body data, then events.
    private static func consume(_ raw: inout String, into s: inout State) {
        if s.status == nil {
            guard let end = raw.range(of: "\r\n\r\n") else { return }
            let lines = raw[..<end.lowerBound].split(separator: "\r\n")
            s.status = lines.first.flatMap { Int($0.dropFirst(9).prefix(3)) }
            for line in lines.dropFirst() {
                guard let colon = line.firstIndex(of: ":") else { continue }
                s.headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(
                    in: .whitespaces)
            }
            raw = String(raw[end.upperBound...])
        }
        if s.headers["transfer-encoding"] == "chunked" {
            while let lineEnd = raw.range(of: "\r\n"), let size = Int(raw[..<lineEnd.lowerBound], radix: 16) {
                let dataStart = lineEnd.upperBound
                guard raw.utf8.distance(from: dataStart, to: raw.utf8.endIndex) >= size + 2 else { break }
                let dataEnd = raw.utf8.index(dataStart, offsetBy: size)
                s.body += raw[dataStart..<dataEnd]
                raw = String(raw[raw.utf8.index(dataEnd, offsetBy: 2)...])
            }
        } else {
            s.body += raw
            raw = ""
        }
        while let end = s.body.range(of: "\n\n") {
            let block = s.body[..<end.lowerBound]
            s.body = String(s.body[end.upperBound...])
            var event = SSEEvent(id: nil, event: nil, data: "")
            var isEvent = false
            for line in block.split(separator: "\n") {
                if line.hasPrefix("id: ") {
                    event.id = String(line.dropFirst(4))
                    isEvent = true
                }
                if line.hasPrefix("event: ") { event.event = String(line.dropFirst(7)) }
                if line.hasPrefix("data: ") {
                    event.data = String(line.dropFirst(6))
                    isEvent = true
                }
            }
            if isEvent { s.events.append(event) } else if block.hasPrefix(":") { s.comments += 1 }
        }
    }

    var status: Int? { box.state.withLock { $0.status } }
    var body: String { box.state.withLock { $0.body } }
    var events: [SSEEvent] { box.state.withLock { $0.events } }
    var closed: Bool { box.state.withLock { $0.closed } }
    var comments: Int { box.state.withLock { $0.comments } }

    /// Waits until `count` events have arrived (or `timeout`); returns what arrived.
    func events(count: Int, timeout: Duration = .seconds(30)) async -> [SSEEvent] {
        _ = await TestEnv.eventually(timeout: timeout, every: .milliseconds(20)) {
            self.events.count >= count || self.closed
        }
        return events
    }

    func close() {
        task.cancel()
    }
}

/// A client that sends its GET and then reads nothing, on a plain socket with a small receive buffer, so the
/// server's writes back up at once (NIO's own client would keep reading into its buffers).
final class StalledSocket: Sendable {
    let fd: Int32

    init(port: Int, path: String) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var size: Int32 = 4096
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
        guard connected == 0 else { throw GatewayTestError(description: "connect failed: errno \(errno)") }
        let request = Array("GET \(path) HTTP/1.1\r\nHost: gw\r\n\r\n".utf8)
        _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
    }

    /// Reads what the server sent until it closed the connection (true), or `timeout` passes (false).
    func drainToEnd(timeout: Duration = .seconds(20)) async -> Bool {
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        var buffer = [UInt8](repeating: 0, count: 65536)
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) { return true }
            if n < 0 { try? await Task.sleep(for: .milliseconds(10)) }
        }
        return false
    }

    deinit { close(fd) }
}

@Suite("push API: Server-Sent Events", .serialized, .timeLimit(.minutes(3)))
struct GatewayPushTests {
    static func opportunity(_ i: Int, symbol: String = "BTCUSDT") -> Opportunity {
        Opportunity(
            id: "opp-\(i)", symbol: symbol, direction: i % 2 == 0 ? .buy : .sell,
            confidence: 0.5 + Double(i % 50) / 100,
            strategies: ["momentum"], signalIds: ["sig-\(i)"], firstTsNs: 1_723_161_254_087_891_268 + Int64(i),
            lastTsNs: 1_723_161_254_087_891_268 + Int64(i) + 1000, count: 1)
    }

    /// XADDs the opportunities (pipelined) and returns their entry ids in order.
    static func publish(_ opportunities: [Opportunity], to stream: String, redis: RedisClient) async throws -> [String]
    {
        var ids: [String] = []
        for chunk in stride(from: 0, to: opportunities.count, by: 500) {
            let commands = try opportunities[chunk..<min(chunk + 500, opportunities.count)].map {
                RedisCommand.xadd(stream, maxLen: nil, fields: try StreamFieldEncoder.encode($0))
            }
            ids += try await redis.pipeline(commands).map { try #require($0.string) }
        }
        return ids
    }

    @Test("every opportunity once, in order, with its entry id; Last-Event-ID resumes without a gap; ?symbol= filters")
    func orderResumeAndFilter() async throws {
        let config = try GatewayTestEnv.config("push-order")
        try await GatewayTestEnv.withGateway(config) { deps, client in
            let port = try #require(client.port)
            let redis = RedisClient(configuration: try TestEnv.redisConfiguration(), name: "push-test")
            defer { redis.close() }
            let all = try await SSETestClient(port: port, path: "/v1/opportunities/stream")
            let eth = try await SSETestClient(port: port, path: "/v1/opportunities/stream?symbol=ETHUSDT")
            defer {
                all.close()
                eth.close()
            }
            #expect(await TestEnv.eventually { deps.push.opportunities.clientCount == 2 })
            #expect(all.status == 200)

            let opportunities = (0..<60).map { Self.opportunity($0, symbol: $0 % 3 == 0 ? "ETHUSDT" : "BTCUSDT") }
            let ids = try await Self.publish(opportunities, to: config.opportunitiesStream, redis: redis)
            let received = await all.events(count: 60)
            #expect(received.map(\.id) == ids)
            #expect(received.allSatisfy { $0.event == "opportunity" })
            let decoded = try received.map { try JSONDecoder().decode(Opportunity.self, from: Data($0.data.utf8)) }
            #expect(decoded == opportunities)
            let ethEvents = await eth.events(count: 20)
            #expect(ethEvents.map(\.id) == zip(ids, opportunities).filter { $0.1.symbol == "ETHUSDT" }.map(\.0))

            // A client that saw up to ids[29] comes back: the rest of the backlog first, then live entries.
            let resumed = try await SSETestClient(
                port: port, path: "/v1/opportunities/stream", headers: ["Last-Event-ID: \(ids[29])"])
            defer { resumed.close() }
            let backlog = await resumed.events(count: 30)
            #expect(backlog.map(\.id) == Array(ids[30...]))
            let more = try await Self.publish(
                (60..<70).map { Self.opportunity($0) }, to: config.opportunitiesStream, redis: redis)
            let after = await resumed.events(count: 40)
            #expect(after.map(\.id) == Array(ids[30...]) + more, "no gap and no duplicate across the switch to live")
            #expect(await all.events(count: 70).map(\.id) == ids + more)
        }
    }

    @Test("a stalled client is dropped and its connection closed, without slowing a second client")
    func slowClientDropped() async throws {
        // The queue holds more than one XREAD page (1000), and the entries go out in waves of 500 that the
        // reading client takes in before the next: however slow this machine, the reader never falls a queue
        // behind, while the stalled client's socket buffers fill and then its queue overflows.
        let config = try GatewayTestEnv.config("push-slow") { $0.pushQueueLimit = 1500 }
        try await GatewayTestEnv.withGateway(config) { deps, client in
            let port = try #require(client.port)
            let redis = RedisClient(configuration: try TestEnv.redisConfiguration(), name: "push-slow")
            defer { redis.close() }
            let stalled = try StalledSocket(port: port, path: "/v1/opportunities/stream")
            let reader = try await SSETestClient(port: port, path: "/v1/opportunities/stream")
            defer { reader.close() }
            #expect(await TestEnv.eventually { deps.push.opportunities.clientCount == 2 })
            // ~2.5 KB per event (64 signal ids): 8,000 of them are far more than the socket buffers hold.
            let signals = (0..<64).map { "sig-\($0)-\(String(repeating: "x", count: 24))" }
            var ids: [String] = []
            for wave in 0..<16 {
                let batch = (wave * 500..<(wave + 1) * 500).map { i -> Opportunity in
                    var o = Self.opportunity(i)
                    o.signalIds = signals
                    return o
                }
                ids += try await Self.publish(batch, to: config.opportunitiesStream, redis: redis)
                _ = await reader.events(count: ids.count, timeout: .seconds(60))
            }
            let count = ids.count
            let received = reader.events
            #expect(received.count == count)
            #expect(received.map(\.id) == ids, "the reading client got every event in order")
            #expect(
                await TestEnv.eventually { deps.push.opportunities.clientCount == 1 }, "the stalled one was dropped")
            #expect(await stalled.drainToEnd(), "the gateway closed the stalled client's connection")
            let metrics = String(buffer: try await client.execute(uri: "/metrics", method: .get).body)
            #expect(
                metrics.contains(
                    "te_gateway_push_dropped_total{stream=\"opportunities\",transport=\"sse\",reason=\"slow_consumer\"} 1"
                ), "\(metrics)")
        }
    }

    @Test("limits and errors: 503 past the client limit, 400 for a bad Last-Event-ID or symbol, 401 without a key")
    func limitsAndErrors() async throws {
        let config = try GatewayTestEnv.config("push-limits") {
            $0.pushMaxClients = 1
            $0.apiKeys = try! APIKeyTable.parse("push-key", separator: ",", source: "test")
        }
        try await GatewayTestEnv.withGateway(config) { deps, client in
            let port = try #require(client.port)
            let auth = "Authorization: Bearer push-key"
            let first = try await SSETestClient(port: port, path: "/v1/opportunities/stream", headers: [auth])
            defer { first.close() }
            #expect(await TestEnv.eventually { deps.push.opportunities.clientCount == 1 })
            let second = try await SSETestClient(port: port, path: "/v1/opportunities/stream", headers: [auth])
            defer { second.close() }
            #expect(await TestEnv.eventually { second.status != nil && second.body.contains("too_many_streams") })
            #expect(second.status == 503)
            // The limit is per stream: the decisions stream still has room.
            let decisions = try await SSETestClient(port: port, path: "/v1/decisions/stream", headers: [auth])
            defer { decisions.close() }
            #expect(await TestEnv.eventually { decisions.status != nil })
            #expect(decisions.status == 200)

            for (path, code) in [
                ("/v1/opportunities/stream?last_event_id=yesterday", "invalid_query"),
                ("/v1/opportunities/stream?symbol=%20bad", "invalid_symbol")
            ] {
                let response = try await client.execute(
                    uri: path, method: .get, headers: [.authorization: "Bearer push-key"])
                #expect(response.status.code == 400, "\(path)")
                #expect(
                    String(buffer: response.body).contains("\"code\":\"\(code)\""),
                    "\(path): \(String(buffer: response.body))")
            }
            let unauthorized = try await client.execute(uri: "/v1/decisions/stream", method: .get)
            #expect(unauthorized.status.code == 401)
        }
    }

    @Test("decisions are pushed as they are audited, with their decision_id")
    func decisionsPushed() async throws {
        let config = try GatewayTestEnv.config("push-decisions")
        try await GatewayTestEnv.withGateway(config) { deps, client in
            let port = try #require(client.port)
            let stream = try await SSETestClient(port: port, path: "/v1/decisions/stream?symbol=BTCUSDT")
            defer { stream.close() }
            #expect(await TestEnv.eventually { deps.push.decisions.clientCount == 1 })
            var decisionIDs: [String] = []
            for i in 0..<5 {
                decisionIDs.append(
                    try await client.score(
                        ScoreRequest(symbol: i == 2 ? "ETHUSDT" : "BTCUSDT", features: GatewayTestEnv.sampleFeatures)
                    ).0.decisionId)
            }
            let events = await stream.events(count: 4)
            let records = try events.map { try JSONDecoder().decode(AuditRecord.self, from: Data($0.data.utf8)) }
            #expect(records.map(\.decisionId) == decisionIDs.enumerated().filter { $0.offset != 2 }.map(\.element))
            #expect(events.allSatisfy { $0.event == "decision" })
        }
    }
}
