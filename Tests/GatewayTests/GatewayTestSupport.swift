import Foundation
import GatewayHTTP
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import NIOPosix
import TEModels
import TERedis
import TestSupport

@testable import GatewayEngine

enum GatewayTestEnv {
    static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// `TRITON_URL` from `.dev/env`, or an error that fails the test.
    static func tritonURL() throws -> String {
        guard let url = ProcessInfo.processInfo.environment["TRITON_URL"], !url.isEmpty else {
            throw GatewayTestError(
                description:
                    "TRITON_URL is not set: run the tests through `make test` (or `source .dev/env`), which starts Triton"
            )
        }
        return url
    }

    /// A configuration on the shared servers, with streams and keys of the test's own.
    static func config(_ name: String, triton: String? = nil, _ adjust: (inout GatewayConfiguration) -> Void = { _ in })
        throws
        -> GatewayConfiguration
    {
        // As the gateway's own Redis user (deploy/redis/users.acl), as in production.
        let redisURL = try StoreUsers.redisURL(for: "gateway", on: TestEnv.redisURL())
        var c = GatewayConfiguration(redisURL: redisURL, tritonURL: try triton ?? tritonURL())
        c.httpPort = 0
        let prefix = TestEnv.uniqueName("gateway-\(name)")
        c.featuresStream = "\(prefix):features"
        c.auditStream = "\(prefix):audit"
        c.rolloutStream = "\(prefix):rollout"
        c.opportunitiesStream = "\(prefix):opportunities"
        c.onlineKeyPrefix = "\(prefix):online:"
        // Generous for debug builds on a shared 2-core machine; deadline tests set their own.
        c.scoreTimeoutMs = 300
        c.identityRefreshSeconds = 1
        adjust(&c)
        return c
    }

    static var logger: Logger {
        var l = Logger(label: "gateway-test")
        l.logLevel = .warning
        return l
    }

    /// Runs `body` against a gateway serving on a real socket (so requests cross the event-loop fast
    /// path of `POST /v1/score` or, with `scoreFastPath` off, Hummingbird's router) with its background
    /// services running, once the model identity of the primary version is known (or after 10 s).
    static func withGateway<T: Sendable>(
        _ config: GatewayConfiguration, waitForIdentity: Bool = true,
        _ body: @Sendable (GatewayDependencies, any TestClientProtocol) async throws -> T
    ) async throws -> T {
        let deps = try buildDependencies(config, logger: logger)
        let app = buildApplication(deps)
        return try await app.test(.live) { client in
            if waitForIdentity {
                _ = await TestEnv.eventually(timeout: .seconds(10)) {
                    deps.engine.identities.known(version: config.modelVersion)
                }
            }
            return try await body(deps, client)
        }
    }

    static let sampleFeatures: [Double] = [0.5, 0.3, 0.2, 1, 2, 0.1, 10, 0.05]

    static func body(_ request: ScoreRequest) -> ByteBuffer {
        var fields = ["\"symbol\":\"\(request.symbol)\""]
        if let f = request.features { fields.append("\"features\":[\(f.map { "\($0)" }.joined(separator: ","))]") }
        if let m = request.freshnessMs { fields.append("\"freshness_ms\":\(m)") }
        return ByteBuffer(string: "{\(fields.joined(separator: ","))}")
    }
}

extension TestClientProtocol {
    /// POST /v1/score; returns the decoded response and the wall time it took.
    func score(
        _ request: ScoreRequest, requestID: String? = nil, authorization: String? = nil
    ) async throws -> (ScoreResponse, Duration) {
        var headers: HTTPFields = [.contentType: "application/json"]
        if let requestID { headers[HTTPField.Name("X-Request-Id")!] = requestID }
        if let authorization { headers[.authorization] = authorization }
        let t0 = ContinuousClock.now
        let response = try await execute(
            uri: "/v1/score", method: .post, headers: headers, body: GatewayTestEnv.body(request))
        let elapsed = ContinuousClock.now - t0
        guard response.status == .ok else {
            throw ScoreCallError(status: response.status.code, body: String(buffer: response.body))
        }
        return (try JSONDecoder().decode(ScoreResponse.self, from: Data(buffer: response.body)), elapsed)
    }
}

/// One HTTP/1.1 response as read off the wire.
struct RawResponse {
    var status: Int
    var headers: [String: String]  // lowercased names
    var body: String
}

