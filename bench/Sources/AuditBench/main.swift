// audit-bench: rows/s into PostgreSQL through `audit-writer` (te:audit-style stream → batches →
// COPY + INSERT … ON CONFLICT → COMMIT → XACK), next to a raw `psql \copy` of the same rows into an
// identical table on the same server in the same run. Also: per-row latency from XADD to the
// inserting transaction (decisions.inserted_at − ts_ns), p50/p99 with HdrHistogram.
//
// Usage: audit-bench --writer PATH --rows N --batch B --output bench/results/audit
// Needs REDIS_URL and POSTGRES_URL (an admin URL: a scratch database is created and dropped).
import Foundation
import Histogram
import Logging
import TEModels
import TERedis

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

func argument(_ name: String, default value: String? = nil) -> String {
    let args = CommandLine.arguments
    if let i = args.firstIndex(of: name), i + 1 < args.count { return args[i + 1] }
    guard let value else { fatalError("missing \(name)") }
    return value
}

let writerPath = argument("--writer")
let rows = Int(argument("--rows", default: "100000"))!
let batch = Int(argument("--batch", default: "500"))!
let output = argument("--output", default: "bench/results/audit")
let env = ProcessInfo.processInfo.environment
guard let redisURL = env["REDIS_URL"], let adminURL = env["POSTGRES_URL"] else {
    fatalError("REDIS_URL and POSTGRES_URL must be set (source .dev/env)")
}

@discardableResult
func psql(_ url: String, _ args: [String]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["psql", url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At"] + args
    let out = Pipe()
    process.standardOutput = out
    try process.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else { fatalError("psql \(args) failed") }
    return String(decoding: data, as: UTF8.self)
}

func databaseURL(_ base: String, _ db: String) -> String {
    var c = URLComponents(string: base)!
    c.path = "/" + db
    return c.string!
}

func metric(_ port: Int, _ name: String) async -> Double? {
    guard let (data, _) = try? await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)/metrics")!)
    else {
        return nil
    }
    for line in String(decoding: data, as: UTF8.self).split(separator: "\n") where line.hasPrefix(name + " ") {
        return Double(line.dropFirst(name.count + 1))
    }
    return nil
}

// COPY text format (same escaping as TEPostgres.CopyTextEncoder).
func copyField(_ value: String?) -> String {
    guard let value else { return "\\N" }
    var out = ""
    for ch in value.unicodeScalars {
        switch ch {
        case "\\": out += "\\\\"
        case "\t": out += "\\t"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        default: out.unicodeScalars.append(ch)
        }
    }
    return out
}

func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }

// MARK: Setup

let scratch = "te_bench_audit_\(UInt32.random(in: 0...UInt32.max))"
try psql(adminURL, ["-c", "CREATE DATABASE \(scratch)"])
let dbURL = databaseURL(adminURL, scratch)
let stream = "bench:audit:\(UInt32.random(in: 0...UInt32.max))"
let metricsPort = Int.random(in: 20000...29999)
var logger = Logger(label: "audit-bench")
logger.logLevel = .warning
let redis = RedisClient(configuration: try RedisConfiguration(url: redisURL), name: "audit-bench", logger: logger)

// MARK: Records (deterministic content, fresh ids)

let symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XBT/USD"]
func record(_ i: Int, tsNs: Int64) -> AuditRecord {
    let f = Double(i % 1000) / 1000
    let id = UUID().uuidString.lowercased()
    return AuditRecord(
        decisionId: id, requestId: id, tsNs: tsNs, symbol: symbols[i % symbols.count],
        decision: i % 3 == 0 ? .noTrade : .trade, score: f, source: i % 20 == 0 ? .rules : .model,
        modelName: "trade_eligibility", modelVersion: i % 10 == 0 ? "2" : "1", modelHash: "sha256:0123456789abcdef",
        features: FeatureVector(
            spreadBps: 1.5 + f, imbalance: f - 0.5, depthImbalance: 0.1, ofiNorm: -2.25 * f, realizedVolBps: 3.75,
            midReturnBps: 0.5 - f, tickRate: 12, micropriceOffsetBps: 0.01),
        featureAgeMs: 4.5, latencyUs: Int64(300 + i % 700),
        canary: i % 10 == 0 ? CanaryResult(version: "2", score: f, mode: "shadow") : nil, reason: nil)
}

// MARK: audit-writer: XADD everything first, then start the writer; time until every row is inserted.

let clock = ContinuousClock()
let publishStart = clock.now
var sent: [AuditRecord] = []
sent.reserveCapacity(rows)
var commands: [RedisCommand] = []
for i in 0..<rows {
    let r = record(i, tsNs: Int64(Date().timeIntervalSince1970 * 1e9))
    sent.append(r)
    commands.append(.xadd(stream, maxLen: nil, fields: try StreamFieldEncoder.encode(r)))
    if commands.count == 1000 {
        _ = try await redis.pipeline(commands)
        commands.removeAll(keepingCapacity: true)
    }
}
if !commands.isEmpty { _ = try await redis.pipeline(commands) }
let published = clock.now - publishStart
// The writer starts on a full stream: its whole time window is spent writing (plus startup and
// migrations, counted against it).
let start = clock.now
let writer = Process()
writer.executableURL = URL(fileURLWithPath: writerPath)
var writerEnv = env
writerEnv["POSTGRES_URL"] = dbURL
writerEnv["AUDIT_STREAM"] = stream
writerEnv["DLQ_STREAM"] = stream + ":dlq"
writerEnv["METRICS_PORT"] = String(metricsPort)
writerEnv["AUDIT_BATCH_SIZE"] = String(batch)
writerEnv["CONSUMER_NAME"] = "bench"
writerEnv["LOG_LEVEL"] = "warning"
writer.environment = writerEnv
try writer.run()

