// ingest-bench: end-to-end latency and throughput of a running `ingest` (bench/run-ingest.sh starts it).
//
// An open-loop producer publishes the first N messages of a recording at a fixed rate. Each message's
// header `ts_ns` (which ingest copies into the Tick's `ts_ns`, DESIGN.md) is the wall-clock time the
// schedule says it is due — not the recorded 2024 time, and not when the producer got round to it, so a
// stalled producer cannot hide a stall (no coordinated omission). A reader XREADs the ticks stream and
// records, per tick, now − ts_ns (HdrHistogram, µs): produced → Kafka → ingest → Redis write → seen.
// The Redis entry id (the server's clock at XADD, ms) gives a second, reader-free view of the same
// latency at ms resolution. Results are JSON on stdout; a per-second timeline goes with them so a tail
// can be traced to when it happened.
import Foundation
import Histogram
import Logging
import MarketData
import Synchronization
import TEKafka
import TERedis

struct Options {
    let env = ProcessInfo.processInfo.environment
    var brokers = ProcessInfo.processInfo.environment["KAFKA_BROKERS"] ?? ""
    var redisURL = ProcessInfo.processInfo.environment["REDIS_URL"] ?? ""
    var topic = "bench-ingest"
    var stream = "bench:ingest:ticks"
    var file = ""
    /// Messages per second; nil = as fast as librdkafka takes them.
    var rate: Double? = 5000
    var messages = 50_000
    /// Skip the warm-up (to show what a cold start does to the tail).
    var warmUp = true
    /// Skip fetching the topic's metadata before the clock starts (to show the cold-producer second).
    var prepare = true

    init() {
        var args = CommandLine.arguments.dropFirst()
        while let arg = args.popFirst() {
            switch arg {
            case "--topic": topic = args.popFirst() ?? topic
            case "--stream": stream = args.popFirst() ?? stream
            case "--file": file = args.popFirst() ?? file
            case "--rate":
                let v = args.popFirst() ?? ""
                rate = v == "max" ? nil : Double(v) ?? rate
            case "--messages": messages = Int(args.popFirst() ?? "") ?? messages
            case "--no-warmup": warmUp = false
            case "--no-prepare": prepare = false
            default:
                FileHandle.standardError.write(
                    Data(
                        "usage: ingest-bench --file REC --topic T --stream S [--rate N|max] [--messages N] (KAFKA_BROKERS, REDIS_URL)\n"
                            .utf8))
                exit(2)
            }
        }
        guard !brokers.isEmpty, !redisURL.isEmpty, !file.isEmpty else {
            FileHandle.standardError.write(
                Data("ingest-bench: KAFKA_BROKERS, REDIS_URL and --file are required\n".utf8))
            exit(2)
        }
    }
}

func wallNs() -> Int64 {
    var t = timespec()
    clock_gettime(CLOCK_REALTIME, &t)
    return Int64(t.tv_sec) * 1_000_000_000 + Int64(t.tv_nsec)
}

