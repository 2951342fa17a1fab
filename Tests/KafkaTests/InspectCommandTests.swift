import Foundation
import Logging
import TEKafka
import TEModels
import TERedis
import TestSupport
import Testing

/// The whitespace-separated cells of the output line that starts with `first`.
func row(_ output: String, startingWith first: String) -> [String]? {
    output.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
        .first { $0.first == first }
}

/// "1.3s" → 1.3 (the `te` duration format below a minute).
func seconds(_ cell: String) -> Double? {
    cell.hasSuffix("s") ? Double(cell.dropLast()) : nil
}

@Suite("te pending and te dlq", .serialized, .timeLimit(.minutes(2)))
struct InspectCommandTests {
    @Test("te pending names each holder, entry, idle time and delivery count (2 after an XCLAIM)")
    func pending() async throws {
        let redis = RedisClient(configuration: try TestEnv.redisConfiguration(), name: "test")
        defer { redis.close() }
        let stream = TestEnv.uniqueName("pending")
        let group = "workers"
        defer { Task { _ = try? await redis.del([stream]) } }
        var ids: [String] = []
        for i in 0..<3 { ids.append(try await redis.xadd(stream, fields: [("n", String(i))])) }
        try await redis.xgroupCreate(stream: stream, group: group, startID: "0")
        let alice = try await redis.xreadgroup(group: group, consumer: "alice", streams: [(stream, ">")], count: 2)
        let bob = try await redis.xreadgroup(group: group, consumer: "bob", streams: [(stream, ">")], count: 1)
        #expect(alice.first?.entries.map(\.id) == Array(ids[0..<2]))
        #expect(bob.first?.entries.map(\.id) == [ids[2]])
        try await Task.sleep(for: .milliseconds(1200))
        // Redelivery: bob takes alice's second entry over; Redis counts it as a second delivery and
        // resets its idle time.
        let claimed = try await redis.xclaim(stream, group: group, consumer: "bob", minIdle: .zero, ids: [ids[1]])
        #expect(claimed.map(\.id) == [ids[1]])

        let (status, output) = try await runTe(
            ["pending", stream, group], environment: ["REDIS_URL": try TestEnv.redisURL()])
        #expect(status == 0, "\(output)")
        #expect(output.hasPrefix("3 pending in \(stream) / \(group)"), "\(output)")
        #expect(row(output, startingWith: "alice") == ["alice", "1"], "\(output)")
        #expect(row(output, startingWith: "bob") == ["bob", "2"], "\(output)")
        let first = try #require(row(output, startingWith: ids[0]), "\(output)")
        let second = try #require(row(output, startingWith: ids[1]), "\(output)")
        let third = try #require(row(output, startingWith: ids[2]), "\(output)")
        #expect(first[1] == "alice" && first[3] == "1")
        #expect(second[1] == "bob" && second[3] == "2")
        #expect(third[1] == "bob" && third[3] == "1")
        // Idle: alice's entry has waited the whole pause; the claimed one was reset by XCLAIM.
        let idleFirst = try #require(seconds(first[2]), "\(output)")
        let idleSecond = try #require(seconds(second[2]), "\(output)")
        #expect(idleFirst >= 1.1)
        #expect(idleSecond < idleFirst)

        let missing = try await runTe(["pending", stream, "nobody"], environment: ["REDIS_URL": try TestEnv.redisURL()])
        #expect(missing.status != 0)
        #expect(missing.output.contains("NOGROUP"), "\(missing.output)")
    }

    @Test(
        "STREAM_SHARDS = 4: te tail merges a sharded stream's shards by id (--shard k: one), te pending shows each shard"
    )
    func shardedTailAndPending() async throws {
        // The real sharded names (te:features:{k}): a Redis of the test's own.
        let server = try await PrivateRedisServer()
        let redis = RedisClient(configuration: try RedisConfiguration(url: server.url), name: "tail-test")
        defer {
            redis.close()
            Task { try? await server.kill() }
        }
        // Explicit ids: two streams' `*` ids in one millisecond can be equal, and equal ids have no order.
        var ids: [String] = []
        for (n, k) in [(1, 0), (2, 2), (3, 0), (4, 2)] {
            ids.append(
                try await redis.xadd(
                    StreamKey.sharded(StreamKey.features, shard: k, of: 4), id: "1723161254\(n)00-0",
                    fields: [("n", String(n))]))
        }
        let environment = ["REDIS_URL": server.url, "STREAM_SHARDS": "4"]
        let all = try await runTe(["tail", "te:features", "-n", "3"], environment: environment)
        #expect(all.status == 0, "\(all.output)")
        let lines = all.output.split(separator: "\n").filter { $0.contains("te:features:{") }
        #expect(lines.count == 3, "\(all.output)")
        // The last three of the four, in id order, each naming its shard.
        #expect(lines.map { $0.contains("te:features:{2}") } == [true, false, true], "\(all.output)")
        let json = try await runTe(["tail", "features", "-n", "10", "-o", "json"], environment: environment)
        let objects = json.output.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        #expect(objects.compactMap { $0["id"] as? String } == ids)
        #expect(
            objects.compactMap { $0["stream"] as? String } == [
                "te:features:{0}", "te:features:{2}", "te:features:{0}", "te:features:{2}"
            ])
        let one = try await runTe(["tail", "te:features", "--shard", "2", "-o", "json"], environment: environment)
        #expect(
            one.output.split(separator: "\n").compactMap {
                (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["id"] as? String
            } == [ids[1], ids[3]])
        let wrong = try await runTe(["tail", "te:audit", "--shard", "1"], environment: environment)
        #expect(wrong.status != 0 && wrong.output.contains("--shard"), "\(wrong.output)")

