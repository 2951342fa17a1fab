import Foundation
import TECore
import TERedis
import TestSupport
import Testing

/// Stream replies read into one buffer per reply (`StreamFields`): every entry's names and values come back
/// byte for byte, in order — empty values, binary bytes, repeated names, entries of different widths side
/// by side, deleted entries among live ones — on a single node and through the cluster client.
@Suite("Stream replies as bytes", .timeLimit(.minutes(2)))
struct StreamReplyBytesTests {
    /// Entries of varied shapes: entry i has i % 7 fields (0 included), some values empty or binary.
    static func entries(_ n: Int) -> [[([UInt8], [UInt8])]] {
        var random = SeededGenerator(seed: 15)
        return (0..<n).map { i in
            (0..<(i % 7)).map { k in
                let name = Array("f\(k % 4)".utf8)  // repeats after 4: a name may come twice
                let length = Int.random(in: 0...40, using: &random)
                let value = (0..<length).map { _ in
                    k == 5 ? UInt8.random(in: 0...255, using: &random) : UInt8.random(in: 0x21...0x7E, using: &random)
                }
                return (name, value)
            }
        }
    }

    /// What the client read equals what was written, field by field and as bytes through the view.
    static func check(_ read: [StreamEntry], _ written: [[([UInt8], [UInt8])]], ids: [String]) {
        #expect(read.map(\.id) == ids)
        for (entry, fields) in zip(read, written) {
            #expect(entry.fields.count == fields.count)
            entry.fields.withView { view in
                for (i, (name, value)) in fields.enumerated() where i < view.count {
                    #expect(Array(view.name(i).buffer) == name)
                    #expect(Array(view.value(i).buffer) == value)
                }
            }
            #expect(entry.fields.map(\.0) == fields.map { String(decoding: $0.0, as: UTF8.self) })
            #expect(entry.fields.map(\.1) == fields.map { String(decoding: $0.1, as: UTF8.self) })
        }
    }

    func roundTrip(_ redis: RedisClient, stream s: String) async throws {
        let written = Self.entries(60)
        var ids: [String] = []
        for fields in written {
            var c = RedisCommand(name: "XADD")
            c.append(s)
            c.append("*")
            // XADD needs a field: an entry "without" fields gets one we then delete from the expectation.
            if fields.isEmpty {
                c.append("only")
                c.append("")
            }
            for (name, value) in fields {
                c.append(bytes: name)
                c.append(bytes: value)
            }
            guard let id = try await redis.send(c).string else { throw RedisError(.unexpectedReply, "no id") }
            ids.append(id)
        }
        let expected = written.map { $0.isEmpty ? [(Array("only".utf8), [UInt8]())] : $0 }

        Self.check(try await redis.xrange(s), expected, ids: ids)
        Self.check(try await redis.xrevrange(s), expected.reversed(), ids: ids.reversed())
        Self.check(
            try await redis.xrange(s, start: ids[10], end: ids[19]), Array(expected[10...19]), ids: Array(ids[10...19]))

        try await redis.xgroupCreate(stream: s, group: "g", startID: "0")
        let read = try await redis.xreadgroup(group: "g", consumer: "c", streams: [(s, ">")], count: 100)
        #expect(read.count == 1 && read.first?.stream == s)
        Self.check(read.first?.entries ?? [], expected, ids: ids)

        // Deleted entries among pending ones: reported with no fields, the others intact around them.
        let deleted = Set([ids[0], ids[31], ids[59]])
        for id in deleted { try await redis.send("XDEL", s, id) }
        let pending = try await redis.xreadgroup(group: "g", consumer: "c", streams: [(s, "0")], count: 100)
        let entries = pending.first?.entries ?? []
        #expect(entries.map(\.id) == ids)
        #expect(entries.filter(\.isDeleted).map(\.id) == ids.filter { deleted.contains($0) })
        let live = entries.filter { !$0.isDeleted }
        Self.check(live, zip(ids, expected).filter { !deleted.contains($0.0) }.map(\.1), ids: live.map(\.id))
        #expect(entries.filter(\.isDeleted).allSatisfy { $0.fields.isEmpty })

        // XCLAIM and XAUTOCLAIM read their entries the same way.
        let claimed = try await redis.xclaim(s, group: "g", consumer: "d", minIdle: .zero, ids: [ids[5], ids[6]])
        Self.check(claimed, [expected[5], expected[6]], ids: [ids[5], ids[6]])
        let auto = try await redis.xautoclaim(s, group: "g", consumer: "e", minIdle: .zero, count: 100)
        Self.check(
            auto.entries, zip(ids, expected).filter { !deleted.contains($0.0) }.map(\.1), ids: auto.entries.map(\.id))
        #expect(Set(auto.deletedIDs) == deleted)
    }

    /// On a single node (`REDIS_URL`) and through the cluster client (`REDIS_CLUSTER_URL`).
    @Test(arguments: ["single", "cluster"]) func repliesKeepEveryByte(server: String) async throws {
        let url = server == "cluster" ? try TestEnv.redisClusterURL() : try TestEnv.redisURL()
        let redis = RedisClient(configuration: try RedisConfiguration(url: url), name: "reply-bytes")
        let s = TestEnv.uniqueName("bytes")
        defer {
            Task {
                _ = try? await redis.del([s])
                redis.close()
            }
        }
        try await roundTrip(redis, stream: s)
    }

    @Test func fieldsMadeFromTextEqualFieldsRead() throws {
        let fields = StreamFields([("v", "1"), ("symbol", "BTCUSDT"), ("", ""), ("symbol", "ETHUSDT")])
        #expect(fields.count == 4)
        #expect(fields.value("symbol") == "ETHUSDT")  // the last one, as in a hash of them
        #expect(fields.value("missing") == nil)
        #expect(fields.dictionary == ["v": "1", "symbol": "ETHUSDT", "": ""])
        #expect(fields == StreamFields(Array(fields)))
        #expect(fields != StreamFields([("v", "1")]))
        #expect(StreamFields([]).isEmpty)
        fields.withView { view in
            #expect(view.name(1).equals("symbol") && view.value(1).string == "BTCUSDT")
            #expect(view.name(2).isEmpty && view.value(2).isEmpty)
        }
    }
}