func loadAverage() -> String {
    ((try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? "").split(separator: " ").prefix(3).joined(
        separator: " ")
}

func log(_ s: String) { FileHandle.standardError.write(Data("ingest-bench: \(s)\n".utf8)) }

/// Set by the producer when it has enqueued everything (read by the reader's stop rule), and the
/// delivery reports that failed (counted on librdkafka's poll thread).
final class ProducerState: Sendable {
    let doneAtNs = Atomic<Int64>(0)
    let failures = Atomic<Int>(0)
    /// When the first measured message was handed to librdkafka, and when the first delivery report came:
    /// the producer's own start-up, apart from ingest.
    let firstProducedNs = Atomic<Int64>(0)
    let firstDeliveredNs = Atomic<Int64>(0)
}

struct Observed {
    var latency = Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
    var serverLatency = Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
    var ticks = 0
    var firstSeenNs: Int64 = 0
    var lastSeenNs: Int64 = 0
    /// Per second of the schedule: ticks, worst latency (µs), ticks over 100 ms.
    var perSecond: [Int: (count: Int, maxMicros: UInt64, over100ms: Int)] = [:]
}

/// Reads the stream after `startID` until `expected` ticks arrived, or nothing new came for 15 s after
/// the producer finished.
func observe(
    _ redis: RedisClient, stream: String, after startID: String, expected: Int, scheduleStartNs: Int64,
    producer: ProducerState
) async throws -> Observed {
    var out = Observed()
    var last = startID
    var lastProgress = wallNs()
    while out.ticks < expected {
        let reads = try await redis.xread(streams: [(stream, last)], count: 2000, block: .milliseconds(100))
        let now = wallNs()
        for entry in reads.first?.entries ?? [] {
            last = entry.id
            guard let ts = entry.fields.first(where: { $0.0 == "ts_ns" }).flatMap({ Int64($0.1) }) else { continue }
            let micros = UInt64(max(0, now - ts) / 1000)
            _ = out.latency.record(micros)
            if let ms = Int64(entry.id.prefix(while: { $0 != "-" })) {
                _ = out.serverLatency.record(UInt64(max(0, ms * 1_000_000 - ts) / 1000))
            }
            let second = Int((ts - scheduleStartNs) / 1_000_000_000)
            var s = out.perSecond[second] ?? (0, 0, 0)
            s.count += 1
            s.maxMicros = max(s.maxMicros, micros)
            if micros > 100_000 { s.over100ms += 1 }
            out.perSecond[second] = s
            if out.ticks == 0 { out.firstSeenNs = now }
            out.ticks += 1
            out.lastSeenNs = now
            lastProgress = now
        }
        let done = producer.doneAtNs.load(ordering: .acquiring)
        if done > 0, now - max(lastProgress, done) > 15_000_000_000 {
            log("stopping: \(out.ticks) of \(expected) ticks seen, nothing new for 15 s")
            break
        }
    }
    return out
}

/// Enqueues at the broker's pace, counting failed deliveries and the first delivery's wall time.
func produce(_ producer: KafkaProducer, _ message: KafkaOutgoingMessage, state: ProducerState) async throws {
    try await producer.enqueue(message) { result in
        switch result {
        case .failure: state.failures.add(1, ordering: .relaxed)
        case .success: _ = state.firstDeliveredNs.compareExchange(expected: 0, desired: wallNs(), ordering: .relaxed)
        }
    }
}

let options = Options()
let loadBefore = loadAverage()

// The recording, in memory, and how many ticks ingest must write for it (the same normaliser).
let reader = try RecordingReader(path: options.file)
var recorded: [RecordedMessage] = []
var normalizer = MarketNormalizer()
var expectedTicks = 0
while recorded.count < options.messages, let m = try reader.next() {
    recorded.append(m)
    if case .ticks(let t) = normalizer.normalize(payload: m.payload, receiveTsNs: m.tsNs, key: m.key) {
        expectedTicks += t.count
    }
}
log(
    "\(recorded.count) messages → \(expectedTicks) ticks expected; rate \(options.rate.map { "\(Int($0))/s" } ?? "max")"
)

var logger = Logger(label: "ingest-bench")
logger.logLevel = .warning
let producer = try KafkaProducer(
    configuration: KafkaConfiguration(
        brokers: options.brokers, properties: KafkaConfiguration.passThroughProperties(options.env)),
    logger: logger)
let redis = RedisClient(
    configuration: try RedisConfiguration(url: options.redisURL), name: "ingest-bench", logger: logger)
let state = ProducerState()

// Without it librdkafka parks the first messages until its 1 s topic scan (see `prepare`).
if options.prepare { try await producer.prepare(topic: options.topic) }

// Warm-up: one Tick per key spread over the partitions, until ingest has written them all — the producer
// is connected, ingest has joined its group and fetches every partition before the clock starts.
let warmKeys = (0..<(options.warmUp ? 12 : 0)).map { "WARMUP\(Character(UnicodeScalar(UInt8(65 + $0))))" }
for key in warmKeys {
    let tick = #"{"symbol":"\#(key)","ts_ns":\#(wallNs()),"kind":"quote","bid":1,"bid_size":1,"ask":2,"ask_size":1}"#
    try await produce(
        producer, KafkaOutgoingMessage(topic: options.topic, key: Array(key.utf8), value: Array(tick.utf8)),
        state: state)
}
var startID = "0-0"  // the stream is the run's own
var warmed = 0
let warmDeadline = ContinuousClock.now + .seconds(60)
while warmed < warmKeys.count {
    guard ContinuousClock.now < warmDeadline else {
        log("warm-up ticks never arrived (is ingest running on \(options.topic)?)")
        exit(1)
    }
    for entry in try await redis.xread(streams: [(options.stream, startID)], count: 100, block: .milliseconds(200))
        .first?.entries ?? []
    {
        startID = entry.id
        warmed += 1
    }
}
if options.warmUp { try await Task.sleep(for: .seconds(1)) }

state.firstDeliveredNs.store(0, ordering: .relaxed)
let scheduleStart = wallNs() + 50_000_000
let observer = Task { [startID] in
    try await observe(
        redis, stream: options.stream, after: startID, expected: expectedTicks, scheduleStartNs: scheduleStart,
        producer: state)
}

// Open loop: message i is due at scheduleStart + i / rate; its ts_ns is that due time, whenever it is sent.
let clockStart = ContinuousClock.now + .nanoseconds(scheduleStart - wallNs())
let intervalNs = options.rate.map { 1e9 / $0 }
var lateMax: Duration = .zero
for (i, m) in recorded.enumerated() {
    let dueNs: Int64
    if let intervalNs {
        let offset = Int64(Double(i) * intervalNs)
        dueNs = scheduleStart + offset
        let due = clockStart + .nanoseconds(offset)
        let now = ContinuousClock.now
        if due > now {
            try await Task.sleep(until: due, tolerance: .microseconds(50))
        } else {
            lateMax = max(lateMax, now - due)
        }
    } else {
        dueNs = wallNs()
    }
    if i == 0 { state.firstProducedNs.store(wallNs(), ordering: .relaxed) }
    try await produce(
        producer,
        KafkaOutgoingMessage(
            topic: options.topic, key: m.key.map { Array($0.utf8) }, value: m.payload, timestampMs: dueNs / 1_000_000,
            headers: [
                KafkaHeader(key: "ts_ns", string: String(dueNs)),
                KafkaHeader(key: "produced_ns", string: String(wallNs()))
            ]),
        state: state)
}
let producedAt = wallNs()
state.doneAtNs.store(producedAt, ordering: .releasing)
try await producer.flush(timeout: .seconds(60))
let seen = try await observer.value
let loadAfter = loadAverage()
redis.close()

func ms(_ micros: UInt64) -> Double { (Double(micros) / 1000 * 1000).rounded() / 1000 }
func summary(_ h: Histogram<UInt64>) -> [String: Double] {
    [
        "p50_ms": ms(h.valueAtPercentile(50)), "p90_ms": ms(h.valueAtPercentile(90)),
        "p99_ms": ms(h.valueAtPercentile(99)),
        "p99_9_ms": ms(h.valueAtPercentile(99.9)), "max_ms": ms(h.max), "samples": Double(h.totalCount)
    ]
}
let produceSeconds = Double(producedAt - scheduleStart) / 1e9
let endToEndSeconds = Double(seen.lastSeenNs - scheduleStart) / 1e9
let worst = seen.perSecond.sorted { $0.value.maxMicros > $1.value.maxMicros }.prefix(8).map {
    [
        "second": Double($0.key), "ticks": Double($0.value.count), "max_ms": ms($0.value.maxMicros),
        "over_100ms": Double($0.value.over100ms)
    ]
}
let result: [String: Any] = [
    "messages": recorded.count, "ticks_expected": expectedTicks, "ticks_seen": seen.ticks,
    "delivery_failures": state.failures.load(ordering: .relaxed),
    "rate_target_per_second": options.rate.map { Int($0) } as Any,
    "rate_offered_per_second": (Double(recorded.count) / produceSeconds).rounded(),
    "producer_max_behind_schedule_ms":
        (Double(lateMax.components.attoseconds / 1_000_000_000_000) / 1000 + Double(lateMax.components.seconds) * 1000),
    "messages_per_second_end_to_end": (Double(recorded.count) / endToEndSeconds).rounded(),
    "latency_produce_to_seen": summary(seen.latency),
    "latency_produce_to_redis_entry_id": summary(seen.serverLatency),
    "worst_seconds": worst,
    "first_delivery_report_ms": Double(
        (state.firstDeliveredNs.load(ordering: .relaxed) - state.firstProducedNs.load(ordering: .relaxed)) / 1000)
        / 1000,
    "warm_up": options.warmUp, "producer_prepared": options.prepare,
    "load_average_before": loadBefore, "load_average_after": loadAfter
]
let json = try JSONSerialization.data(withJSONObject: result, options: [.prettyPrinted, .sortedKeys])
print(String(decoding: json, as: UTF8.self))
