import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import ServiceKit
import TEModels
import TERedis
import TestSupport
import Testing

@testable import GatewayEngine
@testable import GatewayHTTP

@Suite struct APIKeyTableTests {
    @Test func namedAndBareKeys() throws {
        let table = try APIKeyTable.parse("desk-a:KEY1, desk-b:KEY2,KEY3", separator: ",", source: "GATEWAY_API_KEYS")
        #expect(table.clients == ["desk-a", "desk-b", "default"])
        #expect(table.client(authorization: "Bearer KEY1") == "desk-a")
        #expect(table.client(authorization: "Bearer KEY2") == "desk-b")
        #expect(table.client(authorization: "Bearer KEY3") == "default")
    }

    @Test func refusesWhatIsNotExactlyAKey() throws {
        let table = try APIKeyTable.parse("desk-a:secret-key", separator: ",", source: "GATEWAY_API_KEYS")
        for header in [
            nil, "", "Bearer ", "Bearer secret", "Bearer secret-key2", "Bearer secret-kez", "Basic secret-key",
            "bearer secret-key", "Bearer desk-a:secret-key"
        ] as [String?] {
            #expect(table.client(authorization: header) == nil, "\(header ?? "nil")")
        }
    }

    @Test func fileFormatAllowsCommentsAndBlankLines() throws {
        let table = try APIKeyTable.parse("# desks\n\ndesk-a:K1\n  desk-b : K2  \n", separator: "\n", source: "FILE")
        #expect(table.clients == ["desk-a", "desk-b"])
        #expect(table.client(authorization: "Bearer K2") == "desk-b")
    }

    /// A bad entry is named by its position; the error never carries a key.
    @Test func errorsNameThePositionNotTheKey() {
        let cases = ["desk a:SECRETKEY", "desk-a:", "desk-a:SECRET KEY", "a:SECRETKEY,b:SECRETKEY", ":SECRETKEY"]
        for text in cases {
            do {
                _ = try APIKeyTable.parse(text, separator: ",", source: "GATEWAY_API_KEYS")
                Issue.record("accepted \(text)")
            } catch {
                #expect(error.variable == "GATEWAY_API_KEYS")
                #expect(!error.description.contains("SECRET"), "\(error)")
                #expect(error.problem.contains("entry"))
            }
        }
    }

    @Test func mergingKeepsBothAndRefusesAKeyForTwoClients() throws {
        let fixed = try APIKeyTable.parse("ops:K0", separator: ",", source: "ENV")
        let file = try APIKeyTable.parse("desk-a:K1\nops:K0", separator: "\n", source: "FILE")
        let merged = try fixed.merging(file, source: "FILE")
        #expect(merged.clients == ["ops", "desk-a"])
        #expect(merged.entries.count == 2)
        let clash = try APIKeyTable.parse("desk-a:K0", separator: "\n", source: "FILE")
        #expect(throws: ConfigurationError.self) { try fixed.merging(clash, source: "FILE") }
    }

    @Test func configurationReadsKeysFileAndRateLimit() throws {
        let c = try GatewayConfiguration(environment: [
            "REDIS_URL": "redis://h:1", "TRITON_URL": "h:1", "GATEWAY_API_KEYS": "desk-a:K1",
            "GATEWAY_API_KEYS_FILE": "/etc/te/keys", "GATEWAY_RATE_LIMIT": "50"
        ])
        #expect(c.apiKeys.clients == ["desk-a"])
        #expect(c.apiKeysFile == "/etc/te/keys")
        #expect(c.rateLimit == 50)
        #expect(c.authEnabled)
        let open = try GatewayConfiguration(environment: ["REDIS_URL": "redis://h:1", "TRITON_URL": "h:1"])
        #expect(!open.authEnabled)
        #expect(open.rateLimit == nil)
        #expect(throws: ConfigurationError.self) {
            try GatewayConfiguration(environment: [
                "REDIS_URL": "redis://h:1", "TRITON_URL": "h:1", "GATEWAY_RATE_LIMIT": "0"
            ])
        }
    }
}

/// The token bucket on an injected clock (nanoseconds): no sleeping.
@Suite struct TokenBucketTests {
    static let second: Int64 = 1_000_000_000

