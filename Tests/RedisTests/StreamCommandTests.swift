import Foundation
import TERedis
import TestSupport
import Testing

@Suite("Stream commands against a real redis-server", .timeLimit(.minutes(2)))
struct StreamCommandTests {
    let redis: RedisClient

    init() throws {
        redis = RedisClient(configuration: try TestEnv.redisConfiguration(), name: "streams")
    }

    @Test func xaddXrangeXrevrangeXlen() async throws {
        let s = TestEnv.uniqueName("xadd")
        defer {
            Task { [redis] in
                _ = try? await redis.del([s])
                redis.close()
            }
        }
        var ids: [String] = []
        for i in 0..<5 { ids.append(try await redis.xadd(s, fields: [("v", "1"), ("n", String(i))])) }
        #expect(try await redis.xlen(s) == 5)
        let all = try await redis.xrange(s)
        #expect(all.map(\.id) == ids)
        #expect(all[2].fields.map(\.0) == ["v", "n"])
        #expect(all[2].field("n") == "2")
        #expect(try await redis.xrange(s, start: ids[1], end: ids[3]).map(\.id) == Array(ids[1...3]))
        #expect(try await redis.xrange(s, count: 2).map(\.id) == Array(ids[0..<2]))
        #expect(try await redis.xrevrange(s, count: 2).map(\.id) == [ids[4], ids[3]])
        // Explicit ids.
        #expect(try await redis.xadd(s, id: "99999999999999-7", fields: [("n", "x")]) == "99999999999999-7")
        #expect(try await redis.xrange("\(s):missing").isEmpty)
    }

    @Test func xaddTrimsApproximately() async throws {
        let s = TestEnv.uniqueName("trim")
        defer {
            Task { [redis] in
                _ = try? await redis.del([s])
                redis.close()
            }
        }
        var commands: [RedisCommand] = []
        for i in 0..<2000 { commands.append(.xadd(s, maxLen: 100, fields: [("n", String(i))])) }
        let replies = try await redis.pipeline(commands)
        #expect(replies.allSatisfy { $0.string?.contains("-") == true })
        let length = try await redis.xlen(s)
        // `~` trims whole macro nodes (100 entries each by default): at least 100 remain, far fewer than 2000.
        #expect(length >= 100 && length < 300)
        #expect(try await redis.xrevrange(s, count: 1).first?.field("n") == "1999")
    }

    @Test func xreadReturnsNewEntriesAndTimesOutEmpty() async throws {
        let s = TestEnv.uniqueName("xread")
        let other = RedisClient(configuration: try TestEnv.redisConfiguration(), name: "xread-writer")
        defer {
            Task { [redis] in
                _ = try? await redis.del([s])
                redis.close()
                other.close()
            }
        }
        let first = try await redis.xadd(s, fields: [("n", "0")])
        let read = try await redis.xread(streams: [(s, "0")], count: 10)
        #expect(read.count == 1 && read[0].stream == s && read[0].entries.map(\.id) == [first])
        // BLOCK with nothing new: an empty result after the block time, not a socket timeout.
        let empty = try await redis.xread(streams: [(s, "$")], count: 10, block: .milliseconds(100))
        #expect(empty.isEmpty)
        // BLOCK woken by another connection's XADD.
        async let blocked = redis.xread(streams: [(s, first)], count: 10, block: .seconds(5))
        try await Task.sleep(for: .milliseconds(100))
        let second = try await other.xadd(s, fields: [("n", "1")])
        #expect(try await blocked.first?.entries.map(\.id) == [second])
    }

    @Test func blockLongerThanCommandTimeoutDoesNotTimeOut() async throws {
        var configuration = try TestEnv.redisConfiguration()
        configuration.commandTimeout = .milliseconds(200)
        let client = RedisClient(configuration: configuration, name: "short-timeout")
        let s = TestEnv.uniqueName("block")
        defer { client.close() }
        try await client.xgroupCreate(stream: s, group: "g", startID: "$")
        let read = try await client.xreadgroup(
            group: "g", consumer: "c", streams: [(s, ">")], count: 1, block: .milliseconds(600))
        #expect(read.isEmpty)
        // A command that outlasts the socket timeout fails as a retriable timeout; the client recovers.
        do {
            // BLPOP's own block time is not known to the client: the socket timeout applies.
            try await client.send("BLPOP", "\(s):list", "1")
            Issue.record("BLPOP blocking 1 s must time out with a 200 ms command timeout")
        } catch {
            #expect(error.code == .timeout)
            #expect(error.isRetriable)
        }
        try await Task.sleep(for: .milliseconds(900))
        try await client.ping()
        try await client.del([s])
    }

