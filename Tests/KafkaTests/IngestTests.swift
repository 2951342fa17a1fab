import Foundation
import Logging
import MarketData
import TEKafka
import TEModels
import TERedis
import TestSupport
import Testing

/// One isolated pipeline: a mock Kafka cluster of the test's own, a unique topic and unique Redis keys.
struct IngestHarness {
    let cluster: KafkaMockCluster
    let topic: String
    let ticks: String
    let dlq: String
    let spreadPrefix: String
    let redis: RedisClient

    init(partitions: Int = 3) throws {
        cluster = try KafkaMockCluster(brokers: 1)
        let name = TestEnv.uniqueName("ingest")
        topic = "ticks-" + name.replacingOccurrences(of: ":", with: "-")
        try cluster.createTopic(topic, partitions: partitions)
        ticks = name + ":ticks"
        dlq = name + ":dlq"
        spreadPrefix = name + ":spread:"
        redis = RedisClient(configuration: try TestEnv.redisConfiguration(), name: "test")
    }

    var environment: [String: String] {
        [
            "KAFKA_BROKERS": cluster.bootstrapServers, "KAFKA_TOPIC": topic, "INGEST_TICKS_STREAM": ticks,
            "INGEST_DLQ_STREAM": dlq, "INGEST_SPREAD_PREFIX": spreadPrefix, "METRICS_PORT": "0",
            "KAFKA_CONF_session_timeout_ms": "6000", "REDIS_URL": (try? TestEnv.redisURL()) ?? "",
            "LOG_LEVEL": "info",
        ]
    }

    func startIngest() throws -> ChildProcess { try ChildProcess.built("ingest", environment: environment) }

    func replay(_ file: String, _ extra: [String]) async throws {
        let replay = try ChildProcess.built("te", arguments: ["replay", "--topic", topic, "--quiet"] + extra + [file], environment: environment)
        let status = try await replay.waitForExit(timeout: .seconds(120))
        #expect(status == 0, "te replay failed: \(replay.output())")
    }

    func tickEntries() async throws -> [Tick] {
        try await redis.xrange(ticks).map { try StreamFieldDecoder.decode(Tick.self, from: $0.fields) }
    }

    func cleanup() async {
        _ = try? await redis.del([ticks, dlq])
        redis.close()
    }
}

/// What ingest must write for the first `limit` messages of a recording: the same normalizer, in order.
func expectedTicks(_ path: String, limit: Int) throws -> [Tick] {
    let reader = try RecordingReader(path: path)
    var normalizer = MarketNormalizer()
    var out: [Tick] = []
    var n = 0
    while n < limit, let m = try reader.next() {
        n += 1
        if case .ticks(let ticks) = normalizer.normalize(payload: m.payload, receiveTsNs: m.tsNs, key: m.key) { out += ticks }
    }
    return out
}

let spotBTC = "/work/shared/data/binance/spot_btcusdt_20240808.gz"

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
        let producer = try KafkaProducer(configuration: KafkaConfiguration(brokers: h.cluster.bootstrapServers), logger: Logger(label: "test"))
        let garbage = [
            "{not json",
            #"{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT","b":"61838","B":"1","a":"61837","A":"1"}}"#,
            #"{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT","b":"NaN","B":"1","a":"61837","A":"1"}}"#,
            #"{"hello":"world"}"#,
        ]
        for g in garbage {
            try await producer.send(KafkaOutgoingMessage(topic: h.topic, key: Array("BTCUSDT".utf8), value: Array(g.utf8), timestampMs: 1_723_161_300_000))
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
        let letters = try await h.redis.xrange(h.dlq).map { try StreamFieldDecoder.decode(DeadLetter.self, from: $0.fields) }
        #expect(letters.count == garbage.count)
        let reasons = letters.map { String($0.reason.prefix(while: { $0 != ":" })) }.sorted()
        #expect(reasons == ["bad_json", "crossed_book", "non_finite", "unknown_format"].sorted())
        #expect(Set(letters.map(\.payload)) == Set(garbage))
        #expect(letters.allSatisfy { $0.stage == "ingest" && ($0.source ?? "").hasPrefix("kafka:\(h.topic)/") })
        let spread = try await h.redis.get(h.spreadPrefix + "BTCUSDT")
        #expect(spread.flatMap(Double.init) != nil)
        ingest.terminate()
        #expect(try await ingest.waitForExit(timeout: .seconds(20)) == 0)
    }

    @Test("SIGKILL ingest mid-replay and restart it: every tick still arrives (no gaps)")
    func killAndRestart() async throws {
        let h = try IngestHarness()
        defer { Task { await h.cleanup() } }
        let limit = 6000
        let expected = try expectedTicks(spotBTC, limit: limit)
        var ingest = try h.startIngest()
        let replay = Task { try await h.replay(spotBTC, ["--speed", "40", "--limit", "\(limit)"]) }
        let midway = await TestEnv.eventually(timeout: .seconds(60), every: .milliseconds(20)) {
            ((try? await h.redis.xlen(h.ticks)) ?? 0) > expected.count / 4
        }
        #expect(midway)
        ingest.kill9()
        _ = try await ingest.waitForExit()
        ingest = try h.startIngest()
        try await replay.value
        let complete = await TestEnv.eventually(timeout: .seconds(90), every: .milliseconds(200)) {
            let written = (try? await h.tickEntries()) ?? []
            return Set(written.map(TickKey.init)).isSuperset(of: expected.map(TickKey.init))
        }
        let written = try await h.tickEntries()
        #expect(complete, "missing \(Set(expected.map(TickKey.init)).subtracting(written.map(TickKey.init)).count) ticks; ingest: \(ingest.output().suffix(2000))")
        // At-least-once: a batch written but not committed before the kill is written again, never skipped.
        #expect(written.count >= expected.count)
        ingest.terminate()
        _ = try await ingest.waitForExit(timeout: .seconds(20))
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
