import Foundation
import TERedis
import TestSupport
import Testing

/// The services' Redis ACL users (deploy/redis/users.acl) refuse what is outside their grant, on the
/// real key names (a private server with the strict file) and on the shared dev server.
@Suite(.timeLimit(.minutes(1))) struct StoreUsersTests {
    static func client(_ service: String, on base: String) throws -> RedisClient {
        RedisClient(
            configuration: try RedisConfiguration(url: StoreUsers.redisURL(for: service, on: base)), name: service)
    }

    /// The server's refusal of `command` (the client throws error replies), nil when it ran.
    static func refusal(_ client: RedisClient, _ command: [String]) async -> String? {
        do {
            if case .error(let message) = try await client.send(RedisCommand(command)) { return message }
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test func ingestMayNotWriteTheAuditStream() async throws {
        let server = try await PrivateRedisServer()
        let ingest = try Self.client("ingest", on: server.url)
        defer { ingest.close() }
        let denied = await Self.refusal(ingest, ["XADD", "te:audit", "*", "decision_id", "forged"])
        #expect(denied?.contains("NOPERM") == true, "\(String(describing: denied))")
        // Its own output is allowed.
        #expect(await Self.refusal(ingest, ["XADD", "te:ticks", "*", "symbol", "BTCUSDT"]) == nil)
        // A script cannot launder the write: commands inside EVAL are checked too.
        let laundered = await Self.refusal(
            ingest, ["EVAL", "return redis.call('XADD', 'te:audit', '*', 'x', '1')", "1", "te:ingest:offsets:t"])
        #expect(laundered != nil)
        // And on the shared dev server (where per-test names are allowed too).
        let shared = try Self.client("ingest", on: TestEnv.redisURL())
        defer { shared.close() }
        let sharedDenied = await Self.refusal(shared, ["XADD", "te:audit", "*", "decision_id", "forged"])
        #expect(sharedDenied?.contains("NOPERM") == true, "\(String(describing: sharedDenied))")
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
            ("te-reader", ["DEL", "te:ticks"])
        ]
        for (service, command) in cases {
            let client = try Self.client(service == "te-reader" ? "te" : service, on: server.url)
            defer { client.close() }
            let reply = await Self.refusal(client, command)
            #expect(reply?.contains("NOPERM") == true, "\(service) \(command[0]): \(String(describing: reply))")
            for admin in [["FLUSHALL"], ["CONFIG", "GET", "*"], ["KEYS", "*"], ["ACL", "LIST"]] {
                let adminReply = await Self.refusal(client, admin)
                #expect(
                    adminReply?.contains("NOPERM") == true, "\(service) \(admin[0]): \(String(describing: adminReply))")
            }
        }
        // The read-only user reads.
        let reader = try Self.client("te", on: server.url)
        defer { reader.close() }
        #expect(await Self.refusal(reader, ["XRANGE", "te:ticks", "-", "+"]) == nil)
        try await server.kill()
    }

    /// What each user needs on a Redis Cluster (the slot map, ASKING) and on sharded streams, and the
    /// gateway's push streams' tail reads (XREAD of te:opportunities and te:audit), on the real names.
    @Test func clusterCommandsShardsAndPushReadsAreGranted() async throws {
        let server = try await PrivateRedisServer()
        for service in StoreUsers.redisServices.sorted() + ["te"] {
            let client = try Self.client(service, on: server.url)
            defer { client.close() }
            // Not a cluster: the server answers with its own error, not NOPERM.
            let shards = await Self.refusal(client, ["CLUSTER", "SHARDS"])
            #expect(shards?.contains("NOPERM") != true, "\(service): \(String(describing: shards))")
            #expect(await Self.refusal(client, ["ASKING"])?.contains("NOPERM") != true, "\(service) ASKING")
        }
        let gateway = try Self.client("gateway", on: server.url)
        defer { gateway.close() }
        for stream in ["te:opportunities", "te:audit", "te:features:{3}"] {
            #expect(
                await Self.refusal(gateway, ["XREAD", "COUNT", "1", "STREAMS", stream, "0"]) == nil,
                "gateway XREAD \(stream)")
        }
        let ingest = try Self.client("ingest", on: server.url)
        defer { ingest.close() }
        #expect(await Self.refusal(ingest, ["XADD", "te:ticks:{3}", "*", "symbol", "BTCUSDT"]) == nil)
        #expect(await Self.refusal(ingest, ["XADD", "te:features:{3}", "*", "a", "1"])?.contains("NOPERM") == true)
        try await server.kill()
    }
}