        for k in [0, 2] {
            try await redis.xgroupCreate(
                stream: StreamKey.sharded(StreamKey.features, shard: k, of: 4), group: "strategy-engine", startID: "0")
        }
        _ = try await redis.xreadgroup(
            group: "strategy-engine", consumer: "se-0",
            streams: [(StreamKey.sharded(StreamKey.features, shard: 2, of: 4), ">")], count: 10)
        let pending = try await runTe(
            ["pending", "te:features", "strategy-engine", "--shard", "2"], environment: environment)
        #expect(pending.status == 0 && pending.output.contains("2 pending in te:features:{2}"), "\(pending.output)")
        let every = try await runTe(["pending", "te:features", "strategy-engine"], environment: environment)
        #expect(
            every.output.contains("0 pending in te:features:{0}")
                && every.output.contains("2 pending in te:features:{2}"), "\(every.output)")
    }

    @Test("a stage's dead letter: te dlq list/show name stage, reason and payload; redrive puts it back exactly once")
    func deadLetterRedrive() async throws {
        // feature-pipeline uses the real stream names: a Redis of the test's own, with this checkout's ACL users
        // (its shard lease scripts).
        let server = try await PrivateRedisServer(aclFile: try await StoreUsers.renderStrictACL())
        let redis = RedisClient(configuration: try RedisConfiguration(url: server.url), name: "dlq-test")
        defer { redis.close() }
        let environment = [
            "REDIS_URL": server.url, "METRICS_PORT": String(try TestEnv.freePort()), "CONSUMER_NAME": "dlq-test"
        ]
        // A tick whose ts_ns is not a number: feature-pipeline cannot decode it and dead-letters it.
        let malformed = [
            ("v", "1"), ("symbol", "BTCUSDT"), ("ts_ns", "yesterday"), ("kind", "quote"), ("bid", "61837.63"),
            ("ask", "61837.64"), ("note", #"a "quoted" ts_ns: value"#)
        ]
        let sourceID = try await redis.xadd(StreamKey.ticks, fields: malformed)
        let stage = try ChildProcess.built("feature-pipeline", environment: environment)
        let dead = try await TestEnv.eventually(timeout: .seconds(20), every: .milliseconds(100)) {
            let letters = try await redis.xlen(StreamKey.dlq)
            // NOGROUP until the stage has created its group.
            let pending = (try? await redis.xpending(StreamKey.ticks, group: "feature-pipeline").count) ?? -1
            return letters == 1 && pending == 0
        }
        #expect(dead, "\(stage.output())")
        // Stopped before the re-drive, so the re-driven entry stays where the test can see it.
        stage.terminate()
        #expect(try await stage.waitForExit(timeout: .seconds(20)) == 0)

        let letterEntry = try #require(try await redis.xrange(StreamKey.dlq).first)
        let letter = try StreamFieldDecoder.decode(DeadLetter.self, from: letterEntry.fields)
        #expect(letter.stage == "feature-pipeline")
        #expect(letter.source == StreamKey.ticks)
        #expect(letter.sourceId == sourceID)
        #expect(letter.reason.contains("ts_ns"), "\(letter.reason)")

        let list = try await runTe(["dlq", "list"], environment: environment)
        #expect(list.status == 0, "\(list.output)")
        let listed = try #require(row(list.output, startingWith: letterEntry.id), "\(list.output)")
        #expect(listed[1] == "feature-pipeline")

        let show = try await runTe(["dlq", "show", letterEntry.id], environment: environment)
        #expect(show.status == 0, "\(show.output)")
        #expect(show.output.contains("stage: feature-pipeline"), "\(show.output)")
        #expect(show.output.contains("reason: \(letter.reason)"), "\(show.output)")
        #expect(show.output.contains("payload: \(letter.payload)"), "\(show.output)")
        #expect(show.output.contains(#""ts_ns":"yesterday""#), "\(show.output)")

        let before = try await redis.xlen(StreamKey.ticks)
        let redrive = try await runTe(["dlq", "redrive", letterEntry.id], environment: environment)
        #expect(redrive.status == 0, "\(redrive.output)")
        let ticks = try await redis.xrange(StreamKey.ticks)
        #expect(ticks.count == before + 1)
        let redriven = try #require(ticks.last)
        #expect(redriven.id != sourceID)
        // The original fields, in their original order.
        #expect(redriven.fields.map(\.0) == malformed.map(\.0))
        #expect(redriven.fields.map(\.1) == malformed.map(\.1))
        #expect(redrive.output.contains("\(letterEntry.id) → \(StreamKey.ticks) \(redriven.id)"), "\(redrive.output)")
        // The dead letter is removed, so a second re-drive finds nothing to send.
        #expect(try await redis.xlen(StreamKey.dlq) == 0)
        let again = try await runTe(["dlq", "redrive", letterEntry.id], environment: environment)
        #expect(again.status != 0)
        #expect(again.output.contains("not in \(StreamKey.dlq)"), "\(again.output)")
        #expect(try await redis.xlen(StreamKey.ticks) == before + 1)
    }

    @Test("an ingest dead letter: te dlq redrive produces the raw message to its topic again, exactly once")
    func kafkaRedrive() async throws {
        let h = try IngestHarness(partitions: 1)
        defer { Task { await h.cleanup() } }
        let ingest = try h.startIngest()
        let garbage =
            #"{"stream":"btcusdt@bookTicker","data":{"u":7,"s":"BTCUSDT","b":"61838","B":"1","a":"61837","A":"1"}}"#
        let producer = try KafkaProducer(
            configuration: KafkaConfiguration(brokers: h.cluster.bootstrapServers), logger: Logger(label: "test"))
        let original = try await producer.send(
            KafkaOutgoingMessage(
                topic: h.topic, key: Array("BTCUSDT".utf8), value: Array(garbage.utf8), timestampMs: 1_723_161_300_000,
                headers: [KafkaHeader(key: "ts_ns", string: "1723161300000123456")]))
        let environment = h.environment
        #expect(
            await TestEnv.eventually(timeout: .seconds(30)) { ((try? await h.redis.xlen(h.dlq)) ?? 0) == 1 },
            "\(ingest.output())")
        let first = try #require(try await h.redis.xrange(h.dlq).first)
        let letter = try StreamFieldDecoder.decode(DeadLetter.self, from: first.fields)
        #expect(letter.stage == "ingest")
        #expect(letter.source == "kafka:\(h.topic)/0@\(original.offset)")
        #expect(letter.reason.hasPrefix("crossed_book"), "\(letter.reason)")

        let show = try await runTe(["dlq", "show", first.id, "--stream", h.dlq], environment: environment)
        #expect(show.status == 0, "\(show.output)")
        #expect(show.output.contains("stage: ingest") && show.output.contains("payload: \(garbage)"), "\(show.output)")

        let redrive = try await runTe(["dlq", "redrive", first.id, "--stream", h.dlq], environment: environment)
        #expect(redrive.status == 0, "\(redrive.output)")
        #expect(redrive.output.contains("\(first.id) → kafka topic \(h.topic)"), "\(redrive.output)")
        // ingest reads the re-driven message (still crossed) and dead-letters it again: the new letter is
        // the next offset of the same partition, with the same payload and recorded time.
        #expect(
            await TestEnv.eventually(timeout: .seconds(30)) {
                let ids = (try? await h.redis.xrange(h.dlq).map(\.id)) ?? []
                return ids.count == 1 && ids != [first.id]
            }, "\(ingest.output())")
        let second = try #require(try await h.redis.xrange(h.dlq).first)
        let again = try StreamFieldDecoder.decode(DeadLetter.self, from: second.fields)
        #expect(again.source == "kafka:\(h.topic)/0@\(original.offset + 1)")
        #expect(again.payload == garbage)
        #expect(again.tsNs == 1_723_161_300_000_123_456)

        // The first letter is gone: re-driving it again sends nothing.
        let twice = try await runTe(["dlq", "redrive", first.id, "--stream", h.dlq], environment: environment)
        #expect(twice.status != 0)
        #expect(twice.output.contains("not in \(h.dlq)"), "\(twice.output)")
        try await Task.sleep(for: .seconds(1))
        #expect(try await h.redis.xrange(h.dlq).map(\.id) == [second.id])
        ingest.terminate()
        #expect(try await ingest.waitForExit(timeout: .seconds(20)) == 0)
    }
}
