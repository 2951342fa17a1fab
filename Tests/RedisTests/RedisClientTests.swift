import Foundation
import Logging
import TERedis
import TestSupport
import Testing

@Suite("RedisClient against a real redis-server", .timeLimit(.minutes(2)))
struct RedisClientTests {
    func client(_ name: String = #function) throws -> RedisClient {
        RedisClient(configuration: try TestEnv.redisConfiguration(), name: "test")
    }

    @Test func pingSetGetAndExpire() async throws {
        let redis = try client()
        defer { redis.close() }
        try await redis.ping()
        let key = TestEnv.uniqueName("kv")
        try await redis.set(key, "hello", expireSeconds: 60)
        #expect(try await redis.get(key) == "hello")
        let ttl = try #require(try await redis.ttl(key))
        #expect(ttl > 0 && ttl <= 60)
        #expect(try await redis.expire(key, seconds: 5))
        #expect(try await redis.ttl(key)! <= 5)
        #expect(try await redis.del([key]) == 1)
        #expect(try await redis.get(key) == nil)
    }

    @Test func binarySafeValuesRoundTrip() async throws {
        let redis = try client()
        defer { redis.close() }
        let key = TestEnv.uniqueName("bin")
        let bytes = (0...255).map { UInt8($0) } + [0, 0, 13, 10, 0]
        try await redis.set(key, bytes: bytes, expireSeconds: 60)
        #expect(try await redis.getBytes(key) == bytes)
        // Binary key and value through the raw command API as well.
        let binaryKey = Array(key.utf8) + [0, 255, 10]
        try await redis.send(
            RedisCommand(bytes: [Array("SET".utf8), binaryKey, bytes, Array("EX".utf8), Array("60".utf8)]))
        #expect(try await redis.send(RedisCommand(bytes: [Array("GET".utf8), binaryKey])) == .bulk(bytes))
        try await redis.send(RedisCommand(bytes: [Array("DEL".utf8), binaryKey]))
        try await redis.del([key])
    }

    @Test func pipelineOfThousandCommandsInOrder() async throws {
        let redis = try client()
        defer { redis.close() }
        let key = TestEnv.uniqueName("pipe")
        var commands: [RedisCommand] = []
        for i in 0..<1000 { commands.append(RedisCommand("RPUSH", key, String(i))) }
        let replies = try await redis.pipeline(commands)
        #expect(replies.count == 1000)
        #expect(replies.enumerated().allSatisfy { $0.element == .integer(Int64($0.offset + 1)) })
        let all = try await redis.send("LRANGE", key, "0", "-1")
        #expect(all.array?.compactMap(\.string) == (0..<1000).map(String.init))
        // An error reply stays in its place; the commands after it still run.
        let mixed = try await redis.pipeline([RedisCommand("GET", key), RedisCommand("LLEN", key)])
        guard case .error(let message) = mixed[0] else {
            Issue.record("expected WRONGTYPE, got \(mixed[0])")
            return
        }
        #expect(message.hasPrefix("WRONGTYPE"))
        #expect(mixed[1] == .integer(1000))
        try await redis.del([key])
    }

    @Test func errorReplyThrowsServerError() async throws {
        let redis = try client()
        defer { redis.close() }
        let key = TestEnv.uniqueName("wrongtype")
        try await redis.hset(key, fields: [("a", "1")])
        do {
            _ = try await redis.get(key)
            Issue.record("GET on a hash must fail")
        } catch {
            #expect(error.code == .server)
            #expect(error.isServerError("WRONGTYPE"))
            #expect(!error.isRetriable)
        }
        try await redis.del([key])
    }

