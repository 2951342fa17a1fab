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

/// One isolated pipeline: a mock Kafka cluster of the test's own, a unique topic and unique Redis keys.
struct IngestHarness {
    let cluster: KafkaMockCluster
    let topic: String
    let ticks: String
    let dlq: String
    let spreadPrefix: String
    /// ingest's fence of the (unsharded) tick stream under the default `INGEST_OFFSETS_KEY`: the partitions'
    /// last offsets written there. Each fence group's hash carries its stream's hash tag (one Cluster slot).
    let offsetsKey: String
    /// The books stored with that fence (default `INGEST_BOOKS_KEY`).
    let booksKey: String
    let redis: RedisClient
    /// The Redis (or Redis Cluster) ingest writes to.
    let redisURL: String

    init(partitions: Int = 3, redisURL: String? = nil) throws {
        cluster = try KafkaMockCluster(brokers: 1)
        let name = TestEnv.uniqueName("ingest")
        topic = "ticks-" + name.replacingOccurrences(of: ":", with: "-")
        try cluster.createTopic(topic, partitions: partitions)
        ticks = name + ":ticks"
        dlq = name + ":dlq"
        spreadPrefix = name + ":spread:"
        offsetsKey = "te:ingest:offsets:\(topic):{\(ticks)}"
        booksKey = "te:ingest:books:\(topic):{\(ticks)}"
        self.redisURL = try redisURL ?? TestEnv.redisURL()
        redis = RedisClient(configuration: try RedisConfiguration(url: self.redisURL), name: "test")
    }

    var environment: [String: String] {
        [
            "KAFKA_BROKERS": cluster.bootstrapServers, "KAFKA_TOPIC": topic, "INGEST_TICKS_STREAM": ticks,
            "INGEST_DLQ_STREAM": dlq, "INGEST_SPREAD_PREFIX": spreadPrefix, "METRICS_PORT": "0",
            "KAFKA_CONF_session_timeout_ms": "6000", "REDIS_URL": redisURL,
            "LOG_LEVEL": "info"
        ]
    }

    func startIngest(_ overrides: [String: String] = [:]) throws -> ChildProcess {
        try ChildProcess.built("ingest", environment: environment.merging(overrides) { $1 })
    }

    /// An unlabelled metric of the ingest serving `/metrics` on `port`; nil when unreachable or absent.
    func metric(_ name: String, port: Int) async -> Double? {
        guard let url = URL(string: "http://127.0.0.1:\(port)/metrics"),
            let (data, _) = try? await URLSession.shared.data(from: url)
        else { return nil }
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") where line.hasPrefix(name + " ") {
            return Double(line.dropFirst(name.count + 1))
        }
        return nil
    }

    func replay(_ file: String, _ extra: [String]) async throws {
        let replay = try ChildProcess.built(
            "te", arguments: ["replay", "--topic", topic, "--quiet"] + extra + [file], environment: environment)
        let status = try await replay.waitForExit(timeout: .seconds(120))
        #expect(status == 0, "te replay failed: \(replay.output())")
    }

    func tickEntries() async throws -> [Tick] {
        try await redis.xrange(ticks).map { try StreamFieldDecoder.decode(Tick.self, from: $0.fields) }
    }

    func cleanup() async {
        let shards = (0..<4).flatMap {
            ["\(ticks):{\($0)}", "te:ingest:offsets:\(topic):{\($0)}", "te:ingest:books:\(topic):{\($0)}"]
        }
        // One key per DEL: on a cluster they live in different slots.
        for key in [
            ticks, dlq, offsetsKey, booksKey, "te:ingest:offsets:\(topic):{\(dlq)}", "te:ingest:books:\(topic):{\(dlq)}"
        ] + shards {
            _ = try? await redis.del([key])
        }
        redis.close()
    }
}

/// What ingest must write for the first `limit` messages of a recording: the same normalizer, in order.
/// `limits` are successive replays of the recording's first `limit` messages into one topic.
func expectedTicks(_ path: String, limit limits: Int...) throws -> [Tick] {
    var normalizer = MarketNormalizer()
    var out: [Tick] = []
    for limit in limits {
        let reader = try RecordingReader(path: path)
        var n = 0
        while n < limit, let m = try reader.next() {
            n += 1
            if case .ticks(let ticks) = normalizer.normalize(payload: m.payload, receiveTsNs: m.tsNs, key: m.key) {
                out += ticks
            }
        }
    }
    return out
}

/// How often each tick identity occurs.
func tickCounts(_ ticks: [Tick]) -> [TickKey: Int] {
    ticks.reduce(into: [:]) { $0[TickKey($1), default: 0] += 1 }
}

