// redis-bench: the Redis layer (TERedis over hiredis) next to redis-benchmark on the same server,
// in the same run. XADD in pipelines of `--batch`, then XREADGROUP+XACK of those entries; each
// pipeline round trip is timed (HdrHistogram, µs). redis-benchmark runs the same XADD with the
// same pipeline depth on one connection, so the ratio compares like with like.
import Foundation
import Histogram
import TERedis

struct Options {
    var url = ProcessInfo.processInfo.environment["REDIS_URL"] ?? ""
    var messages = 200_000
    var batch = 100
    var output = "bench/results/redis"

    init() {
        var args = CommandLine.arguments.dropFirst()
        while let arg = args.popFirst() {
            switch arg {
            case "--url": url = args.popFirst() ?? url
            case "--messages": messages = Int(args.popFirst() ?? "") ?? messages
            case "--batch": batch = Int(args.popFirst() ?? "") ?? batch
            case "--output": output = args.popFirst() ?? output
            default:
                FileHandle.standardError.write(
                    Data(
                        "usage: redis-bench [--url redis://…] [--messages N] [--batch N] [--output PATH-without-extension]\n"
                            .utf8))
                exit(2)
            }
        }
    }
}

struct Phase: Codable {
    var name: String
    var messages: Int
    var seconds: Double
    var messagesPerSecond: Double
    var roundTrips: Int
    var p50Micros: UInt64
    var p99Micros: UInt64
    var maxMicros: UInt64

    enum CodingKeys: String, CodingKey {
        case name, messages, seconds
        case messagesPerSecond = "messages_per_second"
        case roundTrips = "round_trips"
        case p50Micros = "p50_us"
        case p99Micros = "p99_us"
        case maxMicros = "max_us"
    }
}

struct RedisBenchmarkResult: Codable {
    var command: String
    var requestsPerSecond: Double
    var p50Millis: Double?
    var p99Millis: Double?

    enum CodingKeys: String, CodingKey {
        case command
        case requestsPerSecond = "requests_per_second"
        case p50Millis = "p50_ms"
        case p99Millis = "p99_ms"
    }
}

struct Report: Codable {
    var name = "redis"
    var timestamp: String
    var machine: String
    var server: String
    var messages: Int
    var batch: Int
    var tereDis: [Phase]
    var redisBenchmark: RedisBenchmarkResult?
    /// TERedis XADD msgs/s ÷ redis-benchmark XADD requests/s.
    var xaddRatio: Double?

    enum CodingKeys: String, CodingKey {
        case name, timestamp, machine, server, messages, batch
        case tereDis = "teredis"
        case redisBenchmark = "redis_benchmark"
        case xaddRatio = "xadd_ratio"
    }
}

func micros(_ d: Duration) -> UInt64 {
    let (s, atto) = d.components
    return UInt64(s) * 1_000_000 + UInt64(atto / 1_000_000_000_000)
}

func seconds(_ d: Duration) -> Double {
    let (s, atto) = d.components
    return Double(s) + Double(atto) / 1e18
}

func phase(_ name: String, messages: Int, elapsed: Duration, histogram: Histogram<UInt64>) -> Phase {
    let s = seconds(elapsed)
    return Phase(
        name: name, messages: messages, seconds: s, messagesPerSecond: Double(messages) / s,
        roundTrips: Int(histogram.totalCount), p50Micros: histogram.valueAtPercentile(50),
        p99Micros: histogram.valueAtPercentile(99), maxMicros: histogram.max)
}

/// Runs redis-benchmark's XADD with the same pipeline depth on one connection (`--csv`).
func runRedisBenchmark(_ configuration: RedisConfiguration, stream: String, messages: Int, batch: Int)
    -> RedisBenchmarkResult?
{
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    var args = [
        "redis-benchmark", "-h", configuration.host, "-p", String(configuration.port), "--dbnum",
        String(configuration.database), "-c", "1", "-n", String(messages), "-P", String(batch), "--csv"
    ]
    if let password = configuration.password { args += ["-a", password] }
    args += ["XADD", stream, "*", "f", "v"]
    process.arguments = args
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = FileHandle.nullDevice
    do { try process.run() } catch {
        FileHandle.standardError.write(Data("redis-benchmark not runnable: \(error)\n".utf8))
        return nil
    }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    let lines = String(decoding: data, as: UTF8.self).split(whereSeparator: { $0 == "\n" || $0 == "\r" })
    guard let row = lines.last(where: { $0.hasPrefix("\"XADD") }) else { return nil }
    let cells = row.split(separator: ",").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
    guard cells.count >= 2, let rps = Double(cells[1]) else { return nil }
    return RedisBenchmarkResult(
        command: "redis-benchmark -c 1 -n \(messages) -P \(batch) XADD <stream> * f v", requestsPerSecond: rps,
        p50Millis: cells.count > 4 ? Double(cells[4]) : nil, p99Millis: cells.count > 6 ? Double(cells[6]) : nil)
}