    @Test func burstOfTheRateThenRefusedWithRetryAfter() {
        var bucket = TokenBucket(ratePerSecond: 5)
        for _ in 0..<5 { #expect(bucket.take(nowNs: 0) == .allowed) }
        #expect(bucket.take(nowNs: 0) == .limited(retryAfterSeconds: 1))
        // 0.2 s later one token is back, and only one.
        #expect(bucket.take(nowNs: Self.second / 5) == .allowed)
        #expect(bucket.take(nowNs: Self.second / 5) == .limited(retryAfterSeconds: 1))
    }

    @Test func refillStopsAtTheBurst() {
        var bucket = TokenBucket(ratePerSecond: 3)
        #expect(bucket.take(nowNs: 0) == .allowed)
        var allowed = 0
        while bucket.take(nowNs: 100 * Self.second) == .allowed { allowed += 1 }
        #expect(allowed == 3)
    }

    @Test func retryAfterIsWholeSecondsRoundedUp() {
        var slow = TokenBucket(ratePerSecond: 0.25)  // one token every 4 s, burst 1
        #expect(slow.take(nowNs: 0) == .allowed)
        #expect(slow.take(nowNs: 0) == .limited(retryAfterSeconds: 4))
        #expect(slow.take(nowNs: 3 * Self.second + 1) == .limited(retryAfterSeconds: 1))
        #expect(slow.take(nowNs: 4 * Self.second + 1_000) == .allowed)
    }

    /// A clock that goes backwards (it should not) neither adds tokens nor breaks the bucket.
    @Test func aClockGoingBackAddsNothing() {
        var bucket = TokenBucket(ratePerSecond: 1)
        #expect(bucket.take(nowNs: 10 * Self.second) == .allowed)
        #expect(bucket.take(nowNs: 5 * Self.second) == .limited(retryAfterSeconds: 1))
        #expect(bucket.take(nowNs: 11 * Self.second) == .allowed)
    }

    @Test func twoClientsBucketsAreIndependent() {
        var a = TokenBucket(ratePerSecond: 2)
        var b = TokenBucket(ratePerSecond: 2)
        for _ in 0..<10 { _ = a.take(nowNs: 0) }
        #expect(a.take(nowNs: 0) != .allowed)
        #expect(b.take(nowNs: 0) == .allowed)
        #expect(b.take(nowNs: 0) == .allowed)
    }
}

/// Named keys, rotation through the keys file and per-client rate limits against a live gateway (real
/// Redis and Triton).
@Suite(.timeLimit(.minutes(3))) struct NamedClientsIntegrationTests {
    static let features = GatewayTestEnv.sampleFeatures

    static func keysFile(_ text: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("te-keys-\(UUID().uuidString)")
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    static func metric(_ client: any TestClientProtocol, _ prefix: String) async throws -> Double? {
        let text = String(buffer: try await client.execute(uri: "/metrics", method: .get).body)
        var total: Double?
        for line in text.split(separator: "\n") where line.hasPrefix(prefix) {
            total = (total ?? 0) + (Double(line.split(separator: " ").last ?? "") ?? 0)
        }
        return total
    }

    /// The client's name reaches the audit record and the request counter; a key removed from the file
    /// is refused without a restart, a key added is accepted.
    @Test(arguments: [true, false]) func namedClientsAndRotation(fastPath: Bool) async throws {
        let file = try Self.keysFile("desk-a:KEY-A-1\ndesk-b:KEY-B-1\n")
        defer { try? FileManager.default.removeItem(at: file) }
        let config = try GatewayTestEnv.config("keys-file") {
            $0.apiKeysFile = file.path
            $0.scoreFastPath = fastPath
        }
        try await GatewayTestEnv.withGateway(config, waitForIdentity: false) { _, client in
            let (answer, _) = try await client.score(
                ScoreRequest(symbol: "BTCUSDT", features: Self.features), requestID: "named-1",
                authorization: "Bearer KEY-A-1")
            let redis = RedisClient(configuration: try RedisConfiguration(url: config.redisURL), name: "keys-check")
            defer { redis.close() }
            let records = try await redis.xrange(config.auditStream).map {
                try StreamFieldDecoder.decode(AuditRecord.self, from: $0.fields)
            }
            #expect(records.first { $0.decisionId == answer.decisionId }?.client == "desk-a")
            let counted = try await Self.metric(client, "te_gateway_requests_total{")
            #expect(counted == 1)
            let text = String(buffer: try await client.execute(uri: "/metrics", method: .get).body)
            #expect(text.contains("client=\"desk-a\""))
            #expect(!text.contains("KEY-A-1"))

            // Rotation: desk-a's key replaced by a new one (atomic rename, as a secret mount does it).
            try "desk-a:KEY-A-2\ndesk-b:KEY-B-1\n".write(to: file, atomically: true, encoding: .utf8)
            let refused = await TestEnv.eventually {
                (try? await client.execute(
                    uri: "/v1/opportunities", method: .get, headers: [.authorization: "Bearer KEY-A-1"]))?.status
                    == .unauthorized
            }
            #expect(refused)
            let old = try await client.execute(
                uri: "/v1/score", method: .post,
                headers: [.authorization: "Bearer KEY-A-1", .contentType: "application/json"],
                body: GatewayTestEnv.body(ScoreRequest(symbol: "BTCUSDT", features: Self.features)))
            #expect(old.status == .unauthorized)
            let (renewed, _) = try await client.score(
                ScoreRequest(symbol: "BTCUSDT", features: Self.features), authorization: "Bearer KEY-A-2")
            #expect(!renewed.decisionId.isEmpty)
            _ = try await client.score(
                ScoreRequest(symbol: "BTCUSDT", features: Self.features), authorization: "Bearer KEY-B-1")
            // The client kept its counters across the reload.
            #expect(try await Self.metric(client, "te_gateway_requests_total{") == 3)
        }
    }

    /// 429 with the error JSON and Retry-After for the client over its limit; the other client is answered.
    @Test(arguments: [true, false]) func rateLimitPerClient(fastPath: Bool) async throws {
        let config = try GatewayTestEnv.config("rate-limit") {
            $0.apiKeys = try! APIKeyTable.parse("desk-a:KA,desk-b:KB", separator: ",", source: "test")
            // One request per 100 s (burst 1): the second request within the test is always over.
            $0.rateLimit = 0.01
            $0.scoreFastPath = fastPath
        }
        try await GatewayTestEnv.withGateway(config, waitForIdentity: false) { _, client in
            let request = ScoreRequest(symbol: "BTCUSDT", features: Self.features)
            _ = try await client.score(request, authorization: "Bearer KA")
            let limited = try await client.execute(
                uri: "/v1/score", method: .post,
                headers: [.authorization: "Bearer KA", .contentType: "application/json"],
                body: GatewayTestEnv.body(request))
            #expect(limited.status == .tooManyRequests)
            let retryAfter = limited.headers[.retryAfter].flatMap { Int($0) }
            #expect(retryAfter.map { (1...100).contains($0) } == true)
            #expect(String(buffer: limited.body).contains(#""code":"rate_limited""#))
            #expect(limited.headers[.contentType] == "application/json")
            // Other routes under the limit too.
            let opportunities = try await client.execute(
                uri: "/v1/opportunities", method: .get, headers: [.authorization: "Bearer KA"])
            #expect(opportunities.status == .tooManyRequests)
            // desk-b is not slowed by desk-a.
            _ = try await client.score(request, authorization: "Bearer KB")
            #expect(try await Self.metric(client, "te_gateway_rate_limited_total{client=\"desk-a\"}") == 2)
            #expect(try await Self.metric(client, "te_gateway_rate_limited_total{client=\"desk-b\"}") == 0)
            // Unprotected paths are never limited.
            #expect(try await client.execute(uri: "/healthz", method: .get).status == .ok)
        }
    }
}

/// SIGHUP re-reads the keys file even when nothing about it (inode, size, mtime) changed: the built
/// gateway binary, as its own Redis user.
@Suite(.timeLimit(.minutes(2))) struct KeysFileSignalTests {
    static func status(port: Int, key: String) async throws -> Int? {
        let request = RawHTTP.get(
            "/v1/opportunities", extraHeaders: "Authorization: Bearer \(key)\r\nConnection: close\r\n")
        return try await RawHTTP.exchange(port: port, [request]).first?.status
    }

    @Test func sighupReloadsTheFile() async throws {
        let file = try NamedClientsIntegrationTests.keysFile("desk-a:KEY-ONE\n")
        defer { try? FileManager.default.removeItem(at: file) }
        let port = try TestEnv.freePort()
        let gateway = try ChildProcess.built(
            "gateway",
            environment: [
                "HTTP_PORT": String(port), "HTTP_HOST": "127.0.0.1", "TRITON_URL": try GatewayTestEnv.tritonURL(),
                "GATEWAY_API_KEYS_FILE": file.path, "AUDIT_STREAM": TestEnv.uniqueName("sighup-audit"),
                "LOG_LEVEL": "info"
            ])
        defer { gateway.kill9() }
        let watching = await TestEnv.eventually(timeout: .seconds(30)) {
            guard gateway.output().contains("watching the API keys file") else { return false }
            return (try? await Self.status(port: port, key: "KEY-ONE")) == 200
        }
        #expect(watching, "\(gateway.output().suffix(2000))")
        // Same length, same inode, mtime put back: only the signal can make the gateway see it.
        var before = stat()
        #expect(stat(file.path, &before) == 0)
        let handle = try FileHandle(forWritingTo: file)
        try handle.write(contentsOf: Data("desk-a:KEY-TWO\n".utf8))
        try handle.close()
        var times = [before.st_atim, before.st_mtim]
        #expect(utimensat(AT_FDCWD, file.path, &times, 0) == 0)
        #expect(try await Self.status(port: port, key: "KEY-ONE") == 200)
        gateway.signal(SIGHUP)
        let reloaded = await TestEnv.eventually {
            (try? await Self.status(port: port, key: "KEY-TWO")) == 200
        }
        #expect(reloaded, "\(gateway.output().suffix(2000))")
        #expect(try await Self.status(port: port, key: "KEY-ONE") == 401)
        #expect(!gateway.output().contains("KEY-"))
    }
}