/// Each symbol's tick identities in stream order (te:ticks interleaves partitions, never a symbol's ticks).
func perSymbol(_ ticks: [Tick]) -> [String: [TickKey]] {
    Dictionary(grouping: ticks.map(TickKey.init), by: \.symbol)
}

let spotBTC = RecordedData.path("binance/spot_btcusdt_20240808.gz")

@Suite("ingest: Kafka → Redis", .serialized, .timeLimit(.minutes(5)))
struct IngestTests {
    @Test("replay → ingest: one Tick per usable message, in order per symbol; garbage in te:dlq with reasons")
    func replayToRedis() async throws {
        let h = try IngestHarness()
        defer { Task { await h.cleanup() } }
        let ingest = try h.startIngest()
        let limit = 3000
        try await h.replay(spotBTC, ["--speed", "max", "--limit", "\(limit)"])
        // Garbage, produced directly.
        let producer = try KafkaProducer(
            configuration: KafkaConfiguration(brokers: h.cluster.bootstrapServers), logger: Logger(label: "test"))
        let garbage = [
            "{not json",
            #"{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT","b":"61838","B":"1","a":"61837","A":"1"}}"#,
            #"{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT","b":"NaN","B":"1","a":"61837","A":"1"}}"#,
            #"{"hello":"world"}"#
        ]
        for g in garbage {
            try await producer.send(
                KafkaOutgoingMessage(
                    topic: h.topic, key: Array("BTCUSDT".utf8), value: Array(g.utf8), timestampMs: 1_723_161_300_000))
        }
        let expected = try expectedTicks(spotBTC, limit: limit)
        let arrived = await TestEnv.eventually(timeout: .seconds(60), every: .milliseconds(200)) {
            let n = (try? await h.redis.xlen(h.ticks)) ?? 0
            let d = (try? await h.redis.xlen(h.dlq)) ?? 0
            return n >= expected.count && d >= garbage.count
        }
        #expect(arrived, "ingest output: \(ingest.output().suffix(2000))")
        let written = try await h.tickEntries()
        #expect(written == expected)
        let letters = try await h.redis.xrange(h.dlq).map {
            try StreamFieldDecoder.decode(DeadLetter.self, from: $0.fields)
        }
        #expect(letters.count == garbage.count)
        let reasons = letters.map { String($0.reason.prefix(while: { $0 != ":" })) }.sorted()
        #expect(reasons == ["bad_json", "crossed_book", "non_finite", "unknown_format"].sorted())
        #expect(Set(letters.map(\.payload)) == Set(garbage))
        #expect(letters.allSatisfy { $0.stage == "ingest" && ($0.source ?? "").hasPrefix("kafka:\(h.topic)/") })
        let spread = try await h.redis.get(h.spreadPrefix + "BTCUSDT")
        #expect(spread.flatMap(Double.init) != nil, "ingest output: \(ingest.output().suffix(2000))")
        ingest.terminate()
        #expect(try await ingest.waitForExit(timeout: .seconds(20)) == 0)
    }

    @Test("lineage: each te:ticks entry's src is the partition:offset of the Kafka message it came from")
    func ticksNameTheirKafkaMessage() async throws {
        let h = try IngestHarness(partitions: 3)
        defer { Task { await h.cleanup() } }
        let ingest = try h.startIngest()
        let producer = try KafkaProducer(
            configuration: KafkaConfiguration(brokers: h.cluster.bootstrapServers), logger: Logger(label: "test"))
        // Known messages on every partition (the key picks it), a dead letter in between so offsets and tick
        // counts part ways; each Tick has its own ts_ns, so it names the message it must come from.
        var expected: [Int64: String] = [:]
        let symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT"]
        for i in 0..<60 {
            let symbol = symbols[i % symbols.count]
            let tsNs = 1_723_161_254_000_000_000 + Int64(i) * 1_000_000
            if i % 7 == 3 {
                _ = try await producer.send(
                    KafkaOutgoingMessage(topic: h.topic, key: Array(symbol.utf8), value: Array("{not json".utf8)))
            }
            let tick =
                #"{"symbol":"\#(symbol)","ts_ns":\#(tsNs),"kind":"quote","bid":100.5,"bid_size":1.5,"ask":100.75,"ask_size":2}"#
            let delivery = try await producer.send(
                KafkaOutgoingMessage(
                    topic: h.topic, key: Array(symbol.utf8), value: Array(tick.utf8),
                    headers: [KafkaHeader(key: "ts_ns", string: String(tsNs))]))
            expected[tsNs] = "\(delivery.partition):\(delivery.offset)"
        }
        #expect(Set(expected.values.map { $0.split(separator: ":")[0] }).count > 1, "the messages span partitions")
        let arrived = await TestEnv.eventually(timeout: .seconds(60), every: .milliseconds(100)) {
            ((try? await h.redis.xlen(h.ticks)) ?? 0) >= expected.count
        }
        #expect(arrived, "ingest output: \(ingest.output().suffix(2000))")
        let entries = try await h.redis.xrange(h.ticks)
        #expect(entries.count == expected.count)
        var seen: [Int64: String] = [:]
        for entry in entries {
            let tick = try StreamFieldDecoder.decode(Tick.self, from: entry.fields)
            seen[tick.tsNs] = entry.fields.first { $0.0 == "src" }?.1
        }
        #expect(seen == expected)
        ingest.terminate()
        #expect(try await ingest.waitForExit(timeout: .seconds(20)) == 0)
    }

