// pipeline-bench: the whole stream pipeline (ingest → feature-pipeline → strategy-engine →
// opportunity-aggregator, release binaries started by bench/run-pipeline.sh on a private Kafka topic and
// Redis database).
//
// latency: produces a recording to Kafka at a fixed rate (open loop, scheduled per millisecond) with the
// headers `te replay` sets (`ts_ns` = recorded time, `produced_ns` = produce wall clock, which is what
// ingest's te_ingest_latency_seconds starts from). Readers tail te:features and te:opportunities
// (XREAD BLOCK); a snapshot's `ts_ns` and an opportunity's `last_ts_ns` name the recorded time of the
// message that produced them, so latency = wall clock when the entry is readable − produce wall clock of
// that message (HdrHistogram, µs); also from the message's scheduled send time (coordinated omission
// corrected). The first `--warmup` seconds are produced but not recorded.
//
// throughput: observes the streams while `te replay --speed max` (run by the script) floods the topic:
// per stage, entries consumed per second over the span from its first to its last progress (XLEN of
// te:ticks for ingest; XINFO GROUPS entries-read for the stream stages), sampled every 20 ms.
import Foundation
import Histogram
import Logging
import MarketData
import Synchronization
import TEKafka
import TERedis

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

struct Options {
    var mode = ""
    var redis = ProcessInfo.processInfo.environment["REDIS_URL"] ?? ""
    var topic = "bench-pipeline"
    var recording = ""
    var rate = 1000
    var messages = 20_000
    var warmup = 2.0
    var label = ""
    var json = ""
    var idle = 3.0

    init() {
        var args = CommandLine.arguments.dropFirst()
        mode = args.popFirst() ?? ""
        while let arg = args.popFirst() {
            let value = args.popFirst() ?? ""
            switch arg {
            case "--redis": redis = value
            case "--topic": topic = value
            case "--recording": recording = value
            case "--rate": rate = Int(value) ?? rate
            case "--messages": messages = Int(value) ?? messages
            case "--warmup": warmup = Double(value) ?? warmup
            case "--label": label = value
            case "--json": json = value
            case "--idle": idle = Double(value) ?? idle
            default: Options.usage()
            }
        }
        if mode != "latency" && mode != "throughput" { Options.usage() }
    }

    static func usage() -> Never {
        FileHandle.standardError.write(
            Data(
                """
                usage: pipeline-bench latency --recording FILE --rate MSGS_PER_S --messages N [--warmup S] [--topic T] [--redis URL] --json PATH
                       pipeline-bench throughput [--messages N (Kafka messages replayed)] [--idle S] [--redis URL] --json PATH
                KAFKA_BROKERS names the broker (latency mode).

                """.utf8))
        exit(2)
    }
}

func wallNs() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}

func seconds(_ d: Duration) -> Double {
    let (s, atto) = d.components
    return Double(s) + Double(atto) / 1e18
}

/// Recorded time (`ts_ns`) → produce wall clock and scheduled wall clock of the first message with it;
/// `measured` is false for warm-up messages.
final class ProduceTimes: Sendable {
    typealias Times = (produced: Int64, scheduled: Int64, measured: Bool)
    private let times = Mutex<[Int64: Times]>([:])
    func put(_ ts: Int64, _ t: Times) {
        times.withLock { if $0[ts] == nil { $0[ts] = t } }
    }
    func get(_ ts: Int64) -> Times? { times.withLock { $0[ts] } }
}

final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .releasing) }
    var isSet: Bool { value.load(ordering: .acquiring) }
}

final class Deliveries: Sendable {
    private let state = Mutex<(ok: Int, failed: Int)>((0, 0))
    func record(_ r: Result<KafkaDelivery, KafkaError>) {
        state.withLock { if case .success = r { $0.ok += 1 } else { $0.failed += 1 } }
    }
    var failed: Int { state.withLock { $0.failed } }
}

/// Reads a recording off the cooperative pool (`RecordingReader.next()` blocks on a decompressor pipe).
func load(_ path: String, limit: Int) async throws -> [RecordedMessage] {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread {
            do {
                let reader = try RecordingReader(path: path)
                var out: [RecordedMessage] = []
                out.reserveCapacity(limit)
                while out.count < limit, let m = try reader.next() { out.append(m) }
                continuation.resume(returning: out)
            } catch {
                continuation.resume(throwing: error)
            }
        }
    }
}

