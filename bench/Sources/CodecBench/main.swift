import FeatureEngine
import Foundation
import MallocInterposerSwift
import MarketData
import TECore
import TEModels
import TERedis

// codec-bench FILE [--passes N] [--json OUT]
//   Per-entry cost of each stream codec against the Codable encoding it replaced, on real data: the
//   recording's ticks (normalised as ingest does), FeatureEngine's snapshots of them, and signals,
//   opportunities and audit records made from those snapshots. Encode = a message to its XADD command;
//   decode = an entry's fields (as StreamEntry holds them) to the message. ns/entry is the median of whole
//   passes; allocations/entry come from malloc-interposer (run with LD_PRELOAD=libMallocInterposerSwift.so;
//   a calibration says whether counting worked).

let arguments = CommandLine.arguments
guard arguments.count >= 2 else {
    FileHandle.standardError.write(Data("usage: codec-bench FILE [--passes N] [--json OUT]\n".utf8))
    exit(2)
}
func option(_ name: String) -> String? {
    guard let i = arguments.firstIndex(of: name), i + 1 < arguments.count else { return nil }
    return arguments[i + 1]
}
let passes = Int(option("--passes") ?? "") ?? 9

// MARK: Corpus

let reader = try RecordingReader(path: arguments[1])
var normalizer = MarketNormalizer()
var ticks: [Tick] = []
while let message = try reader.next() {
    if case .ticks(let out) = normalizer.normalize(
        payload: message.payload, receiveTsNs: message.tsNs, key: message.key)
    {
        ticks += out
    }
}
var engine = FeatureEngine(windowMs: 5000)
var snapshots: [FeatureSnapshot] = []
for tick in ticks { if case .snapshot(let s) = engine.apply(tick) { snapshots.append(s) } }
let signals = snapshots.enumerated().map { i, s in
    Signal(
        id: Signal.makeID(symbol: s.symbol, strategy: "ofi_breakout", tsNs: s.tsNs), symbol: s.symbol,
        strategy: "ofi_breakout", direction: i % 2 == 0 ? .buy : .sell, confidence: 0.5 + Double(i % 500) / 1000,
        tsNs: s.tsNs, features: s.features)
}
let opportunities = signals.enumerated().map { i, s in
    Opportunity(
        id: "\(s.symbol):\(s.direction.rawValue):\(s.tsNs)", symbol: s.symbol, direction: s.direction,
        confidence: s.confidence, strategies: ["ofi_breakout", "rapid_rise"], signalIds: [s.id, s.id + "b"],
        firstTsNs: s.tsNs, lastTsNs: s.tsNs + 1_000_000, count: 2, emitReason: ["first", "upgrade", "close"][i % 3],
        conflict: i % 7 == 0 ? true : nil)
}
let audits = snapshots.enumerated().map { i, s in
    AuditRecord(
        decisionId: UUID().uuidString.lowercased(), requestId: "req-\(i)", tsNs: s.tsNs + 1_000, symbol: s.symbol,
        decision: i % 3 == 0 ? .trade : .noTrade, score: Double(i % 1000) / 1000, source: .model,
        modelName: "trade_eligibility", modelVersion: "3", modelHash: "9f2c61a0b4", features: s.features,
        featureAgeMs: Double(i % 50) / 8, latencyUs: Int64(300 + i % 700),
        canary: i % 10 == 0 ? CanaryResult(version: "4", score: 0.61, mode: "shadow") : nil, reason: nil,
        featureSnapshotId: "\(s.tsNs / 1_000_000)-0", featureTsNs: s.tsNs,
        traceId: i % 100 == 0 ? "4bf92f3577b34da6a3ce929d0e0e4736" : nil, client: "desk-a")
}

// MARK: Measurement

nonisolated(unsafe) var sink = 0

func nowNs() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

/// Median ns per entry over `passes` whole passes, and mallocs per entry of one more pass.
func measure(_ count: Int, _ body: () -> Void) -> (ns: Double, allocations: Double?) {
    body()  // warm-up
    var perEntry: [Double] = []
    for _ in 0..<passes {
        let t0 = nowNs()
        body()
        perEntry.append(Double(nowNs() - t0) / Double(count))
    }
    perEntry.sort()
    MallocInterposerSwift.reset()
    MallocInterposerSwift.hook()
    body()
    MallocInterposerSwift.unhook()
    let mallocs = MallocInterposerSwift.getStatistics().mallocCount
    return (perEntry[perEntry.count / 2], interposed ? Double(mallocs) / Double(count) : nil)
}

