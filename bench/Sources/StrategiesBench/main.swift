// strategies-bench: signals/s through the real `strategy-engine` and `opportunity-aggregator` binaries
// (release builds) on a real Redis, plus per-entry latency at a paced rate.
//
// Throughput: N synthetic warm snapshots are preloaded into a private features stream; strategy-engine
// (default strategy file) drains it into a private signals stream; then opportunity-aggregator drains
// those signals. Rate = entries / (time from the group's first read to fully acknowledged), sampled
// every 2 ms through XINFO GROUPS.
// Latency: with each service running idle, entries are added one at a time at `--rate`/s and the time
// from XADD to the corresponding output entry being readable (XREAD BLOCK on the output) is recorded
// (HdrHistogram, µs).
import Foundation
import Histogram
import Synchronization
import TEModels
import TERedis

struct Options {
    var url = ProcessInfo.processInfo.environment["REDIS_URL"] ?? ""
    var binDir = ".build/release"
    var strategiesFile = "deploy/strategies/default.json"
    var snapshots = 50_000
    var rate = 500
    var latencyEntries = 2000
    var output = "bench/results/strategies"

    init() {
        var args = CommandLine.arguments.dropFirst()
        while let arg = args.popFirst() {
            switch arg {
            case "--url": url = args.popFirst() ?? url
            case "--bin-dir": binDir = args.popFirst() ?? binDir
            case "--strategies": strategiesFile = args.popFirst() ?? strategiesFile
            case "--snapshots": snapshots = Int(args.popFirst() ?? "") ?? snapshots
            case "--rate": rate = Int(args.popFirst() ?? "") ?? rate
            case "--latency-entries": latencyEntries = Int(args.popFirst() ?? "") ?? latencyEntries
            case "--output": output = args.popFirst() ?? output
            default:
                FileHandle.standardError.write(
                    Data(
                        "usage: strategies-bench [--url redis://…] [--bin-dir DIR] [--strategies FILE] [--snapshots N] [--rate N] [--latency-entries N] [--output PATH-without-extension]\n"
                            .utf8))
                exit(2)
            }
        }
    }
}

struct Throughput: Codable {
    var service: String
    var input: Int
    var output: Int
    var seconds: Double
    var inputPerSecond: Double
    var outputPerSecond: Double

    enum CodingKeys: String, CodingKey {
        case service, input, output, seconds
        case inputPerSecond = "input_per_second"
        case outputPerSecond = "output_per_second"
    }
}

struct Latency: Codable {
    var service: String
    var entries: Int
    var ratePerSecond: Int
    var p50Micros: UInt64
    var p99Micros: UInt64
    var maxMicros: UInt64

    enum CodingKeys: String, CodingKey {
        case service, entries
        case ratePerSecond = "rate_per_second"
        case p50Micros = "p50_us"
        case p99Micros = "p99_us"
        case maxMicros = "max_us"
    }
}

struct Report: Codable {
    var name = "strategies"
    var timestamp: String
    var machine: String
    var server: String
    var strategiesFile: String
    var throughput: [Throughput]
    var latency: [Latency]

    enum CodingKeys: String, CodingKey {
        case name, timestamp, machine, server, throughput, latency
        case strategiesFile = "strategies_file"
    }
}

func micros(_ d: Duration) -> UInt64 {
    let (s, atto) = d.components
    return UInt64(max(0, s)) * 1_000_000 + UInt64(max(0, atto) / 1_000_000_000_000)
}

func seconds(_ d: Duration) -> Double {
    let (s, atto) = d.components
    return Double(s) + Double(atto) / 1e18
}

struct Random {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }
    mutating func symmetric(_ scale: Double) -> Double { (unit() * 2 - 1) * scale }
}

let baseTs: Int64 = 1_723_161_254_000_000_000

