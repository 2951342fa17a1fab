import ArgumentParser
import FeatureEngine
import Foundation
import MarketData
import TECore
import TEModels

/// `te features FILE…`: the feature engine offline over recordings, for training and backtests.
/// Ticks are normalised by MarketData, the code `ingest` runs, and fed to the same `FeatureEngine` as
/// `feature-pipeline`, so for the same input the rows equal the service's `te:features` entries bit
/// for bit. Files are read in the order given, as one tick sequence.
struct FeaturesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "features",
        abstract: "Compute the feature snapshots of recordings offline, as CSV (one row per quote).",
        discussion: """
            Columns: \(FeatureCSV.header)
            With --label, two more: return_bps and eligible (0/1), the outcome label of DESIGN.md "Model quality"
            for a decision at the row's ts_ns; both empty when the recording ends before the row's horizon.
            Doubles are printed in their shortest round-trip form: they parse back to the same bits.
            Reads the formats of `te replay` (Binance `<ts_ns> <json>` gzip, cryptofeed zstd, JSON lines of Tick).
            """)

    @Argument(help: "Recordings to read, in order.")
    var files: [String]

    @Option(
        name: .customLong("window-ms"), help: "The window W in milliseconds (default: FEATURE_WINDOW_MS, else 5000).")
    var windowMs: Int?

    @Option(name: [.short, .customLong("output")], help: "Write the CSV here instead of standard output.")
    var output: String?

    @Option(help: "Only this symbol.")
    var symbol: String?

    @Flag(name: .customLong("warm-only"), help: "Only rows whose window holds a full W of history.")
    var warmOnly = false

    @Flag(name: .customLong("no-header"), help: "Omit the header line.")
    var noHeader = false

    @Flag(help: "Add the outcome label columns return_bps and eligible.")
    var label = false

    @Option(name: .customLong("horizon-ms"), help: "The label's horizon H (default: OUTCOME_HORIZON_MS, else 5000).")
    var horizonMs: Int?

    @Option(name: .customLong("cost-bps"), help: "The label's cost in bps (default: OUTCOME_COST_BPS, else 4).")
    var costBps: Double?

    func validate() throws {
        if let windowMs, windowMs <= 0 { throw ValidationError("--window-ms must be positive") }
        if files.isEmpty { throw ValidationError("give at least one recording") }
        if let horizonMs, horizonMs <= 0 { throw ValidationError("--horizon-ms must be positive") }
        if let costBps, !(costBps >= 0 && costBps.isFinite) { throw ValidationError("--cost-bps must be ≥ 0") }
        if !label && (horizonMs != nil || costBps != nil) {
            throw ValidationError("--horizon-ms and --cost-bps need --label")
        }
    }

    func run() async throws {
        let window = try windowMs ?? Self.environmentWindowMs()
        var engine = FeatureEngine(windowMs: window)
        let sink = try CSVSink(path: output)
        if !noHeader { sink.write(label ? FeatureCSV.labelledHeader : FeatureCSV.header) }
        var labeler: OfflineLabeler<String>? =
            label ? OfflineLabeler(rule: try Self.labelRule(horizonMs: horizonMs, costBps: costBps)) : nil
        func writeLabelled(_ rows: [(String, LabelResult)]) {
            for (row, result) in rows { sink.write(row + FeatureCSV.labelCells(result)) }
        }
        var stats = (ticks: 0, rows: 0, dropped: 0, rejected: 0)
        var source = OfflineTicks()
        for file in files {
            try source.forEach(in: file) { tick in
                if let symbol, tick.symbol != symbol { return }
                stats.ticks += 1
                switch engine.apply(tick) {
                case .snapshot(let snapshot):
                    let keep = !(warmOnly && !snapshot.warm)
                    if labeler != nil, let quote = LabelQuote(tick) {
                        // Every accepted quote moves its symbol's clock, also when its row is not written.
                        labeler?.observe(symbol: tick.symbol, quote: quote)
                        if keep { labeler?.enqueue(FeatureCSV.row(snapshot), symbol: tick.symbol, t: snapshot.tsNs) }
                        writeLabelled(labeler?.ready() ?? [])
                    } else if keep {
                        sink.write(FeatureCSV.row(snapshot))
                    }
                    if keep { stats.rows += 1 }
                case .tradeApplied: break
                case .droppedOutOfOrder: stats.dropped += 1
                case .rejected: stats.rejected += 1
                }
            }
        }
        writeLabelled(labeler?.finish() ?? [])
        sink.close()
        FileHandle.standardError.write(
            Data(
                "te features: \(source.summary); \(stats.ticks) ticks, \(stats.rows) rows, \(stats.dropped) out of order dropped, \(stats.rejected) rejected by the engine\n"
                    .utf8))
    }

    /// H and the cost from the options, else `OUTCOME_HORIZON_MS` and `OUTCOME_COST_BPS` (as the tracker reads them).
    static func labelRule(horizonMs: Int?, costBps: Double?) throws -> OutcomeRule {
        let env = Env().values
        let horizon =
            try horizonMs ?? env["OUTCOME_HORIZON_MS"].map { text in
                guard let value = Int(text), value > 0 else {
                    throw ValidationError("OUTCOME_HORIZON_MS must be a positive integer, got \"\(text)\"")
                }
                return value
            } ?? 5000
        let cost =
            try costBps ?? env["OUTCOME_COST_BPS"].map { text in
                guard let value = Double(text), value >= 0, value.isFinite else {
                    throw ValidationError("OUTCOME_COST_BPS must be a number ≥ 0, got \"\(text)\"")
                }
                return value
            } ?? 4
        return OutcomeRule(horizonMs: horizon, costBps: cost)
    }

    static func environmentWindowMs() throws -> Int {
        guard let text = Env.optional("FEATURE_WINDOW_MS") else { return 5000 }
        guard let value = Int(text), value > 0 else {
            throw ValidationError("FEATURE_WINDOW_MS must be a positive integer, got \"\(text)\"")
        }
        return value
    }
}

/// Buffered line output to a file or standard output.
final class CSVSink {
    private let handle: FileHandle
    private let ownsHandle: Bool
    private var buffer: [UInt8] = []

    init(path: String?) throws {
        if let path {
            guard FileManager.default.createFile(atPath: path, contents: nil) else {
                throw ValidationError("cannot create \(path)")
            }
            handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
            ownsHandle = true
        } else {
            handle = FileHandle.standardOutput
            ownsHandle = false
        }
        buffer.reserveCapacity(1 << 16)
    }

    func write(_ line: String) {
        buffer.append(contentsOf: line.utf8)
        buffer.append(UInt8(ascii: "\n"))
        if buffer.count >= 1 << 16 { flush() }
    }

    func flush() {
        guard !buffer.isEmpty else { return }
        handle.write(Data(buffer))
        buffer.removeAll(keepingCapacity: true)
    }

    func close() {
        flush()
        if ownsHandle { try? handle.close() }
    }
}