MallocInterposerSwift.initialize()
// Calibration: 1000 deliberate allocations must be counted, or the counts mean nothing.
MallocInterposerSwift.reset()
MallocInterposerSwift.hook()
var boxes: [[Int]] = []
boxes.reserveCapacity(1000)
for i in 0..<1000 { boxes.append([i, i + 1]) }
MallocInterposerSwift.unhook()
let calibration = MallocInterposerSwift.getStatistics().mallocCount
sink &+= boxes.count
let interposed = calibration >= 1000

struct Row {
    var message: String
    var entries: Int
    var bytes: Double
    var encodeCodable: (ns: Double, allocations: Double?)
    var encodeCodec: (ns: Double, allocations: Double?)
    var decodeCodable: (ns: Double, allocations: Double?)
    var decodeCodec: (ns: Double, allocations: Double?)
}

func bench<M: StreamFieldEncodable & Equatable>(_ name: String, _ messages: [M]) throws -> Row {
    let stream = "te:bench"
    // Both encoders must write the same text, or the comparison is void.
    for m in messages.prefix(1000) {
        let a = try StreamFieldEncoder.encodeCodable(m)
        let b = try m.streamFields().pairs
        guard a.map(\.0) == b.map(\.0), a.map(\.1) == b.map(\.1) else {
            fatalError("\(name): codec text differs from Codable")
        }
    }
    let encodeCodable = measure(messages.count) {
        for m in messages {
            let fields = (try? StreamFieldEncoder.encodeCodable(m)) ?? []
            sink &+= RedisCommand.xadd(stream, maxLen: 1_000_000, fields: fields).argumentCount
        }
    }
    let encodeCodec = measure(messages.count) {
        for m in messages {
            guard let fields = try? m.streamFields() else { continue }
            var c = RedisCommand(name: "XADD", capacity: 40 + fields.bytes.count, arguments: 6 + fields.lengths.count)
            c.append(stream)
            c.append("MAXLEN")
            c.append("~")
            c.append(1_000_000)
            c.append("*")
            c.append(arguments: fields.bytes, lengths: fields.lengths)
            sink &+= c.argumentCount
        }
    }
    let entries = try messages.map { try $0.streamFields().pairs }
    let bytes =
        Double(entries.reduce(0) { $0 + $1.reduce(0) { $0 + $1.0.utf8.count + $1.1.utf8.count } })
        / Double(entries.count)
    let decodeCodable = measure(entries.count) {
        for fields in entries { if (try? StreamFieldDecoder.decodeCodable(M.self, from: fields)) != nil { sink &+= 1 } }
    }
    // The codec reads the entry's bytes as the Redis client holds them (`StreamEntry.fields`).
    let stored = entries.map { StreamFields($0) }
    let decodeCodec = measure(stored.count) {
        for fields in stored { if (try? StreamFieldDecoder.decode(M.self, from: fields)) != nil { sink &+= 1 } }
    }
    return Row(
        message: name, entries: messages.count, bytes: bytes, encodeCodable: encodeCodable, encodeCodec: encodeCodec,
        decodeCodable: decodeCodable, decodeCodec: decodeCodec)
}

let rows = [
    try bench("Tick", ticks), try bench("FeatureSnapshot", snapshots), try bench("Signal", signals),
    try bench("Opportunity", opportunities), try bench("AuditRecord", audits)
]

func cell(_ m: (ns: Double, allocations: Double?)) -> [String: Any] {
    [
        "ns_per_entry": (m.ns * 10).rounded() / 10,
        "allocations_per_entry": m.allocations.map { ($0 * 100).rounded() / 100 } ?? NSNull()
    ]
}
let result: [String: Any] = [
    "benchmark": "stream-codecs",
    "input": (arguments[1] as NSString).lastPathComponent,
    "passes": passes,
    "allocations_measured": interposed,
    "malloc_calibration_count_for_1000": calibration,
    "rows": rows.map { r -> [String: Any] in
        [
            "message": r.message, "entries": r.entries, "field_bytes_per_entry": (r.bytes * 10).rounded() / 10,
            "encode_codable": cell(r.encodeCodable), "encode_codec": cell(r.encodeCodec),
            "decode_codable": cell(r.decodeCodable), "decode_codec": cell(r.decodeCodec)
        ]
    }
]
let json = try JSONSerialization.data(withJSONObject: result, options: [.prettyPrinted, .sortedKeys])
if let path = option("--json") { try json.write(to: URL(fileURLWithPath: path)) }
FileHandle.standardOutput.write(json)
print("")
FileHandle.standardError.write(Data("sink \(sink)\n".utf8))
