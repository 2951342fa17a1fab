// stage-bench: each pipeline stage alone, as issue 15 defines its rows (bench/run-stages.sh starts the
// private redis-server and dev broker, preloads the Kafka topic, runs the references, writes the Markdown).
//
// Drain: the stage's whole input is in place before ONE release process of the stage starts; the time runs
// from its first read to its last write. Inputs are chained, so every stage reads real data: the
// recording on Kafka → ingest → te:ticks → feature-pipeline → te:features → strategy-engine → te:signals
// → opportunity-aggregator; audit-writer drains synthetic AuditRecords from te:audit into `decisions` of a
// scratch database. Each stage's input is saved in DB 1 of the private Redis and copied back (COPY … DB 0)
// into a flushed DB 0 before each run of that stage.
//   first read: ingest's te_ingest_messages_consumed_total above 0, or the group's last-delivered id set
//     (XINFO GROUPS, polled every 2 ms);
//   last write: ingest: the last te:ticks entry's id (Redis server time, ms); the others: the group has
//     every entry delivered and none pending (each stage acknowledges only after its output is written).
// Allocations: a second drain (of the input's last 20,000 entries; ingest: the whole topic) under `perf stat`
// with uprobes on libc's malloc/calloc/realloc (perf probe, set up by the script), minus an idle run of the
// same binary (start-up and shutdown), per input entry.
// Profile (--profile-dir): a third drain under `perf record -g`.
// Paced: the stage running idle, entries added open loop at --rate/s; latency = output readable (XREAD on
// the output stream; for audit-writer the row visible in `decisions`) − the entry's SCHEDULED send time,
// so a late sender or a stalled stage cannot hide a stall (coordinated omission); HdrHistogram, µs.
import Foundation
import Histogram
import Logging
import Synchronization
import TEModels
import TEPostgres
import TERedis

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

struct Options {
    var binDir = ".build/release"
    var redisURL = ""
    var postgresURL = ""
    var kafkaTopic = ""
    var kafkaMessages = 0
    var kafkaIdleTopic = ""
    var strategiesFile = "deploy/strategies/default.json"
    var rate = 5000
    var pacedSeconds = 10
    var auditRows = 100_000
    var allocations = false
    var profileDir: String?
    var stages: Set<String> = [
        "ingest", "feature-pipeline", "strategy-engine", "opportunity-aggregator", "audit-writer"
    ]
    var output = "stages.json"