struct StreamLatency: Codable {
    var entries = 0
    var measured = 0
    var unmatched = 0
    var p50_us: UInt64 = 0
    var p99_us: UInt64 = 0
    var p999_us: UInt64 = 0
    var max_us: UInt64 = 0
    /// From the time the open-loop schedule said the message was due (coordinated omission corrected:
    /// a producer that fell behind cannot hide the wait).
    var scheduled_p50_us: UInt64 = 0
    var scheduled_p99_us: UInt64 = 0
    var scheduled_p999_us: UInt64 = 0
}

/// Tails `stream` from the start until nothing new arrived for `idle` after `producerDone` is set.
func tail(
    _ url: String, stream: String, field: String, times: ProduceTimes, producerDone: Flag, idle: Duration
) async throws -> StreamLatency {
    let redis = RedisClient(configuration: try RedisConfiguration(url: url), name: "bench-\(stream)")
    defer { redis.close() }
    var histogram = Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
    var fromSchedule = histogram
    var out = StreamLatency()
    var cursor = "0-0"
    var lastNew = ContinuousClock.now
    while true {
        let reads = try await redis.xread(streams: [(stream, cursor)], count: 1000, block: .milliseconds(100))
        let now = wallNs()
        let entries = reads.first?.entries ?? []
        for entry in entries {
            cursor = entry.id
            out.entries += 1
            guard let text = entry.fields.first(where: { $0.0 == field })?.1, let ts = Int64(text),
                let produced = times.get(ts)
            else {
                out.unmatched += 1
                continue
            }
            guard produced.measured else { continue }
            _ = histogram.record(UInt64(max(0, now - produced.produced) / 1000))
            _ = fromSchedule.record(UInt64(max(0, now - produced.scheduled) / 1000))
            out.measured += 1
        }
        if !entries.isEmpty { lastNew = .now }
        if producerDone.isSet, ContinuousClock.now - lastNew > idle { break }
    }
    out.p50_us = histogram.valueAtPercentile(50)
    out.p99_us = histogram.valueAtPercentile(99)
    out.p999_us = histogram.valueAtPercentile(99.9)
    out.max_us = histogram.max
    out.scheduled_p50_us = fromSchedule.valueAtPercentile(50)
    out.scheduled_p99_us = fromSchedule.valueAtPercentile(99)
    out.scheduled_p999_us = fromSchedule.valueAtPercentile(99.9)
    return out
}

struct LatencyReport: Codable {
    var label: String
    var recording: String
    var target_rate: Int
    var achieved_rate: Double
    var messages: Int
    var warmup_seconds: Double
    var max_behind_schedule_ms: Double
    var delivery_failures: Int
    var features: StreamLatency
    var opportunities: StreamLatency
}

func runLatency(_ o: Options) async throws -> LatencyReport {
    let messages = try await load(o.recording, limit: o.messages)
    guard !messages.isEmpty else { throw BenchError("\(o.recording): no messages") }
    let producer = try KafkaProducer(
        configuration: try KafkaConfiguration.fromEnvironment(), logger: Logger(label: "pipeline-bench"))
    let times = ProduceTimes()
    let deliveries = Deliveries()
    let done = Flag()
    let idle = Duration.milliseconds(Int64(o.idle * 1000))
    let features = Task {
        try await tail(o.redis, stream: "te:features", field: "ts_ns", times: times, producerDone: done, idle: idle)
    }
    let opportunities = Task {
        try await tail(
            o.redis, stream: "te:opportunities", field: "last_ts_ns", times: times, producerDone: done, idle: idle)
    }

    let clock = ContinuousClock()
    let start = clock.now
    let wallStart = wallNs()
    let warmupCount = Int(o.warmup * Double(o.rate))
    var sent = 0
    var maxBehind = Duration.zero
    while sent < messages.count {
        // Open loop: every message due by now goes out now; then wait for the next millisecond.
        let elapsed = clock.now - start
        let due = min(messages.count, Int(seconds(elapsed) * Double(o.rate)) + 1)
        if sent < due {
            let scheduled = start + .seconds(Double(sent) / Double(o.rate))
            maxBehind = max(maxBehind, clock.now - scheduled)
        }
        while sent < due {
            let m = messages[sent]
            let producedNs = wallNs()
            let scheduledNs = wallStart + Int64(Double(sent) / Double(o.rate) * 1e9)
            times.put(m.tsNs, (producedNs, scheduledNs, sent >= warmupCount))
            let out = KafkaOutgoingMessage(
                topic: o.topic, key: m.key.map { Array($0.utf8) }, value: m.payload, timestampMs: m.tsNs / 1_000_000,
                headers: [
                    KafkaHeader(key: "ts_ns", string: String(m.tsNs)),
                    KafkaHeader(key: "produced_ns", string: String(producedNs))
                ])
            try await producer.enqueue(out) { deliveries.record($0) }
            sent += 1
        }
        try await Task.sleep(for: .milliseconds(1))
    }
    let produceSeconds = seconds(clock.now - start)
    try await producer.flush(timeout: .seconds(60))
    done.set()
    let f = try await features.value
    let op = try await opportunities.value
    return LatencyReport(
        label: o.label, recording: URL(fileURLWithPath: o.recording).lastPathComponent, target_rate: o.rate,
        achieved_rate: (Double(sent) / produceSeconds).rounded(), messages: sent, warmup_seconds: o.warmup,
        max_behind_schedule_ms: (seconds(maxBehind) * 1000 * 10).rounded() / 10, delivery_failures: deliveries.failed,
        features: f, opportunities: op)
}