    @Test("SIGKILL ingest three times mid-replay: exactly one Tick per usable message (no gaps, no duplicates)")
    func killAndRestart() async throws {
        let h = try IngestHarness()
        defer { Task { await h.cleanup() } }
        let limit = 6000
        let expected = try expectedTicks(spotBTC, limit: limit)
        var port = try TestEnv.freePort()
        var ingest = try h.startIngest(["METRICS_PORT": "\(port)"])
        let replay = Task { try await h.replay(spotBTC, ["--speed", "40", "--limit", "\(limit)"]) }
        var skipped: [Double] = []
        for kill in 1...3 {
            let mark = expected.count * kill / 5
            let reached = await TestEnv.eventually(timeout: .seconds(60), every: .milliseconds(20)) {
                ((try? await h.redis.xlen(h.ticks)) ?? 0) > mark
            }
            #expect(reached, "kill \(kill): ingest: \(ingest.output().suffix(2000))")
            skipped.append(await h.metric("te_ingest_redelivered_skipped_total", port: port) ?? -1)
            ingest.kill9()
            _ = try await ingest.waitForExit()
            port = try TestEnv.freePort()
            ingest = try h.startIngest(["METRICS_PORT": "\(port)"])
        }
        try await replay.value
        let complete = await TestEnv.eventually(timeout: .seconds(90), every: .milliseconds(200)) {
            ((try? await h.redis.xlen(h.ticks)) ?? 0) >= expected.count
        }
        #expect(complete, "ingest: \(ingest.output().suffix(2000))")
        // Anything written late (a duplicate) would show up within a few commit intervals.
        try await Task.sleep(for: .seconds(1))
        let written = try await h.tickEntries()
        #expect(written.count == expected.count)
        #expect(tickCounts(written) == tickCounts(expected))
        #expect(perSymbol(written) == perSymbol(expected))
        skipped.append(await h.metric("te_ingest_redelivered_skipped_total", port: port) ?? -1)
        // Not asserted (a kill can land right after a commit), but it shows that the fence was exercised.
        print("killAndRestart: redelivered messages skipped per ingest run: \(skipped)")
        ingest.terminate()
        _ = try await ingest.waitForExit(timeout: .seconds(20))
    }