    @Test func consumerGroupLifecycle() async throws {
        let s = TestEnv.uniqueName("group")
        defer {
            Task { [redis] in
                _ = try? await redis.del([s])
                redis.close()
            }
        }
        // MKSTREAM creates the stream; a second create is a no-op (BUSYGROUP ignored).
        try await redis.xgroupCreate(stream: s, group: "g", startID: "0")
        try await redis.xgroupCreate(stream: s, group: "g", startID: "0")
        #expect(try await redis.xlen(s) == 0)
        var ids: [String] = []
        for i in 0..<6 { ids.append(try await redis.xadd(s, fields: [("n", String(i))])) }

        let read = try await redis.xreadgroup(group: "g", consumer: "alice", streams: [(s, ">")], count: 4)
        #expect(read.first?.entries.map(\.id) == Array(ids[0..<4]))
        let summary = try await redis.xpending(s, group: "g")
        #expect(summary.count == 4)
        #expect(summary.smallestID == ids[0] && summary.largestID == ids[3])
        #expect(summary.consumers == ["alice": 4])

        // Re-reading the own pending list from 0 counts a second delivery.
        let again = try await redis.xreadgroup(group: "g", consumer: "alice", streams: [(s, "0")], count: 10)
        #expect(again.first?.entries.map(\.id) == Array(ids[0..<4]))
        let rows = try await redis.xpending(s, group: "g", count: 10)
        #expect(rows.map(\.id) == Array(ids[0..<4]))
        #expect(rows.allSatisfy { $0.consumer == "alice" && $0.deliveries == 2 })

        #expect(try await redis.xack(s, group: "g", ids: [ids[0], ids[1]]) == 2)
        #expect(try await redis.xack(s, group: "g", ids: [ids[0]]) == 0)

        let groups = try await redis.xinfoGroups(s)
        #expect(groups.count == 1)
        #expect(groups[0].name == "g" && groups[0].consumers == 1 && groups[0].pending == 2)
        #expect(groups[0].lastDeliveredID == ids[3])
        #expect(groups[0].lag == 2)

        let info = try await redis.xinfoStream(s)
        #expect(info.length == 6 && info.groups == 1)
        #expect(info.firstEntryID == ids[0] && info.lastEntryID == ids[5] && info.lastGeneratedID == ids[5])

        // Blocking XREADGROUP with nothing new times out empty.
        _ = try await redis.xreadgroup(group: "g", consumer: "bob", streams: [(s, ">")], count: 10)
        let none = try await redis.xreadgroup(
            group: "g", consumer: "bob", streams: [(s, ">")], count: 10, block: .milliseconds(50))
        #expect(none.isEmpty)
        #expect(try await redis.xgroupDestroy(stream: s, group: "g"))
    }

    @Test func idleEntriesAreClaimedAndDeletedOnesReported() async throws {
        let s = TestEnv.uniqueName("claim")
        defer {
            Task { [redis] in
                _ = try? await redis.del([s])
                redis.close()
            }
        }
        try await redis.xgroupCreate(stream: s, group: "g", startID: "0")
        var ids: [String] = []
        for i in 0..<4 { ids.append(try await redis.xadd(s, fields: [("n", String(i))])) }
        _ = try await redis.xreadgroup(group: "g", consumer: "dead", streams: [(s, ">")], count: 10)
        try await redis.send("XDEL", s, ids[3])
        // Long enough that the XAUTOCLAIM below (min idle 1 s) takes the dead consumer's entries but never
        // the two just claimed by XCLAIM, however slow a loaded machine is between the two calls.
        try await Task.sleep(for: .milliseconds(1100))

        // Extended XPENDING with IDLE sees them all (idle > 100 ms).
        let idle = try await redis.xpending(s, group: "g", minIdle: .milliseconds(100), count: 10)
        #expect(idle.map(\.id) == ids)
        #expect(idle.allSatisfy { $0.idle >= .milliseconds(100) && $0.consumer == "dead" && $0.deliveries == 1 })
        #expect(try await redis.xpending(s, group: "g", minIdle: .seconds(60), count: 10).isEmpty)

        // XCLAIM of one entry (delivery counter +1), JUSTID of another (counter unchanged).
        let claimed = try await redis.xclaim(
            s, group: "g", consumer: "alive", minIdle: .milliseconds(100), ids: [ids[0]])
        #expect(claimed.map(\.id) == [ids[0]] && claimed[0].field("n") == "0")
        let justIDs = try await redis.xclaim(
            s, group: "g", consumer: "alive", minIdle: .milliseconds(100), ids: [ids[1]], justID: true)
        #expect(justIDs.map(\.id) == [ids[1]])
        let rows = try await redis.xpending(s, group: "g", count: 10, consumer: "alive")
        #expect(rows.map(\.deliveries) == [2, 1])

        // XAUTOCLAIM takes the rest; the deleted entry is reported, not returned.
        let auto = try await redis.xautoclaim(s, group: "g", consumer: "alive", minIdle: .milliseconds(1000), count: 10)
        #expect(auto.nextStart == "0-0")
        #expect(auto.entries.map(\.id) == [ids[2]])
        #expect(auto.deletedIDs == [ids[3]])
        #expect(try await redis.xpending(s, group: "g").consumers == ["alive": 3])
    }
}