/// Warm snapshots whose features span the default thresholds (about 1 signal per 3 snapshots), 5 ms apart.
func syntheticSnapshots(_ n: Int) -> [FeatureSnapshot] {
    var random = Random(state: 2024)
    return (0..<n).map { i in
        FeatureSnapshot(
            symbol: "BTCUSDT", tsNs: baseTs + Int64(i) * 5_000_000, windowMs: 5000, nQuotes: 900, nTrades: 300,
            tradeVolume: random.unit() * 200, lastPrice: 60000, warm: true,
            features: FeatureVector(
                spreadBps: random.unit() * 0.1, imbalance: random.symmetric(1), depthImbalance: random.symmetric(1),
                ofiNorm: random.symmetric(70), realizedVolBps: random.unit() * 5, midReturnBps: random.symmetric(12),
                tickRate: random.unit() * 400, micropriceOffsetBps: random.symmetric(0.01)))
    }
}

func startService(_ path: String, environment: [String: String]) throws -> Process {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    var env = ProcessInfo.processInfo.environment
    for (k, v) in environment { env[k] = v }
    process.environment = env
    process.standardOutput = FileHandle.nullDevice
    let log = FileManager.default.temporaryDirectory.appendingPathComponent(
        "\(URL(fileURLWithPath: path).lastPathComponent)-bench.log")
    FileManager.default.createFile(atPath: log.path, contents: nil)
    process.standardError = try FileHandle(forWritingTo: log)
    try process.run()
    return process
}

func stop(_ process: Process) {
    process.terminate()
    process.waitUntilExit()
}

func add<M: StreamMessage>(_ redis: RedisClient, _ messages: [M], to stream: String) async throws {
    for chunk in stride(from: 0, to: messages.count, by: 1000) {
        let commands = try messages[chunk..<min(chunk + 1000, messages.count)].map {
            RedisCommand.xadd(stream, maxLen: nil, fields: try StreamFieldEncoder.encode($0))
        }
        for reply in try await redis.pipeline(commands) { _ = try reply.throwingError() }
    }
}