    @Test(
        "a partition read again by another consumer (other group, same topic and outputs): every message written once")
    func reassignedPartitionsSkipWrittenOffsets() async throws {
        let h = try IngestHarness()
        defer { Task { await h.cleanup() } }
        let first = try h.startIngest()
        let limit = 2000
        try await h.replay(spotBTC, ["--speed", "max", "--limit", "\(limit)"])
        let once = try expectedTicks(spotBTC, limit: limit)
        #expect(
            await TestEnv.eventually(timeout: .seconds(60)) { ((try? await h.redis.xlen(h.ticks)) ?? 0) >= once.count })
        // A second group starts at the earliest offset: every message is at or below the stored offsets.
        let port = try TestEnv.freePort()
        let second = try h.startIngest(["KAFKA_GROUP": "ingest-other", "METRICS_PORT": "\(port)"])
        let skippedAll = await TestEnv.eventually(timeout: .seconds(60), every: .milliseconds(200)) {
            await h.metric("te_ingest_redelivered_skipped_total", port: port) == Double(limit)
        }
        #expect(skippedAll, "second ingest: \(second.output().suffix(2000))")
        #expect(try await h.redis.xlen(h.ticks) == once.count)
        // Both instances consume the same new messages and race to write them: the script lets each through once.
        let more = 1000
        try await h.replay(spotBTC, ["--speed", "max", "--limit", "\(more)"])
        let expected = try expectedTicks(spotBTC, limit: limit, more)
        let arrived = await TestEnv.eventually(timeout: .seconds(60), every: .milliseconds(200)) {
            await h.metric("te_ingest_messages_consumed_total", port: port) == Double(limit + more)
        }
        #expect(arrived)
        #expect(
            await TestEnv.eventually(timeout: .seconds(30)) {
                ((try? await h.redis.xlen(h.ticks)) ?? 0) >= expected.count
            })
        try await Task.sleep(for: .seconds(1))
        let written = try await h.tickEntries()
        #expect(written.count == expected.count)
        #expect(tickCounts(written) == tickCounts(expected))
        let offsets = try await h.redis.hgetall(h.offsetsKey)
        // "<offset> <kafka timestamp ms>:<hash>" per partition that got messages.
        #expect(
            !offsets.isEmpty
                && offsets.values.allSatisfy {
                    $0.split(separator: " ").count == 2 && Int64($0.prefix(while: \.isNumber)) != nil
                })
        for p in [first, second] { p.terminate() }
        #expect(try await first.waitForExit(timeout: .seconds(20)) == 0)
        #expect(try await second.waitForExit(timeout: .seconds(20)) == 0)
    }

    /// The stored offsets of an earlier log of the topic: beyond the new log's end, and inside it but naming
    /// another message (right offset, wrong fingerprint). Either way all of the new log is written.
    @Test(
        "stored offsets of a re-created topic are forgotten, not used to skip",
        arguments: [
            "900000", "5 1723161254087:0123456789abcdef"
        ])
    func staleOffsetsOfARecreatedTopic(stored: String) async throws {
        let h = try IngestHarness()
        defer { Task { await h.cleanup() } }
        _ = try await h.redis.hset(h.offsetsKey, fields: [("0", stored), ("1", stored), ("2", stored)])
        let limit = 500
        // The new log is already longer than the stale offset 5 when ingest is assigned.
        try await h.replay(spotBTC, ["--speed", "max", "--limit", "\(limit)"])
        let ingest = try h.startIngest()
        let expected = try expectedTicks(spotBTC, limit: limit)
        let arrived = await TestEnv.eventually(timeout: .seconds(60), every: .milliseconds(200)) {
            ((try? await h.redis.xlen(h.ticks)) ?? 0) >= expected.count
        }
        #expect(arrived, "ingest: \(ingest.output().suffix(2000))")
        #expect(try await h.tickEntries() == expected)
        #expect(ingest.output().contains("(topic re-created?): forgetting it"))
        // The partition that got the messages now names its last one (the others are checked when theirs come).
        let values = try await h.redis.hgetall(h.offsetsKey).values
        #expect(values.contains { $0.hasPrefix("\(limit - 1) ") })
        ingest.terminate()
        #expect(try await ingest.waitForExit(timeout: .seconds(20)) == 0)
    }

    @Test("broker faults: failing fetches and commits for a while; ingest recovers by itself")
    func brokerFaults() async throws {
        let h = try IngestHarness()
        defer { Task { await h.cleanup() } }
        let ingest = try h.startIngest()
        let limit = 4000
        let expected = try expectedTicks(spotBTC, limit: limit)
        // Wait until ingest is in the group, then make the next commits and fetches fail.
        try await h.replay(spotBTC, ["--speed", "max", "--limit", "10"])
        #expect(await TestEnv.eventually(timeout: .seconds(30)) { ((try? await h.redis.xlen(h.ticks)) ?? 0) > 0 })
        h.cluster.pushRequestErrors(.offsetCommit, Array(repeating: .notCoordinator, count: 10))
        h.cluster.pushRequestErrors(.fetch, Array(repeating: .notLeaderForPartition, count: 10))
        try await h.replay(spotBTC, ["--speed", "max", "--limit", "\(limit)"])
        let complete = await TestEnv.eventually(timeout: .seconds(90), every: .milliseconds(200)) {
            let written = (try? await h.tickEntries()) ?? []
            return Set(written.map(TickKey.init)).isSuperset(of: expected.map(TickKey.init))
        }
        #expect(complete, "ingest: \(ingest.output().suffix(3000))")
        #expect(ingest.isRunning)
        ingest.terminate()
        #expect(try await ingest.waitForExit(timeout: .seconds(20)) == 0)
    }
}

/// Identifies a tick across redeliveries.
struct TickKey: Hashable {
    let symbol: String
    let tsNs: Int64
    let kind: Tick.Kind
    let seq: Int64?
    init(_ t: Tick) {
        symbol = t.symbol
        tsNs = t.tsNs
        kind = t.kind
        seq = t.seq
    }
}