struct StageThroughput: Codable {
    var stage: String
    var input: String
    var consumed: Int
    var seconds: Double
    var per_second: Double
}

struct ThroughputReport: Codable {
    var kafka_messages: Int
    var stages: [StageThroughput]
    var outputs: [String: Int]
}

func runThroughput(_ o: Options) async throws -> ThroughputReport {
    let redis = RedisClient(configuration: try RedisConfiguration(url: o.redis), name: "bench-observer")
    defer { redis.close() }
    let groups = [
        ("feature-pipeline", "te:ticks"), ("strategy-engine", "te:features"), ("opportunity-aggregator", "te:signals")
    ]
    struct Progress {
        var value = 0
        var first: ContinuousClock.Instant?
        var last: ContinuousClock.Instant?
    }
    var progress: [String: Progress] = ["ingest": Progress()]
    for (g, _) in groups { progress[g] = Progress() }
    var lastChange = ContinuousClock.now
    let idle = Duration.milliseconds(Int64(o.idle * 1000))
    let deadline = ContinuousClock.now + .seconds(900)
    var started = false
    while ContinuousClock.now < deadline {
        let now = ContinuousClock.now
        var values = ["ingest": try await redis.xlen("te:ticks")]
        for (g, stream) in groups {
            let info = try? await redis.xinfoGroups(stream).first(where: { $0.name == g })
            values[g] = info?.entriesRead ?? 0
        }
        for (stage, v) in values where v != progress[stage]!.value {
            if progress[stage]!.first == nil { progress[stage]!.first = now }
            progress[stage]!.last = now
            progress[stage]!.value = v
            lastChange = now
            started = true
        }
        // Done when everything read what exists and nothing moved for `idle`.
        if started, now - lastChange > idle { break }
        try await Task.sleep(for: .milliseconds(20))
    }
    var stages: [StageThroughput] = []
    for (stage, input) in [("ingest", "kafka")] + groups.map({ ($0.0, $0.1) }) {
        let p = progress[stage]!
        let span = p.first.flatMap { f in p.last.map { seconds($0 - f) } } ?? 0
        let consumed = stage == "ingest" && o.messages > 0 ? o.messages : p.value
        stages.append(
            StageThroughput(
                stage: stage, input: input, consumed: consumed, seconds: (span * 1000).rounded() / 1000,
                per_second: span > 0 ? (Double(consumed) / span).rounded() : 0))
    }
    var outputs: [String: Int] = [:]
    for s in ["te:ticks", "te:features", "te:signals", "te:opportunities", "te:dlq"] {
        outputs[s] = try await redis.xlen(s)
    }
    return ThroughputReport(kafka_messages: o.messages, stages: stages, outputs: outputs)
}

let options = Options()
guard !options.redis.isEmpty, !options.json.isEmpty else { Options.usage() }
let encoder = JSONEncoder()
encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
do {
    let data: Data
    if options.mode == "latency" {
        data = try encoder.encode(try await runLatency(options))
    } else {
        data = try encoder.encode(try await runThroughput(options))
    }
    try data.write(to: URL(fileURLWithPath: options.json))
    FileHandle.standardError.write(data + Data("\n".utf8))
} catch {
    FileHandle.standardError.write(Data("pipeline-bench: \(error)\n".utf8))
    exit(1)
}