while (await metric(metricsPort, "te_audit_rows_inserted_total") ?? 0) < Double(rows) {
    try await Task.sleep(for: .milliseconds(10))
}
let writerElapsed = clock.now - start
writer.terminate()
writer.waitUntilExit()

let stored = Int(
    try psql(dbURL, ["-c", "SELECT count(*) FROM decisions"]).trimmingCharacters(in: .whitespacesAndNewlines))!
var latency = Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
for line in try psql(
    dbURL, ["-c", "SELECT (extract(epoch FROM inserted_at) * 1000000)::bigint - ts_ns / 1000 FROM decisions"]
)
.split(separator: "\n") {
    if let us = Int64(line) { _ = latency.record(UInt64(max(0, us))) }
}

// MARK: raw COPY of the same rows with psql into an identical table

let copyFile = NSTemporaryDirectory() + "\(scratch).copy"
var text = ""
text.reserveCapacity(rows * 400)
let encoder = JSONEncoder()
encoder.outputFormatting = [.sortedKeys]
for r in sent {
    let features = r.features.map { String(decoding: try! encoder.encode($0), as: UTF8.self) }
    let fields: [String?] = [
        r.decisionId, r.requestId, String(r.tsNs), r.symbol, r.decision.rawValue, r.score.map { "\($0)" },
        r.source.rawValue,
        r.modelName, r.modelVersion, r.modelHash, features, r.featureAgeMs.map { "\($0)" }, String(r.latencyUs),
        r.canary?.version, r.canary?.score.map { "\($0)" }, r.canary?.mode, r.reason
    ]
    text += fields.map(copyField).joined(separator: "\t") + "\n"
}
try text.write(toFile: copyFile, atomically: true, encoding: .utf8)
try psql(dbURL, ["-c", "CREATE TABLE decisions_raw (LIKE decisions INCLUDING ALL)"])
// decided_at is derived in the writer's INSERT; the raw table gets it from a default so the COPY
// carries exactly the writer's columns.
try psql(dbURL, ["-c", "ALTER TABLE decisions_raw ALTER COLUMN decided_at SET DEFAULT now()"])
let copyStart = clock.now
try psql(
    dbURL,
    [
        "-c",
        "\\copy decisions_raw (decision_id, request_id, ts_ns, symbol, decision, score, source, model_name, model_version, model_hash, features, feature_age_ms, latency_us, canary_version, canary_score, canary_mode, reason) FROM '\(copyFile)'"
    ])
let copyElapsed = clock.now - copyStart
let rawStored = Int(
    try psql(dbURL, ["-c", "SELECT count(*) FROM decisions_raw"]).trimmingCharacters(in: .whitespacesAndNewlines))!
try? FileManager.default.removeItem(atPath: copyFile)

_ = try? await redis.del([stream, stream + ":dlq"])
redis.close()
try psql(adminURL, ["-c", "DROP DATABASE \(scratch) WITH (FORCE)"])

// MARK: Results

let writerRate = Double(rows) / seconds(writerElapsed)
let copyRate = Double(rows) / seconds(copyElapsed)
struct Result: Codable {
    var rows: Int
    var batchSize: Int
    var auditWriter: Side
    var rawCopy: Side
    var ratioWriterToCopy: Double
    var latencyXaddToInsertMicros: Percentiles
    struct Side: Codable {
        var seconds: Double
        var rowsPerSecond: Double
        var rowsStored: Int
    }
    struct Percentiles: Codable {
        var p50: UInt64
        var p99: UInt64
        var max: UInt64
    }
}
let result = Result(
    rows: rows, batchSize: batch,
    auditWriter: .init(seconds: seconds(writerElapsed), rowsPerSecond: writerRate, rowsStored: stored),
    rawCopy: .init(seconds: seconds(copyElapsed), rowsPerSecond: copyRate, rowsStored: rawStored),
    ratioWriterToCopy: writerRate / copyRate,
    latencyXaddToInsertMicros: .init(
        p50: latency.valueAtPercentile(50), p99: latency.valueAtPercentile(99), max: latency.max))
let jsonEncoder = JSONEncoder()
jsonEncoder.outputFormatting = [.prettyPrinted, .sortedKeys]
try jsonEncoder.encode(result).write(to: URL(fileURLWithPath: output + ".json"))
let md = """
    # audit-writer throughput

    \(rows) AuditRecords, AUDIT_BATCH_SIZE \(batch), same PostgreSQL server, same run
    (all records published to the stream first, in \(String(format: "%.2f", seconds(published))) s; the writer's time runs from
    its process start — startup and migrations included — to the last row inserted).

    | path | seconds | rows/s | rows stored |
    | --- | ---: | ---: | ---: |
    | audit-writer (Redis stream → COPY staging + INSERT … ON CONFLICT → COMMIT → XACK) | \(String(format: "%.2f", seconds(writerElapsed))) | \(Int(writerRate)) | \(stored) |
    | raw `psql \\copy` into an identical table | \(String(format: "%.2f", seconds(copyElapsed))) | \(Int(copyRate)) | \(rawStored) |

    Ratio audit-writer / raw COPY: **\(String(format: "%.2f", writerRate / copyRate))**.

    Latency from XADD to the inserting transaction's start (inserted_at − ts_ns). Every row waited in the
    stream until the writer started, so this measures the backlog drain, not steady-state latency: p50 \(latency.valueAtPercentile(50)) µs,
    p99 \(latency.valueAtPercentile(99)) µs, max \(latency.max) µs.
    """
try (md + "\n").write(toFile: output + ".md", atomically: true, encoding: .utf8)
print(md)