/// Waits for the group to start reading `stream` and to acknowledge all of it; the seconds in between.
func drainTime(_ redis: RedisClient, stream: String, group: String, last: String, service: Process) async throws
    -> Double
{
    let clock = ContinuousClock()
    var started: ContinuousClock.Instant?
    let deadline = clock.now + .seconds(600)
    while clock.now < deadline {
        guard service.isRunning else {
            throw BenchError(
                "\(group) exited (status \(service.terminationStatus)); see its log in \(NSTemporaryDirectory())")
        }
        if let info = try await redis.xinfoGroups(stream).first(where: { $0.name == group }) {
            if started == nil, info.lastDeliveredID != "0-0" { started = clock.now }
            if info.lastDeliveredID == last, info.pending == 0, let started { return seconds(clock.now - started) }
        }
        try await Task.sleep(for: .milliseconds(2))
    }
    throw BenchError("\(group) did not drain \(stream) within 600 s")
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Adds `messages` one at a time at `rate`/s and records the time until `matches` finds the output entry.
func pacedLatency<M: StreamMessage>(
    _ redis: RedisClient, reader: RedisClient, messages: [M], input: String, output: String, rate: Int,
    key: @escaping @Sendable (M) -> String, outputKey: @escaping @Sendable (StreamEntry) -> String?
) async throws -> Histogram<UInt64> {
    let clock = ContinuousClock()
    let sent = SentTimes()
    let start = try await redis.xrevrange(output, count: 1).first?.id ?? "0-0"
    let expected = messages.count
    let readerTask = Task { () throws -> Histogram<UInt64> in
        var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
        var cursor = start
        var seen = 0
        let deadline = clock.now + .seconds(120)
        while seen < expected, clock.now < deadline {
            let reads = try await reader.xread(streams: [(output, cursor)], count: 1000, block: .milliseconds(200))
            let now = clock.now
            for entry in reads.first?.entries ?? [] {
                cursor = entry.id
                if let k = outputKey(entry), let t0 = sent.take(k) {
                    _ = histogram.record(micros(now - t0))
                    seen += 1
                }
            }
        }
        return histogram
    }
    let interval = Duration.seconds(1) / rate
    var next = clock.now
    for message in messages {
        try await clock.sleep(until: next)
        sent.put(key(message), clock.now)
        _ = try await redis.send(try RedisCommand.xadd(input, maxLen: nil, fields: StreamFieldEncoder.encode(message)))
        next += interval
    }
    return try await readerTask.value
}

final class SentTimes: Sendable {
    private let times = Mutex<[String: ContinuousClock.Instant]>([:])
    func put(_ k: String, _ t: ContinuousClock.Instant) { times.withLock { $0[k] = t } }
    func take(_ k: String) -> ContinuousClock.Instant? { times.withLock { $0.removeValue(forKey: k) } }
}

let options = Options()
guard !options.url.isEmpty else {
    FileHandle.standardError.write(Data("REDIS_URL is required (source .dev/env)\n".utf8))
    exit(1)
}
let redis = RedisClient(configuration: try RedisConfiguration(url: options.url), name: "bench")
let reader = RedisClient(configuration: try RedisConfiguration(url: options.url), name: "bench-reader")
let pid = ProcessInfo.processInfo.processIdentifier
let features = "bench:features:\(pid)"
let signalsStream = "bench:signals:\(pid)"
let opportunities = "bench:opportunities:\(pid)"
let statePrefix = "bench:agg:\(pid)"
let engineBin = "\(options.binDir)/strategy-engine"
let aggregatorBin = "\(options.binDir)/opportunity-aggregator"
let common = [
    "REDIS_URL": options.url, "LOG_LEVEL": "warning", "STREAM_BLOCK_MS": "50", "CONSUMER_NAME": "bench-\(pid)"
]
let engineEnv = common.merging(
    [
        "STRATEGIES_FILE": options.strategiesFile, "FEATURES_STREAM": features, "SIGNALS_STREAM": signalsStream,
        "METRICS_PORT": "0"
    ], uniquingKeysWith: { $1 })
let aggregatorEnv = common.merging(
    [
        "SIGNALS_STREAM": signalsStream, "OPPORTUNITIES_STREAM": opportunities, "AGG_STATE_PREFIX": statePrefix,
        "METRICS_PORT": "0", "MAX_SIGNAL_AGE_MS": "86400000"
    ], uniquingKeysWith: { $1 })

func cleanUp() async throws {
    _ = try await redis.del([features, signalsStream, opportunities, "\(statePrefix):state"])
    let seen = try await redis.scan(match: "\(statePrefix):seen:*", count: 5000)
    for chunk in stride(from: 0, to: seen.count, by: 1000) {
        _ = try await redis.del(Array(seen[chunk..<min(chunk + 1000, seen.count)]))
    }
}
try await cleanUp()

// MARK: Throughput
let snapshots = syntheticSnapshots(options.snapshots)
try await add(redis, snapshots, to: features)
let lastFeature = try await redis.xrevrange(features, count: 1).first!.id
let engine = try startService(engineBin, environment: engineEnv)
let engineSeconds = try await drainTime(
    redis, stream: features, group: "strategy-engine", last: lastFeature, service: engine)
stop(engine)
let signalCount = try await redis.xlen(signalsStream)
let lastSignal = try await redis.xrevrange(signalsStream, count: 1).first!.id
let aggregator = try startService(aggregatorBin, environment: aggregatorEnv)
let aggregatorSeconds = try await drainTime(
    redis, stream: signalsStream, group: "opportunity-aggregator", last: lastSignal, service: aggregator)
stop(aggregator)
let opportunityCount = try await redis.xlen(opportunities)
let throughput = [
    Throughput(
        service: "strategy-engine", input: snapshots.count, output: signalCount, seconds: engineSeconds,
        inputPerSecond: Double(snapshots.count) / engineSeconds, outputPerSecond: Double(signalCount) / engineSeconds),
    Throughput(
        service: "opportunity-aggregator", input: signalCount, output: opportunityCount, seconds: aggregatorSeconds,
        inputPerSecond: Double(signalCount) / aggregatorSeconds,
        outputPerSecond: Double(opportunityCount) / aggregatorSeconds)
]
try await cleanUp()

// MARK: Latency (paced), each service on its own
let n = options.latencyEntries
// Each snapshot fires exactly one signal (rapid_rise far past its threshold, nothing else).
let pacedSnapshots = (0..<n).map { i in
    FeatureSnapshot(
        symbol: "BTCUSDT", tsNs: baseTs + Int64(i) * 5_000_000, windowMs: 5000, nQuotes: 900, nTrades: 300,
        tradeVolume: 100, lastPrice: 60000, warm: true,
        features: FeatureVector(
            spreadBps: 5, imbalance: 0, depthImbalance: 0, ofiNorm: 0, realizedVolBps: 1, midReturnBps: 30,
            tickRate: 10, micropriceOffsetBps: 0))
}
let engine2 = try startService(engineBin, environment: engineEnv)
try await Task.sleep(for: .seconds(1))
let engineLatency = try await pacedLatency(
    redis, reader: reader, messages: pacedSnapshots, input: features, output: signalsStream, rate: options.rate,
    key: { String($0.tsNs) }, outputKey: { $0.field("ts_ns") })
stop(engine2)
try await cleanUp()

// Each signal opens a new opportunity (6 s apart in event time, cooldown 5 s): `first` is emitted at once.
let pacedSignals = (0..<n).map { i in
    let tsNs = baseTs + Int64(i) * 6_000_000_000
    return Signal(
        id: Signal.makeID(symbol: "BTCUSDT", strategy: "bench", tsNs: tsNs), symbol: "BTCUSDT", strategy: "bench",
        direction: .buy, confidence: 0.9, tsNs: tsNs,
        features: FeatureVector(
            spreadBps: 0, imbalance: 0, depthImbalance: 0, ofiNorm: 0, realizedVolBps: 0, midReturnBps: 0, tickRate: 0,
            micropriceOffsetBps: 0))
}
let aggregator2 = try startService(aggregatorBin, environment: aggregatorEnv)
try await Task.sleep(for: .seconds(1))
let aggregatorLatency = try await pacedLatency(
    redis, reader: reader, messages: pacedSignals, input: signalsStream, output: opportunities, rate: options.rate,
    key: { $0.id },
    outputKey: { entry in
        guard entry.field("emit_reason") == "first", let ids = entry.field("signal_ids") else { return nil }
        return (try? JSONDecoder().decode([String].self, from: Data(ids.utf8)))?.first
    })
stop(aggregator2)
try await cleanUp()

func latency(_ service: String, _ h: Histogram<UInt64>) -> Latency {
    Latency(
        service: service, entries: Int(h.totalCount), ratePerSecond: options.rate, p50Micros: h.valueAtPercentile(50),
        p99Micros: h.valueAtPercentile(99), maxMicros: h.max)
}

let info = try await redis.send("INFO", "server").string ?? ""
let version =
    info.split(separator: "\r\n").first { $0.hasPrefix("redis_version:") }?.dropFirst("redis_version:".count) ?? "?"
redis.close()
reader.close()
let load =
    (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(
        separator: " ") ?? "?"
let report = Report(
    timestamp: ISO8601DateFormatter().string(from: Date()),
    machine: "\(ProcessInfo.processInfo.activeProcessorCount) cores, load average \(load)",
    server: "redis \(version)", strategiesFile: options.strategiesFile, throughput: throughput,
    latency: [latency("strategy-engine", engineLatency), latency("opportunity-aggregator", aggregatorLatency)])

let encoder = JSONEncoder()
encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
try encoder.encode(report).write(to: URL(fileURLWithPath: options.output + ".json"))
var md = "## strategies: strategy-engine and opportunity-aggregator (release binaries, real Redis)\n\n"
md += "\(report.server), \(report.machine); strategy file `\(options.strategiesFile)`; default batch size (100).\n\n"
md += "Throughput: a preloaded backlog drained by one consumer (first read → all acknowledged).\n\n"
md +=
    "| service | input entries | output entries | seconds | input/s | output/s |\n| --- | ---: | ---: | ---: | ---: | ---: |\n"
for t in throughput {
    md +=
        "| \(t.service) | \(t.input) | \(t.output) | \(String(format: "%.2f", t.seconds)) | \(Int(t.inputPerSecond)) | \(Int(t.outputPerSecond)) |\n"
}
md += "\nLatency: entries added one at a time at \(options.rate)/s; XADD → output entry readable.\n\n"
md += "| service | entries | p50 | p99 | max |\n| --- | ---: | ---: | ---: | ---: |\n"
for l in report.latency {
    md += "| \(l.service) | \(l.entries) | \(l.p50Micros) µs | \(l.p99Micros) µs | \(l.maxMicros) µs |\n"
}
try Data(md.utf8).write(to: URL(fileURLWithPath: options.output + ".md"))
print(md)
