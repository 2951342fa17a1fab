import FeatureEngine
import Foundation
import Histogram
import MallocInterposerSwift
import MarketData
import TEModels

// feature-bench engine FILE [--passes N] [--json OUT]
//   Per-quote cost of FeatureEngine over a recording's ticks (normalised by MarketData, as ingest
//   does, so quotes carry the book's depth): ns/tick over whole passes, per-quote latency p50/p99
//   (HdrHistogram), allocations/quote (malloc-interposer: run with
//   LD_PRELOAD=libMallocInterposerSwift.so; a calibration says whether counting worked).
// feature-bench service FILE --redis URL --pipeline PATH [--json OUT]
//   Throughput of the feature-pipeline executable: the ticks are written to te:ticks of the given
//   (empty, private) Redis first, then the service drains them; quotes/s from the first to the last
//   te:features entry (their ids carry Redis' clock).

let arguments = CommandLine.arguments
guard arguments.count >= 3 else {
    FileHandle.standardError.write(Data("usage: feature-bench engine|ticks FILE [--passes N] [--json OUT]\n".utf8))
    exit(2)
}
func option(_ name: String) -> String? {
    guard let i = arguments.firstIndex(of: name), i + 1 < arguments.count else { return nil }
    return arguments[i + 1]
}
let ticks = try normalizedTicks(arguments[2])

switch arguments[1] {
case "service":
    guard let url = option("--redis"), let pipeline = option("--pipeline") else {
        FileHandle.standardError.write(Data("service needs --redis URL and --pipeline PATH\n".utf8))
        exit(2)
    }
    let result = try await ServiceThroughput.run(ticks: ticks, redisURL: url, pipeline: pipeline, input: arguments[2])
    let json = try JSONSerialization.data(withJSONObject: result, options: [.prettyPrinted, .sortedKeys])
    if let path = option("--json") { try json.write(to: URL(fileURLWithPath: path)) }
    FileHandle.standardOutput.write(json)
    FileHandle.standardOutput.write(Data("\n".utf8))
case "engine":
    let passes = Int(option("--passes") ?? "20") ?? 20
    let quotes = ticks.count(where: { $0.kind == .quote })
    // Warm-up: page in code, grow the deques.
    var engine = FeatureEngine(windowMs: 5000)
    var sink = 0.0
    for tick in ticks { if case .snapshot(let s) = engine.apply(tick) { sink += s.features.spreadBps } }

    // Throughput: whole passes, fresh engine each.
    var passNs: [Double] = []
    for _ in 0..<passes {
        var engine = FeatureEngine(windowMs: 5000)
        let start = ContinuousClock.now
        for tick in ticks { if case .snapshot(let s) = engine.apply(tick) { sink += s.features.ofiNorm } }
        let elapsed = ContinuousClock.now - start
        passNs.append(Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9)
    }
    passNs.sort()
    let medianPassNs = passNs[passNs.count / 2]
    let nsPerTick = medianPassNs / Double(ticks.count)

    // Per-quote latency (clock reads included, ≈20–40 ns).
    var histogram = Histogram<UInt64>(highestTrackableValue: 10_000_000, numberOfSignificantValueDigits: .three)
    do {
        var engine = FeatureEngine(windowMs: 5000)
        let clock = ContinuousClock()
        for tick in ticks {
            let start = clock.now
            let outcome = engine.apply(tick)
            let elapsed = clock.now - start
            if case .snapshot(let s) = outcome {
                sink += s.features.tickRate
                histogram.record(UInt64(elapsed.components.attoseconds / 1_000_000_000))
            }
        }
    }

    // Allocations: the steady state (second pass over an engine whose deques have grown).
    MallocInterposerSwift.initialize()
    var allocEngine = FeatureEngine(windowMs: 5000)
    for tick in ticks { _ = allocEngine.apply(tick) }
    var shifted = ticks
    let offset = (ticks.last!.tsNs - ticks.first!.tsNs) + 1
    for i in shifted.indices { shifted[i].tsNs += offset }
    MallocInterposerSwift.reset()
    MallocInterposerSwift.hook()
    for tick in shifted { if case .snapshot(let s) = allocEngine.apply(tick) { sink += s.features.imbalance } }
    MallocInterposerSwift.unhook()
    let stats = MallocInterposerSwift.getStatistics()
    let mallocs = stats.mallocCount
    // Calibration: 1000 deliberate allocations must be counted, or the count above means nothing.
    MallocInterposerSwift.reset()
    MallocInterposerSwift.hook()
    var boxes: [[Int]] = []
    boxes.reserveCapacity(1000)
    for i in 0..<1000 { boxes.append([i, i + 1]) }
    MallocInterposerSwift.unhook()
    let calibration = MallocInterposerSwift.getStatistics().mallocCount
    sink += Double(boxes.count)
    let interposed = calibration >= 1000

    let result: [String: Any] = [
        "benchmark": "feature-engine",
        "input": (arguments[2] as NSString).lastPathComponent,
        "ticks": ticks.count,
        "quotes": quotes,
        "passes": passes,
        "ns_per_tick_median_pass": nsPerTick,
        "ticks_per_second": 1e9 / nsPerTick,
        "quote_latency_ns": [
            "p50": histogram.valueAtPercentile(50), "p99": histogram.valueAtPercentile(99),
            "p999": histogram.valueAtPercentile(99.9), "max": histogram.max
        ],
        "allocations_per_quote": interposed ? Double(mallocs) / Double(quotes) : NSNull(),
        "allocations_measured": interposed,
        "mallocs_steady_state_pass": interposed ? mallocs : NSNull(),
        "malloc_calibration_count_for_1000": calibration
    ]
    let json = try JSONSerialization.data(withJSONObject: result, options: [.prettyPrinted, .sortedKeys])
    if let path = option("--json") { try json.write(to: URL(fileURLWithPath: path)) }
    FileHandle.standardOutput.write(json)
    FileHandle.standardOutput.write(Data("\n".utf8))
    if sink.isNaN { FileHandle.standardError.write(Data("nan\n".utf8)) }  // keeps the loops from being optimised away
default:
    FileHandle.standardError.write(Data("unknown mode \(arguments[1])\n".utf8))
    exit(2)
}

/// A recording's ticks as ingest produces them (MarketData reader + normaliser).
func normalizedTicks(_ path: String) throws -> [Tick] {
    let reader = try RecordingReader(path: path)
    var normalizer = MarketNormalizer()
    var out: [Tick] = []
    while let message = try reader.next() {
        if case .ticks(let ticks) = normalizer.normalize(
            payload: message.payload, receiveTsNs: message.tsNs, key: message.key)
        {
            out += ticks
        }
    }
    return out
}