let options = Options()
guard !options.url.isEmpty else {
    FileHandle.standardError.write(Data("REDIS_URL is required (source .dev/env)\n".utf8))
    exit(1)
}
let configuration = try RedisConfiguration(url: options.url)
let redis = RedisClient(configuration: configuration, name: "bench")
let pid = ProcessInfo.processInfo.processIdentifier
let stream = "bench:teredis:\(pid)"
let rbStream = "bench:redis-benchmark:\(pid)"
let group = "bench"
let clock = ContinuousClock()
try await redis.del([stream, rbStream])

// Warm-up: connection, allocator, code paths.
for _ in 0..<20 {
    _ = try await redis.pipeline(
        (0..<options.batch).map { _ in RedisCommand.xadd(stream, maxLen: nil, fields: [("f", "v")]) })
}
try await redis.del([stream])
try await redis.xgroupCreate(stream: stream, group: group, startID: "0")

// XADD, pipelined.
var addHistogram = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
let batches = options.messages / options.batch
let addStart = clock.now
for _ in 0..<batches {
    var commands: [RedisCommand] = []
    commands.reserveCapacity(options.batch)
    for _ in 0..<options.batch { commands.append(.xadd(stream, maxLen: nil, fields: [("f", "v")])) }
    let t0 = clock.now
    let replies = try await redis.pipeline(commands)
    _ = addHistogram.record(micros(clock.now - t0))
    precondition(replies.count == options.batch)
}
let addElapsed = clock.now - addStart
let added = batches * options.batch

// XREADGROUP + XACK: one batch read, then its ack, per step.
var readHistogram = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
var consumed = 0
let readStart = clock.now
while consumed < added {
    let t0 = clock.now
    let read = try await redis.xreadgroup(group: group, consumer: "c", streams: [(stream, ">")], count: options.batch)
    let ids = read.first?.entries.map(\.id) ?? []
    if ids.isEmpty { break }
    try await redis.xack(stream, group: group, ids: ids)
    _ = readHistogram.record(micros(clock.now - t0))
    consumed += ids.count
}
let readElapsed = clock.now - readStart
let leftPending = try await redis.xpending(stream, group: group).count
precondition(leftPending == 0, "\(leftPending) entries left pending")

let reference = runRedisBenchmark(configuration, stream: rbStream, messages: added, batch: options.batch)
try await redis.del([stream, rbStream])
let info = try await redis.send("INFO", "server").string ?? ""
let version =
    info.split(separator: "\r\n").first { $0.hasPrefix("redis_version:") }?.dropFirst("redis_version:".count) ?? "?"
redis.close()

let phases = [
    phase("xadd_pipelined", messages: added, elapsed: addElapsed, histogram: addHistogram),
    phase("xreadgroup_xack", messages: consumed, elapsed: readElapsed, histogram: readHistogram)
]
let load =
    (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(
        separator: " ") ?? "?"
let report = Report(
    timestamp: ISO8601DateFormatter().string(from: Date()),
    machine: "\(ProcessInfo.processInfo.activeProcessorCount) cores, load average \(load)",
    server: "redis \(version) at \(configuration.host):\(configuration.port)", messages: added, batch: options.batch,
    tereDis: phases, redisBenchmark: reference,
    xaddRatio: reference.map { phases[0].messagesPerSecond / $0.requestsPerSecond })

let encoder = JSONEncoder()
encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
try encoder.encode(report).write(to: URL(fileURLWithPath: options.output + ".json"))

func fmt(_ x: Double) -> String { String(format: "%.0f", x) }
var md = "## redis: TERedis (hiredis) vs redis-benchmark\n\n"
md += "\(report.server), \(report.machine); \(added) messages, pipelines of \(options.batch), one connection.\n\n"
md +=
    "| measure | msgs/s | round trips | p50 per round trip | p99 per round trip |\n| --- | ---: | ---: | ---: | ---: |\n"
for p in phases {
    md +=
        "| TERedis \(p.name) | \(fmt(p.messagesPerSecond)) | \(p.roundTrips) | \(p.p50Micros) µs | \(p.p99Micros) µs |\n"
}
if let r = reference {
    md +=
        "| redis-benchmark XADD (-c 1 -P \(options.batch)) | \(fmt(r.requestsPerSecond)) | | \(r.p50Millis.map { "\($0) ms" } ?? "?") (per request) | \(r.p99Millis.map { "\($0) ms" } ?? "?") (per request) |\n"
    md += "\nXADD ratio TERedis / redis-benchmark: **\(String(format: "%.2f", report.xaddRatio ?? 0))**\n"
} else {
    md += "\nredis-benchmark did not run: no ratio.\n"
}
md +=
    "\nXREADGROUP+XACK is two round trips per batch (read, then ack); redis-benchmark has no equivalent, so it has no ratio.\n"
try md.write(toFile: options.output + ".md", atomically: true, encoding: .utf8)
print(md)