    init() {
        var args = CommandLine.arguments.dropFirst()
        while let arg = args.popFirst() {
            let value = args.popFirst() ?? ""
            switch arg {
            case "--bin-dir": binDir = value
            case "--redis": redisURL = value
            case "--postgres": postgresURL = value
            case "--kafka-topic": kafkaTopic = value
            case "--kafka-messages": kafkaMessages = Int(value) ?? 0
            case "--kafka-idle-topic": kafkaIdleTopic = value
            case "--strategies": strategiesFile = value
            case "--rate": rate = Int(value) ?? rate
            case "--paced-seconds": pacedSeconds = Int(value) ?? pacedSeconds
            case "--audit-rows": auditRows = Int(value) ?? auditRows
            case "--allocations": allocations = value == "1"
            case "--profile-dir": profileDir = value.isEmpty ? nil : value
            case "--stages": stages = Set(value.split(separator: ",").map(String.init))
            case "--output": output = value
            default:
                FileHandle.standardError.write(Data("stage-bench: unknown option \(arg)\n".utf8))
                exit(2)
            }
        }
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
func micros(_ d: Duration) -> UInt64 { UInt64(max(0, seconds(d)) * 1e6) }
func wallMs() -> Double { Date().timeIntervalSince1970 * 1000 }
func log(_ s: String) { FileHandle.standardError.write(Data("stage-bench: \(s)\n".utf8)) }
func load() -> String {
    ((try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? "").split(separator: " ").prefix(3)
        .joined(separator: " ")
}

// MARK: Processes

/// A stage process, optionally under a perf command (`perf stat …` / `perf record …`); `pid` is the stage's.
struct Launched {
    let process: Process
    let pid: pid_t

    var isRunning: Bool { kill(pid, 0) == 0 }

    /// SIGTERM to the stage (a perf wrapper then writes its output and exits with it).
    func stop() {
        kill(pid, SIGTERM)
        process.waitUntilExit()
    }
}

func launch(_ binary: String, env extra: [String: String], wrapper: [String], logPath: String) throws -> Launched {
    let process = Process()
    if wrapper.isEmpty {
        process.executableURL = URL(fileURLWithPath: binary)
    } else {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = wrapper + ["--", binary]
    }
    process.environment = ProcessInfo.processInfo.environment.merging(extra) { $1 }
    process.standardOutput = FileHandle.nullDevice
    _ = FileManager.default.createFile(atPath: logPath, contents: nil)
    process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
    try process.run()
    guard !wrapper.isEmpty else { return Launched(process: process, pid: process.processIdentifier) }
    // The stage is perf's child (perf forks it at once).
    let children = "/proc/\(process.processIdentifier)/task/\(process.processIdentifier)/children"
    for _ in 0..<15_000 {
        if let text = try? String(contentsOfFile: children, encoding: .utf8),
            let pid = text.split(separator: " ").first.flatMap({ pid_t($0.trimmingCharacters(in: .whitespaces)) })
        {
            return Launched(process: process, pid: pid)
        }
        usleep(2000)
    }
    throw BenchError("\(wrapper.first ?? "") started no \(binary)")
}

/// `perf stat -x,` output → the sum of the counted events (the malloc-family uprobes).
func perfCount(_ path: String) -> Int? {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
    let counts = text.split(separator: "\n").filter { !$0.hasPrefix("#") }.compactMap {
        Int($0.split(separator: ",", omittingEmptySubsequences: false).first ?? "")
    }
    return counts.isEmpty ? nil : counts.reduce(0, +)
}

func metric(_ port: Int, _ name: String) async -> Double? {
    guard let (data, _) = try? await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)/metrics")!)
    else { return nil }
    for line in String(decoding: data, as: UTF8.self).split(separator: "\n") where line.hasPrefix(name + " ") {
        return Double(line.dropFirst(name.count + 1))
    }
    return nil
}

@discardableResult
func psql(_ url: String, _ sql: String) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["psql", url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-c", sql]
    let out = Pipe()
    process.standardOutput = out
    try process.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else { throw BenchError("psql failed: \(sql)") }
    return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
}

func databaseURL(_ base: String, _ db: String) -> String {
    var c = URLComponents(string: base)!
    c.path = "/" + db
    return c.string!
}

// MARK: Stages

struct Stage: Sendable {
    let name: String
    /// The Redis input stream; nil for ingest (Kafka).
    let input: String?
    let output: String
    var env: [String: String]
}

struct Drain: Codable {
    var entries: Int
    var outputs: Int
    var seconds: Double
    var entriesPerSecond: Double
    var method: String
}

struct Paced: Codable {
    var offeredPerSecond: Int
    var sent: Int
    var measured: Int
    var p50Ms: Double
    var p99Ms: Double
    var p999Ms: Double
    var maxMs: Double
}

struct StageResult: Codable {
    var stage: String
    var drain: Drain?
    var mallocsPerEntry: Double?
    var profile: String?
    var paced: Paced?
    var loadBefore: String
    var loadAfter: String
}

let options = Options()
guard !options.redisURL.isEmpty else {
    log("--redis redis://127.0.0.1:PORT (a private redis-server: DB 0 is flushed between runs) is required")
    exit(2)
}
let quiet = {
    var logger = Logger(label: "stage-bench")
    logger.logLevel = .warning
    return logger
}()
let redis = RedisClient(
    configuration: try RedisConfiguration(url: options.redisURL + "/0"), name: "bench", logger: quiet)
let saved = RedisClient(
    configuration: try RedisConfiguration(url: options.redisURL + "/1"), name: "saved", logger: quiet)
let reader = RedisClient(
    configuration: try RedisConfiguration(url: options.redisURL + "/0"), name: "read", logger: quiet)
let workDir = NSTemporaryDirectory() + "stage-bench-\(getpid())"
try FileManager.default.createDirectory(atPath: workDir, withIntermediateDirectories: true)
let mallocEvents = ["-e", "probe_libc:malloc", "-e", "probe_libc:calloc", "-e", "probe_libc:realloc"]
let metricsPort = Int.random(in: 20000...29999)
let common = [
    "REDIS_URL": options.redisURL + "/0", "LOG_LEVEL": "warning", "CONSUMER_NAME": "bench", "METRICS_PORT": "0"
]

/// DB 0 flushed, then `stream` copied back from DB 1 (where the previous stage's drain left it).
func restore(_ stream: String?) async throws {
    _ = try await redis.send("FLUSHDB")
    if let stream { _ = try await saved.send("COPY", stream, stream, "DB", "0") }
}

/// Waits until `stage`'s group has read and acknowledged all of its input; seconds from first read.
func drainTime(_ stage: Stage, _ service: Launched) async throws -> (seconds: Double, entries: Int) {
    let input = stage.input!
    let entries = try await redis.xlen(input)
    let last = try await redis.xrevrange(input, count: 1).first?.id ?? "0-0"
    let clock = ContinuousClock()
    var started: ContinuousClock.Instant?
    let deadline = clock.now + .seconds(900)
    while clock.now < deadline {
        guard service.isRunning else { throw BenchError("\(stage.name) exited; log in \(workDir)") }
        if let info = try await redis.xinfoGroups(input).first(where: { $0.name == stage.name }) {
            if started == nil, info.lastDeliveredID != "0-0" { started = clock.now }
            if info.lastDeliveredID == last, info.pending == 0, let started {
                return (seconds(clock.now - started), entries)
            }
        }
        try await Task.sleep(for: .milliseconds(2))
    }
    throw BenchError("\(stage.name) did not drain \(input) in 900 s")
}

/// ingest: first consumed (metric) → last te:ticks entry written (its id), once every message is consumed
/// and the stream has stopped growing.
func ingestDrainTime(_ service: Launched, port: Int) async throws -> (seconds: Double, entries: Int) {
    let total = options.kafkaMessages
    var startMs: Double?
    let deadline = ContinuousClock.now + .seconds(900)
    while ContinuousClock.now < deadline {
        guard service.isRunning else { throw BenchError("ingest exited; log in \(workDir)") }
        let consumed = await metric(port, "te_ingest_messages_consumed_total") ?? 0
        if startMs == nil, consumed > 0 { startMs = wallMs() }
        if consumed >= Double(total) { break }
        try await Task.sleep(for: .milliseconds(2))
    }
    guard let startMs else { throw BenchError("ingest consumed nothing") }
    var length = -1
    while true {
        try await Task.sleep(for: .milliseconds(300))
        let now = try await redis.xlen(StreamKey.ticks)
        if now == length { break }
        length = now
    }
    let lastID = try await redis.xrevrange(StreamKey.ticks, count: 1).first?.id ?? "0-0"
    let lastMs = Double(lastID.split(separator: "-").first ?? "0") ?? 0
    return ((lastMs - startMs) / 1000, total)
}

let ingestRuns = Atomic<Int>(0)
/// A new consumer group per run, so each run reads the topic from the start; `topic` nil = the preloaded one.
func ingestEnv(topic: String? = nil) -> [String: String] {
    let run = ingestRuns.add(1, ordering: .relaxed).newValue
    return common.merging(
        [
            "KAFKA_TOPIC": topic ?? options.kafkaTopic, "KAFKA_GROUP": "stage-bench-\(getpid())-\(run)",
            "METRICS_PORT": String(metricsPort)
        ]) { $1 }
}

/// One drain of `stage` (under `wrapper` when counting or profiling); the input restored first, only its
/// last `sample` entries when given (a uprobe per allocation makes a whole drain slow; the rate per entry
/// does not need all of it).
func drain(_ stage: Stage, wrapper: [String] = [], tag: String, sample: Int? = nil) async throws -> Drain {
    try await restore(stage.input)
    if let sample, let input = stage.input {
        _ = try await redis.send("XTRIM", input, "MAXLEN", String(sample))
    }
    let binary = "\(options.binDir)/\(stage.name)"
    let env = stage.input == nil ? ingestEnv() : stage.env
    let service = try launch(binary, env: env, wrapper: wrapper, logPath: "\(workDir)/\(stage.name)-\(tag).log")
    defer { service.stop() }
    let (secs, entries) =
        stage.input == nil
        ? try await ingestDrainTime(service, port: metricsPort) : try await drainTime(stage, service)
    let outputs = try await redis.xlen(stage.output)
    return Drain(
        entries: entries, outputs: outputs, seconds: secs, entriesPerSecond: Double(entries) / secs,
        method: stage.input == nil
            ? "first te_ingest_messages_consumed_total > 0 → id of the last te:ticks entry"
            : "group's first delivery → every entry delivered and acknowledged (XINFO GROUPS every 2 ms)")
}

/// Mallocs per input entry: a drain under perf stat minus an idle run (start-up, polling, shutdown).
func mallocsPerEntry(_ stage: Stage) async throws -> Double? {
    let busyFile = "\(workDir)/\(stage.name)-mallocs.csv"
    let counted = try await drain(
        stage, wrapper: ["perf", "stat", "-x,", "-o", busyFile] + mallocEvents, tag: "mallocs", sample: 20_000)
    try await restore(nil)
    let idleFile = "\(workDir)/\(stage.name)-idle.csv"
    // ingest idles on an empty topic (on the preloaded one it would drain it).
    let env = stage.input == nil ? ingestEnv(topic: options.kafkaIdleTopic) : stage.env
    let idle = try launch(
        "\(options.binDir)/\(stage.name)", env: env, wrapper: ["perf", "stat", "-x,", "-o", idleFile] + mallocEvents,
        logPath: "\(workDir)/\(stage.name)-idle.log")
    try await Task.sleep(for: .seconds(3))
    idle.stop()
    guard let busy = perfCount(busyFile), let base = perfCount(idleFile) else { return nil }
    return Double(busy - base) / Double(counted.entries)
}

// MARK: Paced

final class Schedule: Sendable {
    private let times = Mutex<[String: ContinuousClock.Instant]>([:])
    func put(_ k: String, _ t: ContinuousClock.Instant) { times.withLock { $0[k] = t } }
    func take(_ k: String) -> ContinuousClock.Instant? { times.withLock { $0.removeValue(forKey: k) } }
    func pending(_ limit: Int) -> [String] { times.withLock { Array($0.keys.prefix(limit)) } }
}

/// Entries (key, fields) added open loop at `rate`/s; every entry due is sent in one pipeline, so a slow
/// round trip does not thin the offered load. Entries scheduled in the first second are not recorded.
func pacedSend(_ entries: [(key: String, fields: [(String, String)])], to stream: String, schedule: Schedule)
    async throws
    -> ContinuousClock.Instant
{
    let clock = ContinuousClock()
    let start = clock.now + .milliseconds(100)
    let interval = Duration.seconds(1) / options.rate
    var i = 0
    while i < entries.count {
        let due = start + interval * i
        if due > clock.now { try await clock.sleep(until: due) }
        var commands: [RedisCommand] = []
        while i < entries.count, start + interval * i <= clock.now {
            let scheduled = start + interval * i
            if scheduled - start >= .seconds(1) { schedule.put(entries[i].key, scheduled) }
            commands.append(.xadd(stream, maxLen: nil, fields: entries[i].fields))
            i += 1
        }
        for reply in try await redis.pipeline(commands) { _ = try reply.throwingError() }
    }
    return clock.now
}

func histogram() -> Histogram<UInt64> {
    Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
}

func summary(_ h: Histogram<UInt64>, sent: Int) -> Paced {
    func ms(_ us: UInt64) -> Double { (Double(us) / 1000 * 1000).rounded() / 1000 }
    return Paced(
        offeredPerSecond: options.rate, sent: sent, measured: Int(h.totalCount), p50Ms: ms(h.valueAtPercentile(50)),
        p99Ms: ms(h.valueAtPercentile(99)), p999Ms: ms(h.valueAtPercentile(99.9)), maxMs: ms(h.max))
}

/// Paced latency of a Redis → Redis stage: `outputKey` names the input entry an output entry answers.
func pacedRedis(
    _ stage: Stage, _ entries: [(key: String, fields: [(String, String)])],
    outputKey: @escaping @Sendable (StreamEntry) -> String?
) async throws -> Paced {
    try await restore(nil)
    let service = try launch(
        "\(options.binDir)/\(stage.name)", env: stage.env, wrapper: [], logPath: "\(workDir)/\(stage.name)-paced.log")
    defer { service.stop() }
    try await Task.sleep(for: .seconds(2))
    let schedule = Schedule()
    let output = stage.output
    let recorded = entries.count - min(entries.count, options.rate)
    let readerTask = Task { () throws -> Histogram<UInt64> in
        var h = histogram()
        var cursor = "0-0"
        let clock = ContinuousClock()
        var quietSince = clock.now
        while Int(h.totalCount) < recorded, clock.now - quietSince < .seconds(10) {
            let reads = try await reader.xread(streams: [(output, cursor)], count: 1000, block: .milliseconds(200))
            let now = clock.now
            for entry in reads.first?.entries ?? [] {
                cursor = entry.id
                quietSince = now
                if let k = outputKey(entry), let t0 = schedule.take(k) { _ = h.record(micros(now - t0)) }
            }
        }
        return h
    }
    _ = try await pacedSend(entries, to: stage.input!, schedule: schedule)
    return summary(try await readerTask.value, sent: entries.count)
}

// MARK: Inputs for the paced runs

let baseTs: Int64 = 1_723_161_254_000_000_000
let pacedCount = options.rate * options.pacedSeconds

/// Snapshots each of which fires exactly one signal (rapid_rise far past its threshold, nothing else).
func firingSnapshots() throws -> [(key: String, fields: [(String, String)])] {
    try (0..<pacedCount).map { i in
        let s = FeatureSnapshot(
            symbol: "BTCUSDT", tsNs: baseTs + Int64(i) * 5_000_000, windowMs: 5000, nQuotes: 900, nTrades: 300,
            tradeVolume: 100, lastPrice: 60000, warm: true,
            features: FeatureVector(
                spreadBps: 5, imbalance: 0, depthImbalance: 0, ofiNorm: 0, realizedVolBps: 1, midReturnBps: 30,
                tickRate: 10, micropriceOffsetBps: 0))
        return (key: String(s.tsNs), fields: try StreamFieldEncoder.encode(s))
    }
}

/// Signals 6 s apart in event time (past the 5 s cooldown): each opens an opportunity emitted at once.
func openingSignals() throws -> [(key: String, fields: [(String, String)])] {
    try (0..<pacedCount).map { i in
        let tsNs = baseTs + Int64(i) * 6_000_000_000
        let s = Signal(
            id: Signal.makeID(symbol: "BTCUSDT", strategy: "bench", tsNs: tsNs), symbol: "BTCUSDT",
            strategy: "bench", direction: .buy, confidence: 0.9, tsNs: tsNs,
            features: FeatureVector(
                spreadBps: 0, imbalance: 0, depthImbalance: 0, ofiNorm: 0, realizedVolBps: 0, midReturnBps: 0,
                tickRate: 0, micropriceOffsetBps: 0))
        return (key: s.id, fields: try StreamFieldEncoder.encode(s))
    }
}

let symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XBT/USD"]
func auditRecord(_ i: Int) -> AuditRecord {
    let f = Double(i % 1000) / 1000
    let id = UUID().uuidString.lowercased()
    return AuditRecord(
        decisionId: id, requestId: id, tsNs: Int64(Date().timeIntervalSince1970 * 1e9), symbol: symbols[i % 4],
        decision: i % 3 == 0 ? .noTrade : .trade, score: f, source: .model, modelName: "trade_eligibility",
        modelVersion: "1", modelHash: "sha256:0123456789abcdef",
        features: FeatureVector(
            spreadBps: 1.5 + f, imbalance: f - 0.5, depthImbalance: 0.1, ofiNorm: -2.25 * f, realizedVolBps: 3.75,
            midReturnBps: 0.5 - f, tickRate: 12, micropriceOffsetBps: 0.01),
        featureAgeMs: 4.5, latencyUs: Int64(300 + i % 700), canary: nil, reason: nil)
}

// MARK: audit-writer

/// A fresh scratch database per run (the writer migrates it at start).
func scratchDatabase() throws -> String {
    let name = "te_bench_stages_\(UInt32.random(in: 0...UInt32.max))"
    try psql(options.postgresURL, "CREATE DATABASE \(name)")
    return name
}

func dropDatabase(_ name: String) { _ = try? psql(options.postgresURL, "DROP DATABASE \(name) WITH (FORCE)") }

/// The audit-writer's drain (as `drain`, in its own database), then `\copy` of the same rows into an identical table.
func auditDrain(_ stage: Stage, wrapper: [String] = [], tag: String, copyReference: Bool) async throws -> (
    Drain, copyRowsPerSecond: Double?
) {
    let db = try scratchDatabase()
    defer { dropDatabase(db) }
    var s = stage
    s.env["POSTGRES_URL"] = databaseURL(options.postgresURL, db)
    let result = try await drain(s, wrapper: wrapper, tag: tag)
    let url = databaseURL(options.postgresURL, db)
    let stored = Int(try psql(url, "SELECT count(*) FROM decisions")) ?? 0
    var d = result
    d.outputs = stored
    guard copyReference else { return (d, nil) }
    let file = "\(workDir)/decisions.copy"
    try psql(url, "\\copy decisions TO '\(file)'")
    try psql(url, "CREATE TABLE decisions_raw (LIKE decisions INCLUDING ALL)")
    let clock = ContinuousClock()
    let t0 = clock.now
    try psql(url, "\\copy decisions_raw FROM '\(file)'")
    let copySeconds = seconds(clock.now - t0)
    let copied = Int(try psql(url, "SELECT count(*) FROM decisions_raw")) ?? 0
    return (d, Double(copied) / copySeconds)
}

func auditPaced(_ stage: Stage) async throws -> Paced {
    let db = try scratchDatabase()
    defer { dropDatabase(db) }
    try await restore(nil)
    var env = stage.env
    env["POSTGRES_URL"] = databaseURL(options.postgresURL, db)
    let service = try launch(
        "\(options.binDir)/\(stage.name)", env: env, wrapper: [], logPath: "\(workDir)/\(stage.name)-paced.log")
    defer { service.stop() }
    try await Task.sleep(for: .seconds(3))
    let entries = try (0..<pacedCount).map { i in
        let r = auditRecord(i)
        return (key: r.decisionId, fields: try StreamFieldEncoder.encode(r))
    }
    let schedule = Schedule()
    let recorded = entries.count - min(entries.count, options.rate)
    let pg = PostgresConnection(configuration: try PostgresConfiguration(url: env["POSTGRES_URL"]!), logger: quiet)
    let readerTask = Task { () throws -> Histogram<UInt64> in
        var h = histogram()
        let clock = ContinuousClock()
        var quietSince = clock.now
        while Int(h.totalCount) < recorded, clock.now - quietSince < .seconds(10) {
            let pending = schedule.pending(2000)
            if pending.isEmpty {
                try await Task.sleep(for: .microseconds(200))
                continue
            }
            let rows = try await pg.query(
                "SELECT decision_id FROM decisions WHERE decision_id = ANY($1::uuid[])",
                ["{" + pending.joined(separator: ",") + "}"])
            let now = clock.now
            for row in rows.rows {
                if let id = row[0], let t0 = schedule.take(id) {
                    _ = h.record(micros(now - t0))
                    quietSince = now
                }
            }
        }
        return h
    }
    _ = try await pacedSend(entries, to: stage.input!, schedule: schedule)
    let h = try await readerTask.value
    await pg.close()
    return summary(h, sent: entries.count)
}

// MARK: Run

let stageEnv: [String: [String: String]] = [
    "feature-pipeline": [:],
    "strategy-engine": ["STRATEGIES_FILE": options.strategiesFile],
    // Recorded signals are from 2024: the age limit would drop every one of them.
    "opportunity-aggregator": ["MAX_SIGNAL_AGE_MS": "86400000"],
    "audit-writer": ["DLQ_STREAM": "te:dlq"]
]
let stages = [
    Stage(name: "ingest", input: nil, output: StreamKey.ticks, env: [:]),
    Stage(name: "feature-pipeline", input: StreamKey.ticks, output: StreamKey.features, env: common),
    Stage(
        name: "strategy-engine", input: StreamKey.features, output: StreamKey.signals,
        env: common.merging(stageEnv["strategy-engine"]!) { $1 }),
    Stage(
        name: "opportunity-aggregator", input: StreamKey.signals, output: StreamKey.opportunities,
        env: common.merging(stageEnv["opportunity-aggregator"]!) { $1 }),
    Stage(name: "audit-writer", input: StreamKey.audit, output: "decisions", env: common)
]

var results: [StageResult] = []
var copyRate: Double?
for (index, stage) in stages.enumerated() where options.stages.contains(stage.name) {
    let before = load()
    log("\(stage.name): drain (load \(before))")
    var result = StageResult(stage: stage.name, loadBefore: before, loadAfter: "")
    if stage.name == "audit-writer" {
        try await restore(nil)
        var commands: [RedisCommand] = []
        for i in 0..<options.auditRows {
            commands.append(.xadd(StreamKey.audit, maxLen: nil, fields: try StreamFieldEncoder.encode(auditRecord(i))))
            if commands.count == 1000 || i == options.auditRows - 1 {
                for reply in try await redis.pipeline(commands) { _ = try reply.throwingError() }
                commands.removeAll(keepingCapacity: true)
            }
        }
        _ = try await saved.send("DEL", StreamKey.audit)
        _ = try await redis.send("COPY", StreamKey.audit, StreamKey.audit, "DB", "1")
        let (d, copy) = try await auditDrain(stage, tag: "drain", copyReference: true)
        result.drain = d
        copyRate = copy
    } else {
        result.drain = try await drain(stage, tag: "drain")
    }
    // The next stage's input is this drain's output.
    if index + 1 < stages.count, let next = stages[index + 1].input {
        _ = try await saved.send("DEL", next)
        _ = try await redis.send("COPY", next, next, "DB", "1")
    }
    if options.allocations {
        log("\(stage.name): allocations")
        if stage.name == "audit-writer" {
            let db = try scratchDatabase()
            defer { dropDatabase(db) }
            var s = stage
            s.env["POSTGRES_URL"] = databaseURL(options.postgresURL, db)
            result.mallocsPerEntry = try await mallocsPerEntry(s)
        } else {
            result.mallocsPerEntry = try await mallocsPerEntry(stage)
        }
    }
    if let dir = options.profileDir {
        log("\(stage.name): perf record")
        let file = "\(dir)/\(stage.name).perf.data"
        let wrapper = ["perf", "record", "-F", "499", "-g", "-q", "-o", file]
        if stage.name == "audit-writer" {
            _ = try await auditDrain(stage, wrapper: wrapper, tag: "profile", copyReference: false)
        } else {
            _ = try await drain(stage, wrapper: wrapper, tag: "profile")
        }
        result.profile = file
    }
    log("\(stage.name): paced \(options.rate)/s")
    switch stage.name {
    case "feature-pipeline":
        // The recording's own ticks; a quote's snapshot carries its ts_ns.
        let ticks = try await saved.xrange(StreamKey.ticks, count: pacedCount)
        let entries = ticks.map {
            (key: "\($0.field("symbol") ?? "")|\($0.field("ts_ns") ?? "")", fields: Array($0.fields))
        }
        result.paced = try await pacedRedis(stage, entries) { "\($0.field("symbol") ?? "")|\($0.field("ts_ns") ?? "")" }
    case "strategy-engine":
        result.paced = try await pacedRedis(stage, try firingSnapshots()) { $0.field("ts_ns") }
    case "opportunity-aggregator":
        result.paced = try await pacedRedis(stage, try openingSignals()) { entry in
            guard entry.field("emit_reason") == "first", let ids = entry.field("signal_ids") else { return nil }
            return (try? JSONDecoder().decode([String].self, from: Data(ids.utf8)))?.first
        }
    case "audit-writer":
        result.paced = try await auditPaced(stage)
    default:
        break  // ingest: run-stages.sh measures it with ingest-bench (Kafka produce → te:ticks)
    }
    result.loadAfter = load()
    log(
        "\(stage.name): \(result.drain.map { "\(Int($0.entriesPerSecond)) entries/s" } ?? "-"), "
            + "mallocs/entry \(result.mallocsPerEntry.map { String(format: "%.1f", $0) } ?? "-"), "
            + "paced p99 \(result.paced.map { "\($0.p99Ms) ms" } ?? "-")")
    results.append(result)
}

struct Report: Codable {
    var stages: [StageResult]
    var copyRowsPerSecond: Double?
    var pacedSeconds: Int
    var auditRows: Int
    var redisVersion: String
}
let info = try await redis.send("INFO", "server").string ?? ""
let version = info.split(separator: "\r\n").first { $0.hasPrefix("redis_version:") }?.dropFirst(14) ?? "?"
_ = try await redis.send("FLUSHDB")
_ = try await saved.send("FLUSHDB")
redis.close()
saved.close()
reader.close()
let encoder = JSONEncoder()
encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
encoder.keyEncodingStrategy = .convertToSnakeCase
try encoder.encode(
    Report(
        stages: results, copyRowsPerSecond: copyRate, pacedSeconds: options.pacedSeconds, auditRows: options.auditRows,
        redisVersion: String(version))
).write(to: URL(fileURLWithPath: options.output))
try? FileManager.default.removeItem(atPath: workDir)
