// Closed-loop load on Triton through TritonClient, measured like perf_analyzer does it: C callers, each sending
// one request (1 row, like perf_analyzer's batch size 1) and waiting for its answer before sending the next.
// Usage: triton-bench --url HOST:PORT [--model M] [--version V] [--concurrency 1,8,32] [--seconds 10] [--warmup 2]
//                     [--connections N] [--json FILE]
// Prints one JSON object (per concurrency: throughput, p50/p99/mean in µs, errors).
import Foundation
import Histogram
import TritonClient

struct Options {
    var url = ProcessInfo.processInfo.environment["TRITON_URL"] ?? "127.0.0.1:18001"
    var model = "trade_eligibility"
    var version = "1"
    var concurrency = [1, 8, 32]
    var seconds = 10.0
    var warmup = 2.0
    var connections = 1
    var json: String?

    init(_ args: [String]) {
        var i = 1
        func next() -> String {
            i += 1
            guard i < args.count else { fatalError("missing value for \(args[i - 1])") }
            return args[i]
        }
        while i < args.count {
            switch args[i] {
            case "--url": url = next()
            case "--model": model = next()
            case "--version": version = next()
            case "--concurrency": concurrency = next().split(separator: ",").compactMap { Int($0) }
            case "--seconds": seconds = Double(next()) ?? seconds
            case "--warmup": warmup = Double(next()) ?? warmup
            case "--connections": connections = Int(next()) ?? connections
            case "--json": json = next()
            default: fatalError("unknown argument \(args[i])")
            }
            i += 1
        }
    }
}

struct Result: Codable {
    let concurrency: Int
    let requests: UInt64
    let errors: Int
    let seconds: Double
    let throughputPerSecond: Double
    let p50Microseconds: UInt64
    let p90Microseconds: UInt64
    let p99Microseconds: UInt64
    let meanMicroseconds: Double
}

/// Feature rows a quote stream could produce (spread, imbalances, OFI, vol, return, rate, microprice offset).
let rows: [[Float]] = (0..<64).map { i in
    let x = Float(i) / 64
    return [1 + x, x - 0.5, x - 0.4, 3 * x - 1, 2 * x, x - 0.5, 10 + 20 * x, 0.1 * x]
}

func run(client: TritonClient, options: Options, concurrency: Int, seconds: Double) async -> Result {
    let start = ContinuousClock.now
    let end = start + .milliseconds(Int(seconds * 1000))
    let histograms = await withTaskGroup(of: (Histogram<UInt64>, Int).self) { group in
        for worker in 0..<concurrency {
            group.addTask {
                var histogram = Histogram<UInt64>(
                    highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
                var errors = 0
                var n = worker
                while ContinuousClock.now < end {
                    let row = rows[n % rows.count]
                    n += 1
                    let t0 = ContinuousClock.now
                    do {
                        _ = try await client.infer(
                            model: options.model, version: options.version, rows: row, rowCount: 1,
                            deadline: t0 + .seconds(5))
                        let elapsed = ContinuousClock.now - t0
                        let (s, atto) = elapsed.components
                        _ = histogram.record(UInt64(s) * 1_000_000 + UInt64(atto / 1_000_000_000_000))
                    } catch {
                        errors += 1
                    }
                }
                return (histogram, errors)
            }
        }
        var all = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
        var errors = 0
        for await (h, e) in group {
            all.add(h)
            errors += e
        }
        return (all, errors)
    }
    let elapsed = ContinuousClock.now - start
    let secondsElapsed = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    let h = histograms.0
    return Result(
        concurrency: concurrency, requests: h.totalCount, errors: histograms.1, seconds: secondsElapsed,
        throughputPerSecond: Double(h.totalCount) / secondsElapsed, p50Microseconds: h.valueAtPercentile(50),
        p90Microseconds: h.valueAtPercentile(90), p99Microseconds: h.valueAtPercentile(99), meanMicroseconds: h.mean)
}

let options = Options(CommandLine.arguments)
let client = try TritonClient(url: options.url, connections: options.connections)
guard try await client.modelReady(model: options.model, version: options.version) else {
    FileHandle.standardError.write(Data("triton-bench: \(options.model) v\(options.version) not ready\n".utf8))
    exit(1)
}
var results: [Result] = []
for c in options.concurrency {
    _ = await run(client: client, options: options, concurrency: c, seconds: options.warmup)
    let r = await run(client: client, options: options, concurrency: c, seconds: options.seconds)
    FileHandle.standardError.write(
        Data(
            "triton-bench: c=\(c) \(String(format: "%.1f", r.throughputPerSecond))/s p50=\(r.p50Microseconds)µs p99=\(r.p99Microseconds)µs errors=\(r.errors)\n"
                .utf8))
    results.append(r)
}
let encoder = JSONEncoder()
encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
encoder.keyEncodingStrategy = .convertToSnakeCase
let data = try encoder.encode(results)
if let path = options.json {
    try data.write(to: URL(fileURLWithPath: path))
} else {
    print(String(decoding: data, as: UTF8.self))
}
client.close()
