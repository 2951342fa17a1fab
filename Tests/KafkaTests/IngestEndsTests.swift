import Foundation
import Logging
import MarketData
import TEKafka
import TEModels
import TERedis
import TestSupport
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// One Binance spot recording per symbol (the two symbols fall in different shards of 3).
let twoSymbols = ["BTCUSDT": spotBTC, "ETHUSDT": RecordedData.path("binance/spot_ethusdt_20240808.gz")]

/// Waits until each symbol's shard stream holds its expected ticks, then checks that it holds exactly those,
/// in order (every field, depth included) and no other symbol's.
func expectShards(
    _ h: IngestHarness, _ expected: [String: [Tick]], stream: (String) -> String, ingest: ChildProcess,
    timeout: Duration
) async throws {
    for (symbol, ticks) in expected {
        let complete = await TestEnv.eventually(timeout: timeout, every: .milliseconds(200)) {
            ((try? await h.redis.xlen(stream(symbol))) ?? 0) >= ticks.count
        }
        #expect(complete, "\(symbol): ingest: \(ingest.output().suffix(3000))")
    }
    try await Task.sleep(for: .seconds(1))
    for (symbol, ticks) in expected {
        let written = try await h.redis.xrange(stream(symbol)).map {
            try StreamFieldDecoder.decode(Tick.self, from: $0.fields)
        }
        #expect(written.allSatisfy { $0.symbol == symbol })
        #expect(written.count == ticks.count, "\(symbol)")
        #expect(
            written == ticks,
            "\(symbol): first difference at \(zip(written, ticks).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? -1)"
        )
    }
}

