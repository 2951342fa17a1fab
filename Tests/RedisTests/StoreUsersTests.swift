import Foundation
import TERedis
import Testing
import TestSupport

/// The services' Redis ACL users (deploy/redis/users.acl) refuse what is outside their grant, on the
/// real key names (a private server with the strict file) and on the shared dev server.
@Suite(.timeLimit(.minutes(1))) struct StoreUsersTests {
    static func client(_ service: String, on base: String) throws -> RedisClient {
        RedisClient(configuration: try RedisConfiguration(url: StoreUsers.redisURL(for: service, on: base)), name: service)
    }

    static func refusal(_ reply: RedisReply) -> String? {
        if case .error(let message) = reply { return message }
        return nil
    }

    @Test func ingestMayNotWriteTheAuditStream() async throws {
        let server = try await PrivateRedisServer()
        let ingest = try Self.client("ingest", on: server.url)
        defer { ingest.close() }
        let denied = try await ingest.send("XADD", "te:audit", "*", "decision_id", "forged")
        #expect(Self.refusal(denied)?.hasPrefix("NOPERM") == true, "\(denied)")
        // Its own output is allowed.
        #expect(Self.refusal(try await ingest.send("XADD", "te:ticks", "*", "symbol", "BTCUSDT")) == nil)
        // A script cannot launder the write: commands inside EVAL are checked too.
        let laundered = try await ingest.send(
            "EVAL", "return redis.pcall('XADD', 'te:audit', '*', 'x', '1')", "1", "te:ingest:offsets:t")
        #expect(Self.refusal(laundered) != nil, "\(laundered)")
        // And on the shared dev server (where per-test names are allowed too).
        let shared = try Self.client("ingest", on: TestEnv.redisURL())
        defer { shared.close() }
        let sharedDenied = try await shared.send("XADD", "te:audit", "*", "decision_id", "forged")
        #expect(Self.refusal(sharedDenied)?.hasPrefix("NOPERM") == true, "\(sharedDenied)")
        try await server.kill()
    }

    @Test func eachServiceIsRefusedOutsideItsGrant() async throws {
        let server = try await PrivateRedisServer()
        // (service, a command it must not run)
        let cases: [(String, [String])] = [
            ("feature-pipeline", ["XADD", "te:ticks", "*", "a", "1"]),
            ("strategy-engine", ["XADD", "te:opportunities", "*", "a", "1"]),
            ("opportunity-aggregator", ["HSET", "te:online:BTCUSDT", "a", "1"]),
            ("gateway", ["XADD", "te:features", "*", "a", "1"]),
            ("gateway", ["XACK", "te:audit", "audit-writer", "1-1"]),
            ("audit-writer", ["XADD", "te:audit", "*", "a", "1"]),
            ("audit-writer", ["XTRIM", "te:audit", "MAXLEN", "0"]),
            ("outcome-tracker", ["XADD", "te:audit", "*", "a", "1"]),
            ("te-reader", ["XADD", "te:ticks", "*", "a", "1"]),
            ("te-reader", ["DEL", "te:ticks"]),
        ]
        for (service, command) in cases {
            let client = try Self.client(service == "te-reader" ? "te" : service, on: server.url)
            defer { client.close() }
            let reply = try await client.send(RedisCommand(command))
            #expect(Self.refusal(reply)?.hasPrefix("NOPERM") == true, "\(service) \(command[0]): \(reply)")
            for admin in [["FLUSHALL"], ["CONFIG", "GET", "*"], ["KEYS", "*"], ["ACL", "LIST"]] {
                let adminReply = try await client.send(RedisCommand(admin))
                #expect(Self.refusal(adminReply)?.hasPrefix("NOPERM") == true, "\(service) \(admin[0]): \(adminReply)")
            }
        }
        // The read-only user reads.
        let reader = try Self.client("te", on: server.url)
        defer { reader.close() }
        #expect(Self.refusal(try await reader.send("XRANGE", "te:ticks", "-", "+")) == nil)
        try await server.kill()
    }
}