    @Test func hashesAndKeyListing() async throws {
        let redis = try client()
        defer { redis.close() }
        let prefix = TestEnv.uniqueName("list")
        #expect(try await redis.hset("\(prefix):h", fields: [("a", "1"), ("b", "two")]) == 2)
        #expect(try await redis.hgetall("\(prefix):h") == ["a": "1", "b": "two"])
        #expect(try await redis.hgetall("\(prefix):missing") == [:])
        for i in 0..<30 { try await redis.set("\(prefix):k\(i)", "v") }
        let scanned = try await redis.scan(match: "\(prefix):*", count: 7)
        #expect(Set(scanned).count == 31)
        #expect(Set(try await redis.keys("\(prefix):*")) == Set(scanned))
        #expect(try await redis.scan(match: "\(prefix):*", type: "hash") == ["\(prefix):h"])
        #expect(try await redis.del(scanned) == 31)
    }

    @Test func transactionIsAtomicAndReturnsReplies() async throws {
        let redis = try client()
        defer { redis.close() }
        let key = TestEnv.uniqueName("tx")
        let replies = try await redis.transaction([
            RedisCommand("INCR", key), RedisCommand("INCRBY", key, "4"), .expire(key, seconds: 60)
        ])
        #expect(replies == [.integer(1), .integer(5), .integer(1)])
        // A command Redis rejects while queueing aborts the whole transaction.
        await #expect(throws: RedisError.self) {
            try await redis.transaction([RedisCommand("INCR", key), RedisCommand("NOSUCHCOMMAND")])
        }
        #expect(try await redis.get(key) == "5")
        try await redis.del([key])
    }

    @Test func connectsWithDatabaseFromURL() async throws {
        var configuration = try TestEnv.redisConfiguration()
        configuration.database = 3
        let redis = RedisClient(configuration: configuration, name: "db3")
        defer { redis.close() }
        let key = TestEnv.uniqueName("db")
        try await redis.set(key, "in3", expireSeconds: 30)
        let other = try client()
        defer { other.close() }
        #expect(
            try await other.get(key) == nil || configuration.database == (try TestEnv.redisConfiguration()).database)
        #expect(try await redis.get(key) == "in3")
        #expect(try await redis.send("CLIENT", "INFO").string?.contains("db=3") == true)
        try await redis.del([key])
    }

    @Test func wrongPasswordIsAConnectionErrorWithoutTheSecret() async throws {
        var configuration = try TestEnv.redisConfiguration()
        configuration.password = "s3cret-not-set"
        let redis = RedisClient(configuration: configuration, name: "auth")
        defer { redis.close() }
        do {
            try await redis.ping()
            Issue.record("AUTH with a password the server does not have must fail")
        } catch {
            #expect(error.code == .connection)
            #expect(!"\(error)".contains("s3cret"))
        }
    }

    @Test func closedClientThrowsClosed() async throws {
        let redis = try client()
        try await redis.ping()
        redis.close()
        await #expect(throws: RedisError.self) { try await redis.ping() }
    }
}

@Suite("Redis URL parsing")
struct RedisConfigurationTests {
    @Test func parsesHostPortDatabase() throws {
        let c = try RedisConfiguration(url: "redis://cache.local:6380/4")
        #expect(c.host == "cache.local")
        #expect(c.port == 6380)
        #expect(c.database == 4)
        #expect(c.password == nil)
    }

    @Test func parsesPasswordAndUser() throws {
        let a = try RedisConfiguration(url: "redis://:p%40ss@10.0.0.1:7000/1")
        #expect(a.password == "p@ss")
        #expect(a.username == nil)
        #expect(a.host == "10.0.0.1")
        #expect(!a.description.contains("p@ss"))
        let b = try RedisConfiguration(url: "redis://alice:pw@h")
        #expect(b.username == "alice")
        #expect(b.password == "pw")
        #expect(b.port == 6379)
        #expect(b.database == 0)
        let c = try RedisConfiguration(url: "redis://[::1]:6390")
        #expect(c.host == "::1")
        #expect(c.port == 6390)
    }

    @Test(arguments: ["http://h:1", "redis://", "redis://h:notaport", "redis://h:70000", "redis://h:1/x"])
    func rejectsMalformedURLs(url: String) {
        #expect(throws: RedisError.self) { try RedisConfiguration(url: url) }
    }
}