/// What must hold at ingest's ends across kills, retention and bad bytes (issue 18).
@Suite(
    "ingest: state across restarts, offset resets, binary dead letters, readiness", .serialized, .timeLimit(.minutes(6))
)
struct IngestEndsTests {
    @Test(
        "SIGKILL ×3 and SIGTERM ×1 mid-replay with depth: te:ticks identical (every field, in order) to an uninterrupted ingest"
    )
    func restartsKeepTheBooks() async throws {
        let h = try IngestHarness()
        defer { Task { await h.cleanup() } }
        let clean = h.ticks + ":clean"
        defer {
            Task {
                let fences = [clean, h.dlq + ":clean"].flatMap {
                    ["\(h.offsetsKey):clean:{\($0)}", "\(h.offsetsKey):books:clean:{\($0)}"]
                }
                _ = try? await h.redis.del([clean, h.dlq + ":clean"] + fences)
            }
        }
        // The uninterrupted run: another group reading the same topic into streams and fences of its own.
        let reference = try h.startIngest([
            "KAFKA_GROUP": "clean", "INGEST_TICKS_STREAM": clean, "INGEST_OFFSETS_KEY": h.offsetsKey + ":clean",
            "INGEST_BOOKS_KEY": h.offsetsKey + ":books:clean", "INGEST_DLQ_STREAM": h.dlq + ":clean"
        ])
        let limit = 6000
        let expected = try expectedTicks(spotBTC, limit: limit)
        #expect(expected.filter { $0.bids != nil }.count > expected.count / 2, "the recording's quotes carry depth")
        var ingest = try h.startIngest()
        let replay = Task { try await h.replay(spotBTC, ["--speed", "30", "--limit", "\(limit)"]) }
        var restored = 0
        for stop in 1...4 {
            let mark = expected.count * stop / 6
            let reached = await TestEnv.eventually(timeout: .seconds(60), every: .milliseconds(20)) {
                ((try? await h.redis.xlen(h.ticks)) ?? 0) > mark
            }
            #expect(reached, "stop \(stop): ingest: \(ingest.output().suffix(2000))")
            if stop == 4 {
                ingest.terminate()
                #expect(try await ingest.waitForExit(timeout: .seconds(20)) == 0)
            } else {
                ingest.kill9()
                _ = try await ingest.waitForExit()
            }
            if stop > 1, ingest.output().contains("order books restored") { restored += 1 }
            ingest = try h.startIngest()
        }
        try await replay.value
        for stream in [h.ticks, clean] {
            let complete = await TestEnv.eventually(timeout: .seconds(90), every: .milliseconds(200)) {
                ((try? await h.redis.xlen(stream)) ?? 0) >= expected.count
            }
            #expect(complete, "\(stream): ingest: \(ingest.output().suffix(2000))")
        }
        try await Task.sleep(for: .seconds(1))
        let restarted = try await h.tickEntries()
        let uninterrupted = try await h.redis.xrange(clean).map {
            try StreamFieldDecoder.decode(Tick.self, from: $0.fields)
        }
        #expect(uninterrupted == expected)
        #expect(restarted.count == uninterrupted.count)
        let firstDifference = zip(restarted, uninterrupted).enumerated().first { $0.element.0 != $0.element.1 }?.offset
        #expect(
            firstDifference == nil,
            "first difference at \(firstDifference ?? -1): \(firstDifference.map { "\(restarted[$0]) vs \(uninterrupted[$0])" } ?? "")"
        )
        #expect(restored == 3, "every restart after the first stop restored the books from Redis")
        let books = try await h.redis.hgetall(h.booksKey)
        #expect(books["BTCUSDT"].map { $0.contains(" binance 1 synced ") } == true, "\(books.keys)")
        ingest.terminate()
        reference.terminate()
        _ = try await ingest.waitForExit(timeout: .seconds(20))
        _ = try await reference.waitForExit(timeout: .seconds(20))
    }

    /// DESIGN.md "Shards" on a Redis Cluster: each tick in its symbol's shard, each shard's fence and books in
    /// that shard's slot (every script one slot), te:dlq fenced on its own; kills mid-replay write nothing twice.
    @Test(
        "STREAM_SHARDS=3 on the Redis Cluster, SIGKILL ×2 mid-replay: each symbol's shard holds its ticks once, in order, with depth"
    )
    func shardedOnTheCluster() async throws {
        let h = try IngestHarness(redisURL: try TestEnv.redisClusterURL())
        defer { Task { await h.cleanup() } }
        let shards = 3
        let recordings = twoSymbols
        let limit = 2500
        var expected: [String: [Tick]] = [:]
        for (symbol, path) in recordings { expected[symbol] = try expectedTicks(path, limit: limit) }
        // ETHUSDT and BTCUSDT fall in different shards of 3 (shard 1 stays empty).
        let stream = { (symbol: String) in
            StreamKey.sharded(h.ticks, shard: StreamKey.shard(of: symbol, shards: shards), of: shards)
        }
        #expect(Set(expected.keys.map(stream)).count == 2)
        var ingest = try h.startIngest(["STREAM_SHARDS": "\(shards)"])
        let replays = recordings.values.map { path in
            Task { try await h.replay(path, ["--speed", "30", "--limit", "\(limit)"]) }
        }
        let total = expected.values.reduce(0) { $0 + $1.count }
        for stop in 1...2 {
            let reached = await TestEnv.eventually(timeout: .seconds(60), every: .milliseconds(20)) {
                var n = 0
                for symbol in expected.keys { n += (try? await h.redis.xlen(stream(symbol))) ?? 0 }
                return n > total * stop / 3
            }
            #expect(reached, "stop \(stop): ingest: \(ingest.output().suffix(2000))")
            ingest.kill9()
            _ = try await ingest.waitForExit()
            ingest = try h.startIngest(["STREAM_SHARDS": "\(shards)"])
        }
        for replay in replays { try await replay.value }
        // Only each symbol in its shard, every tick once, in order, with the depth of an uninterrupted run.
        try await expectShards(h, expected, stream: stream, ingest: ingest, timeout: .seconds(90))
        #expect(try await h.redis.xlen(StreamKey.sharded(h.ticks, shard: 1, of: shards)) == 0)
        // Each shard's fence is its own hash in its own slot; shard 1 got fence updates only.
        for k in 0..<shards {
            let fence = try await h.redis.hgetall("te:ingest:offsets:\(h.topic):{\(k)}")
            #expect(!fence.isEmpty, "shard \(k) has no fence")
        }
        let books = try await h.redis.hgetall(
            "te:ingest:books:\(h.topic):{\(StreamKey.shard(of: "BTCUSDT", shards: shards))}")
        #expect(books["BTCUSDT"] != nil, "\(books.keys)")
        ingest.terminate()
        #expect(try await ingest.waitForExit(timeout: .seconds(20)) == 0)
    }

    @Test(
        "retention deletes unread messages: te_ingest_offset_resets_total, a JSON log line naming the range, a te:dlq entry; no raw librdkafka line"
    )
    func retentionGapIsReported() async throws {
        let h = try IngestHarness(partitions: 1)
        defer { Task { await h.cleanup() } }
        var port = try TestEnv.freePort()
        var ingest = try h.startIngest(["METRICS_PORT": "\(port)"])
        try await h.replay(spotBTC, ["--speed", "max", "--limit", "200"])
        let first = try expectedTicks(spotBTC, limit: 200).count
        #expect(await TestEnv.eventually(timeout: .seconds(60)) { ((try? await h.redis.xlen(h.ticks)) ?? 0) >= first })
        ingest.terminate()
        #expect(try await ingest.waitForExit(timeout: .seconds(20)) == 0)
        // While ingest is away, more than the mock broker keeps per partition (5 MB): the oldest messages,
        // the 200 read ones and the first unread ones, are deleted.
        let producer = try KafkaProducer(
            configuration: KafkaConfiguration(
                brokers: h.cluster.bootstrapServers, properties: ["compression.codec": "none"]),
            logger: Logger(label: "test"))
        var filler = [UInt8](repeating: 0, count: 200_000)
        for i in 0..<40 {
            for j in filler.indices { filler[j] = UInt8(truncatingIfNeeded: (i &* 7919) ^ (j &* 31) ^ (j >> 7)) }
            try await producer.send(KafkaOutgoingMessage(topic: h.topic, key: Array("BTCUSDT".utf8), value: filler))
        }
        let consumer = try KafkaConsumer(
            configuration: KafkaConfiguration(brokers: h.cluster.bootstrapServers), groupID: "probe", topics: [h.topic],
            logger: Logger(label: "test"))
        let (low, high) = try await consumer.watermarks(topic: h.topic, partition: 0)
        #expect(low > 200, "the broker deleted unread messages (log \(low)…\(high))")
        port = try TestEnv.freePort()
        ingest = try h.startIngest(["METRICS_PORT": "\(port)"])
        let counted = await TestEnv.eventually(timeout: .seconds(60), every: .milliseconds(200)) {
            await h.metric("te_ingest_offset_resets_total", port: port) == 1
        }
        #expect(counted, "ingest: \(ingest.output().suffix(3000))")
        #expect(await h.metric("te_ingest_lost_messages_total", port: port) == Double(low - 200))
        let letters = try await h.redis.xrange(h.dlq).map {
            try StreamFieldDecoder.decode(DeadLetter.self, from: $0.fields)
        }
        let reset = try #require(letters.first { $0.reason.hasPrefix("offset_reset:") }, "\(letters.map(\.reason))")
        #expect(reset.stage == "ingest")
        #expect(reset.reason.contains("\(h.topic)/0 offsets 200…\(low - 1) not available"), "\(reset.reason)")
        #expect(reset.payload.contains(#""from_offset":"200","to_offset":"\#(low - 1)""#), "\(reset.payload)")
        let lines = ingest.output().split(separator: "\n")
        let logged = lines.first { $0.contains("kafka offset reset") }
        #expect(
            logged.map {
                $0.contains(#""from_offset":"200""#) && $0.contains(#""to_offset":"\#(low - 1)""#)
                    && $0.contains(#""partition":"0""#)
            } == true, "\(logged ?? "")")
        // Everything on stderr is one JSON object per line, librdkafka's own lines included.
        for line in lines {
            #expect((try? JSONSerialization.jsonObject(with: Data(line.utf8))) is [String: Any], "not JSON: \(line)")
        }
        ingest.terminate()
        #expect(try await ingest.waitForExit(timeout: .seconds(20)) == 0)
    }

    @Test(
        "a depth gap with no snapshot after it: counted, logged as JSON, overdue reported, and quotes go out without bids/asks"
    )
    func depthGapIsReported() async throws {
        let h = try IngestHarness(partitions: 1)
        defer { Task { await h.cleanup() } }
        let port = try TestEnv.freePort()
        let ingest = try h.startIngest(["METRICS_PORT": "\(port)", "INGEST_SNAPSHOT_TIMEOUT_MS": "1000"])
        let second: Int64 = 1_000_000_000
        let t0: Int64 = 1_723_161_300 * second
        func depth(_ U: Int, _ u: Int) -> String {
            #"{"stream":"abcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"ABCUSDT","U":\#(U),"u":\#(u),"b":[["9.9","2"]],"a":[]}}"#
        }
        let quote =
            #"{"stream":"abcusdt@bookTicker","data":{"u":1,"s":"ABCUSDT","b":"10.0","B":"1","a":"10.1","A":"1"}}"#
        let messages: [(String, Int64)] = [
            (#"{"lastUpdateId":100,"bids":[["10.0","1"],["9.8","3"]],"asks":[["10.1","1"],["10.2","2"]]}"#, t0),
            (depth(101, 102), t0 + 1), (quote, t0 + 2),
            (depth(110, 111), t0 + 3), (quote, t0 + 4),  // 103…109 missing: a gap
            (depth(112, 113), t0 + 2 * second), (quote, t0 + 2 * second + 1)  // still no snapshot after 2 s
        ]
        let producer = try KafkaProducer(
            configuration: KafkaConfiguration(brokers: h.cluster.bootstrapServers), logger: Logger(label: "test"))
        for (payload, ts) in messages {
            try await producer.send(
                KafkaOutgoingMessage(
                    topic: h.topic, key: Array("ABCUSDT".utf8), value: Array(payload.utf8), timestampMs: ts / 1_000_000,
                    headers: [KafkaHeader(key: "ts_ns", string: String(ts))]))
        }
        #expect(
            await TestEnv.eventually(timeout: .seconds(30)) { ((try? await h.redis.xlen(h.ticks)) ?? 0) == 3 },
            "\(ingest.output())")
        let quotes = try await h.tickEntries()
        #expect(quotes.map { $0.bids?.count } == [3, nil, nil], "depth before the gap, none after it")
        #expect(quotes.allSatisfy { $0.bid == 10.0 && $0.ask == 10.1 })
        #expect(
            await TestEnv.eventually(timeout: .seconds(10)) {
                await h.metric(#"te_ingest_book_gaps_total{symbol="ABCUSDT"}"#, port: port) == 1
            })
        #expect(await h.metric(#"te_ingest_book_snapshot_overdue_total{symbol="ABCUSDT"}"#, port: port) == 1)
        #expect(await h.metric(#"te_ingest_book_out_of_sync{symbol="ABCUSDT"}"#, port: port) == 1)
        let lines = ingest.output().split(separator: "\n")
        let gap = lines.first { $0.contains("order book gap") }
        #expect(
            gap.map {
                $0.contains(#""expected_after_update_id":"102""#) && $0.contains(#""diff_first_update_id":"110""#)
            } == true, "\(gap ?? "")")
        #expect(lines.contains { $0.contains("order book still out of sync") && $0.contains(#""level":"error""#) })
        ingest.terminate()
        #expect(try await ingest.waitForExit(timeout: .seconds(20)) == 0)
    }

    @Test("invalid UTF-8 through Kafka → te:dlq as base64 → te dlq show --payload and redrive give the identical bytes")
    func binaryDeadLetter() async throws {
        let h = try IngestHarness(partitions: 1)
        defer { Task { await h.cleanup() } }
        let ingest = try h.startIngest()
        let bytes: [UInt8] =
            Array(#"{"stream":"btcusdt@bookTicker","data":{"s":"BTC"#.utf8) + [0xff, 0xfe, 0x00, 0xc3, 0x28, 0x80]
            + Array("\"}}".utf8)
        #expect(String(validating: bytes, as: UTF8.self) == nil)
        let producer = try KafkaProducer(
            configuration: KafkaConfiguration(brokers: h.cluster.bootstrapServers), logger: Logger(label: "test"))
        let original = try await producer.send(
            KafkaOutgoingMessage(
                topic: h.topic, key: Array("BTCUSDT".utf8), value: bytes, timestampMs: 1_723_161_300_000))
        #expect(
            await TestEnv.eventually(timeout: .seconds(30)) { ((try? await h.redis.xlen(h.dlq)) ?? 0) == 1 },
            "\(ingest.output())")
        let entry = try #require(try await h.redis.xrange(h.dlq).first)
        let letter = try StreamFieldDecoder.decode(DeadLetter.self, from: entry.fields)
        #expect(letter.encoding == "base64")
        #expect(letter.payloadBytes == bytes)
        #expect(letter.reason.hasPrefix("bad_json"))

        let show = try ChildProcess.built(
            "te", arguments: ["dlq", "show", entry.id, "--stream", h.dlq, "--payload"], environment: h.environment)
        #expect(try await show.waitForExit(timeout: .seconds(30)) == 0)
        #expect(Array(try Data(contentsOf: show.logFile)) == bytes, "show --payload writes the original bytes")
        let pretty = try await runTe(["dlq", "show", entry.id, "--stream", h.dlq], environment: h.environment)
        #expect(
            pretty.output.contains("encoding: base64") && pretty.output.contains(#"BTC\xff\xfe\x00\xc3(\x80""#),
            "\(pretty.output)")

        let redrive = try await runTe(["dlq", "redrive", entry.id, "--stream", h.dlq], environment: h.environment)
        #expect(redrive.status == 0, "\(redrive.output)")
        let again = try await KafkaConsumer.message(
            at: original.offset + 1, topic: h.topic, partition: 0,
            configuration: KafkaConfiguration(brokers: h.cluster.bootstrapServers))
        #expect(again?.value == bytes, "the re-driven message has the original bytes")
        ingest.terminate()
        #expect(try await ingest.waitForExit(timeout: .seconds(20)) == 0)
    }

    @Test("a SIGKILLed ingest restarted gets its partitions back, with and without static membership (time printed)")
    func partitionsAfterARestart() async throws {
        var measured: [String] = []
        for (mode, instance) in [("dynamic", ""), ("static", "ingest-test-0")] {
            let h = try IngestHarness()
            // The consumer's own session timeout (10 s), not the harness's shorter one.
            let overrides = ["KAFKA_GROUP_INSTANCE_ID": instance, "KAFKA_CONF_session_timeout_ms": "10000"]
            let first = try h.startIngest(overrides)
            #expect(
                await TestEnv.eventually(timeout: .seconds(60)) {
                    first.output().contains("kafka partitions assigned")
                }, "\(first.output())")
            first.kill9()
            _ = try await first.waitForExit()
            let start = ContinuousClock.now
            let second = try h.startIngest(overrides)
            let assigned = await TestEnv.eventually(timeout: .seconds(60), every: .milliseconds(20)) {
                second.output().contains("kafka partitions assigned")
            }
            #expect(assigned, "\(mode): \(second.output())")
            measured.append("\(mode): \(ContinuousClock.now - start)")
            second.kill9()
            _ = try await second.waitForExit()
            await h.cleanup()
        }
        print(
            "partitionsAfterARestart: SIGKILL → restarted ingest holds its partitions after \(measured.joined(separator: ", "))"
        )
    }

    @Test(
        "/readyz: 200 with Redis and Kafka up; 503 naming kafka while the broker is down, and redis while Redis does not answer"
    )
    func readiness() async throws {
        let h = try IngestHarness(partitions: 1)
        defer { Task { await h.cleanup() } }
        let port = try TestEnv.freePort()
        let ingest = try h.startIngest(["METRICS_PORT": "\(port)"])
        #expect(
            await TestEnv.eventually(timeout: .seconds(30)) { await readyz(port).status == 200 },
            "\(ingest.output().suffix(2000))")
        h.cluster.setBrokerDown(1)
        let down = await TestEnv.eventually(timeout: .seconds(30)) { await readyz(port).status == 503 }
        let answer = await readyz(port)
        #expect(down && answer.body.contains(#""kafka""#), "\(answer.body)")
        print("readiness: /readyz with the Kafka broker down answered \(answer.status) in \(answer.elapsed)")
        h.cluster.setBrokerUp(1)
        #expect(await TestEnv.eventually(timeout: .seconds(30)) { await readyz(port).status == 200 })
        ingest.terminate()
        #expect(try await ingest.waitForExit(timeout: .seconds(20)) == 0)

        // A Redis that accepts connections and never answers (a hung server, a black-holed route).
        let silent = try SilentTCPListener()
        let hungPort = try TestEnv.freePort()
        let hung = try h.startIngest(["METRICS_PORT": "\(hungPort)", "REDIS_URL": "redis://127.0.0.1:\(silent.port)/0"])
        #expect(
            await TestEnv.eventually(timeout: .seconds(30)) { await readyz(hungPort).status == 503 },
            "\(hung.output().suffix(2000))")
        let stalled = await readyz(hungPort)
        #expect(stalled.status == 503 && stalled.body.contains(#""redis""#), "\(stalled.body)")
        print("readiness: /readyz with Redis silent answered \(stalled.status) in \(stalled.elapsed)")
        hung.kill9()
        _ = try await hung.waitForExit()
        withExtendedLifetime(silent) {}
    }
}

/// `/readyz` of a service on `port`: status (0 when unreachable), body, and how long it took.
func readyz(_ port: Int) async -> (status: Int, body: String, elapsed: Duration) {
    let start = ContinuousClock.now
    guard let url = URL(string: "http://127.0.0.1:\(port)/readyz"),
        let (data, response) = try? await URLSession.shared.data(from: url)
    else { return (0, "", ContinuousClock.now - start) }
    return (
        (response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self),
        ContinuousClock.now - start
    )
}