enum RawHTTP {
    /// Writes `chunks` on one new connection to `port` (pausing `pause` between them, so the server
    /// reads them separately), then reads until the server closes the connection: the last request
    /// should carry `Connection: close`.
    /// `halfClose`: shut the client's side after the last chunk (the server answers what it read, then closes).
    static func exchange(port: Int, _ chunks: [String], pause: Duration = .milliseconds(30), halfClose: Bool = false)
        async throws -> [RawResponse]
    {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                        wrappingChannelSynchronously: channel,
                        configuration: .init(isOutboundHalfClosureEnabled: halfClose))
                }
            }
        let text = try await channel.executeThenClose { inbound, outbound in
            for (i, chunk) in chunks.enumerated() {
                if i > 0 { try await Task.sleep(for: pause) }
                try await outbound.write(ByteBuffer(string: chunk))
            }
            if halfClose { outbound.finish() }
            var text = ""
            for try await buffer in inbound { text += String(buffer: buffer) }
            return text
        }
        return try parse(text)
    }

    static func parse(_ text: String) throws -> [RawResponse] {
        var rest = Substring(text)
        var responses: [RawResponse] = []
        while !rest.isEmpty {
            guard let headEnd = rest.range(of: "\r\n\r\n") else {
                throw GatewayTestError(description: "incomplete response head: \(rest.prefix(200))")
            }
            let lines = rest[..<headEnd.lowerBound].split(separator: "\r\n", omittingEmptySubsequences: false)
            guard let statusLine = lines.first, statusLine.hasPrefix("HTTP/1.1 "),
                let status = Int(statusLine.dropFirst(9).prefix(3))
            else { throw GatewayTestError(description: "bad status line: \(lines.first ?? "")") }
            var headers: [String: String] = [:]
            for line in lines.dropFirst() {
                guard let colon = line.firstIndex(of: ":") else { continue }
                headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(
                    in: .whitespaces)
            }
            let length = Int(headers["content-length"] ?? "0") ?? 0
            let bodyStart = headEnd.upperBound
            let utf8 = rest.utf8
            guard utf8.distance(from: bodyStart, to: utf8.endIndex) >= length else {
                throw GatewayTestError(description: "truncated body")
            }
            let bodyEnd = utf8.index(bodyStart, offsetBy: length)
            responses.append(RawResponse(status: status, headers: headers, body: String(rest[bodyStart..<bodyEnd])))
            rest = rest[bodyEnd...]
        }
        return responses
    }

    static func score(_ body: String, requestID: String? = nil, extraHeaders: String = "") -> String {
        let id = requestID.map { "X-Request-Id: \($0)\r\n" } ?? ""
        return "POST /v1/score HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n\(id)\(extraHeaders)"
            + "Content-Length: \(body.utf8.count)\r\n\r\n\(body)"
    }

    static func get(_ path: String, extraHeaders: String = "") -> String {
        "GET \(path) HTTP/1.1\r\nHost: gw\r\n\(extraHeaders)\r\n"
    }
}

struct ScoreCallError: Error, CustomStringConvertible {
    let status: Int
    let body: String
    var description: String { "HTTP \(status): \(body)" }
}

extension Data {
    init(buffer: ByteBuffer) { self = Data(buffer.readableBytesView) }
}

/// A Triton server of the test's own (scripts/dev-triton.sh on private ports and state directory), so a
/// test can stop and restart it.
final class PrivateTriton: Sendable {
    let grpcPort: Int
    let httpPort: Int
    let metricsPort: Int
    let state: URL

    var url: String { "127.0.0.1:\(grpcPort)" }

    init() async throws {
        grpcPort = try TestEnv.freePort()
        httpPort = try TestEnv.freePort()
        metricsPort = try TestEnv.freePort()
        state = FileManager.default.temporaryDirectory.appendingPathComponent("gw-triton-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
        try await start()
    }

    /// Runs scripts/dev-triton.sh (which returns once the model is ready). Spawned directly and polled
    /// with WNOHANG: the script leaves tritonserver running in the background.
    func start() async throws {
        var env = ProcessInfo.processInfo.environment
        env["TRITON_STATE"] = state.path
        env["TRITON_PID_NAME"] = "triton"
        if env["TRITON_VENV"] == nil {
            env["TRITON_VENV"] = GatewayTestEnv.repoRoot.appendingPathComponent(".dev/venv").path
        }
        let log = state.appendingPathComponent("start.log").path
        let script = GatewayTestEnv.repoRoot.appendingPathComponent("scripts/dev-triton.sh").path
        let argv = [
            "/bin/bash", "-c", "exec \"$0\" \"$1\" \"$2\" \"$3\" >>\"$4\" 2>&1 </dev/null", script, "\(grpcPort)",
            "\(httpPort)", "\(metricsPort)", log
        ]
        let envp = env.map { "\($0.key)=\($0.value)" }
        var pid: pid_t = 0
        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = envp.map { strdup($0) } + [nil]
        defer {
            cArgs.forEach { free($0) }
            cEnv.forEach { free($0) }
        }
        let rc = posix_spawn(&pid, "/bin/bash", nil, nil, cArgs, cEnv)
        guard rc == 0 else { throw GatewayTestError(description: "posix_spawn dev-triton.sh: \(rc)") }
        var status: Int32 = 0
        while waitpid(pid, &status, WNOHANG) == 0 { try await Task.sleep(for: .milliseconds(100)) }
        guard status == 0 else {
            throw GatewayTestError(
                description:
                    "dev-triton.sh failed (\(status)): \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        }
    }

    var pid: Int32? {
        guard let text = try? String(contentsOf: state.appendingPathComponent("run/triton.pid"), encoding: .utf8) else {
            return nil
        }
        return Int32(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// The server's process group (dev-triton.sh starts it with setsid): the server and its Python stubs.
    var processGroup: Int32? {
        guard let text = try? String(contentsOf: state.appendingPathComponent("run/triton.pgid"), encoding: .utf8)
        else { return nil }
        return Int32(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// SIGKILL to the whole process group: the server and its stubs are gone at once, as in a crash.
    func stop() async {
        guard let pid, let group = processGroup else { return }
        kill(-group, SIGKILL)
        _ = await TestEnv.eventually(timeout: .seconds(10)) { kill(pid, 0) != 0 }
        _ = await TestEnv.eventually(timeout: .seconds(10)) { !TestEnv.accepts(port: self.grpcPort) }
    }

    deinit {
        if let group = processGroup { kill(-group, SIGKILL) }
    }
}

/// A hung Triton for deadline tests: its `TRITON_URL`.
extension SilentTCPListener {
    var url: String { "127.0.0.1:\(port)" }
}

/// A port nothing listens on: connections are refused at once.
func closedPortURL() throws -> String { "127.0.0.1:\(try TestEnv.freePort())" }

struct GatewayTestError: Error, CustomStringConvertible {
    let description: String
}
