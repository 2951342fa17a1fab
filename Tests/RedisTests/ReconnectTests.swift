import Foundation
import TECore
import TERedis
import TestSupport
import Testing

@Suite("Reconnect after redis-server restarts", .timeLimit(.minutes(2)))
struct ReconnectTests {
    @Test func clientRecoversAfterServerRestart() async throws {
        // A server of this test's own: killing the shared one would break every other test.
        var server = try await PrivateRedisServer()
        let port = server.port
        var configuration = try RedisConfiguration(url: server.url)
        configuration.reconnect = RetryPolicy(initial: .milliseconds(20), maximum: .milliseconds(200))
        let redis = RedisClient(configuration: configuration, name: "reconnect")
        defer { redis.close() }
        try await redis.set("k", "before")
        #expect(try await redis.get("k") == "before")

        try await server.kill()
        // The command on the broken connection fails with a retriable error.
        do {
            try await redis.ping()
            Issue.record("PING to a killed server must fail")
        } catch {
            #expect(error.isRetriable)
            #expect(error.code == .connection)
        }
        // Still down: reconnect attempts fail (with backoff) and stay retriable.
        for _ in 0..<3 {
            do {
                try await redis.ping()
                Issue.record("server is down")
            } catch {
                #expect(error.code == .connection && error.isRetriable)
            }
        }

        server = try await PrivateRedisServer(port: port)
        let recovered = await TestEnv.eventually(timeout: .seconds(10)) { (try? await redis.ping()) != nil }
        #expect(recovered)
        // No persistence: the restarted server is empty, and the client works normally again.
        #expect(try await redis.get("k") == nil)
        try await redis.set("k", "after")
        #expect(try await redis.get("k") == "after")
        let replies = try await redis.pipeline((0..<100).map { RedisCommand("INCR", "counter\($0 % 2)") })
        #expect(replies.last == .integer(50))
        try await server.kill()
    }

    @Test func blockedReadFailsRetriablyWhenServerDies() async throws {
        let server = try await PrivateRedisServer()
        let redis = RedisClient(configuration: try RedisConfiguration(url: server.url), name: "blocked")
        defer { redis.close() }
        try await redis.xgroupCreate(stream: "s", group: "g", startID: "$")
        async let read = redis.xreadgroup(
            group: "g", consumer: "c", streams: [("s", ">")], count: 1, block: .seconds(10))
        try await Task.sleep(for: .milliseconds(200))
        try await server.kill()
        do {
            _ = try await read
            Issue.record("a blocked read on a killed server must fail")
        } catch {
            #expect((error as? RedisError)?.isRetriable == true)
        }
    }
}
