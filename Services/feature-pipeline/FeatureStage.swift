import FeatureEngine
import Foundation
import Logging
import Metrics
import ServiceKit
import TEModels
import TERedis
import Tracing

/// Settings of `feature-pipeline`, from the environment.
struct FeatureSettings: Sendable {
    /// W. `FEATURE_WINDOW_MS`; default 5000.
    var windowMs: Int = 5000
    /// TTL of `te:online:{SYMBOL}`. `FEATURE_TTL_SEC`; default 300.
    var onlineTTLSeconds: Int = 300
    /// `MAXLEN ~` of `te:features`. `STREAM_MAXLEN`; default 1000000.
    var streamMaxLen: Int = 1_000_000
    /// Upper bound on the `te:ticks` entries read back to rebuild the windows after a restart.
    /// `FEATURE_REBUILD_MAX_ENTRIES`; default 2000000.
    var rebuildMaxEntries: Int = 2_000_000

    static func fromEnvironment(_ env: Env) throws(ConfigurationError) -> FeatureSettings {
        let d = FeatureSettings()
        return FeatureSettings(
            windowMs: try env.int("FEATURE_WINDOW_MS", default: d.windowMs, range: 1...86_400_000),
            onlineTTLSeconds: try env.int("FEATURE_TTL_SEC", default: d.onlineTTLSeconds, range: 1...31_536_000),
            streamMaxLen: try env.int("STREAM_MAXLEN", default: d.streamMaxLen, range: 1...Int.max),
            rebuildMaxEntries: try env.int(
                "FEATURE_REBUILD_MAX_ENTRIES", default: d.rebuildMaxEntries, range: 1...Int.max))
    }
}

/// `te:ticks` → one `FeatureSnapshot` per quote on `te:features`, and the symbol's latest snapshot in
/// the hash `te:online:{SYMBOL}` (with `written_at_ns`, expiring after `FEATURE_TTL_SEC`, written only
/// if not older than what it holds).
///
/// Restarts and redeliveries: the engine's state is that of the entries before `position`. A batch
/// that does not continue from there (the first batch after a start, pending entries re-read after a
/// failed write, entries claimed from a dead consumer) first rebuilds the windows from `te:ticks`
/// itself, as of the batch's first entry: the history before it is read back (newest first) until
/// every symbol's window is covered (`HistoryCoverage`) and replayed through a fresh engine. So a
/// redelivered tick is never counted twice, its snapshot is recomputed with the same numbers (the
/// window sums are exact, so the result does not depend on where the replay started), and a window
/// that the stream no longer covers is published with `warm = false` until it has filled.
///
/// Features need every tick of a symbol in order: each shard (`te:ticks:{k}` → `te:features:{k}`) is
/// handled by one replica at a time, the holder of its lease (`ShardedStreamWorker`); a replica that
/// gains a shard starts a fresh stage, which rebuilds the windows from `te:ticks:{k}` as above.
struct FeatureStage: StreamStage {
    typealias Input = Tick

    let stage = "feature-pipeline"
    let inputStream: String
    let outputStream: String
    let settings: FeatureSettings
    var logger: Logger

    private var engine: FeatureEngine
    /// The id of the last entry the engine applied; nil when the state must be rebuilt.
    private var position: StreamID?
    /// The newest entry ever applied: a batch after `position` but with `position` below this
    /// continues from a rewound state and rebuilds too.
    private var highWater: StreamID?
    private var redis: RedisClient?
    private var metrics: FeatureMetrics

    /// Shard `shard` of `shards` (`te:ticks` → `te:features` when unsharded).
    init(
        settings: FeatureSettings, shard: Int = 0, of shards: Int = 1, logger: Logger
    ) {
        inputStream = StreamKey.sharded(StreamKey.ticks, shard: shard, of: shards)
        outputStream = StreamKey.sharded(StreamKey.features, shard: shard, of: shards)
        self.settings = settings
        self.logger = logger
        self.engine = FeatureEngine(windowMs: settings.windowMs)
        self.metrics = FeatureMetrics()
    }

    mutating func prepare(redis: RedisClient) async throws {
        // Called at start and after a failed batch: whatever the engine holds may be ahead of what
        // was acknowledged. The next batch rebuilds as of its first entry.
        self.redis = redis
        position = nil
    }

    mutating func handle(_ batch: [StreamDelivery<Tick>]) async throws -> StageOutput {
        guard let first = batch.first, let firstID = StreamID(first.id) else { return .none }
        if let position, let highWater, position < firstID, position == highWater {
            // The batch continues where the engine is.
        } else {
            try await rebuild(before: first.id)
        }

        var output = StageOutput()
        var latest: [String: FeatureSnapshot] = [:]
        let clock = ContinuousClock()
        for delivery in batch {
            let tick: Tick
            do {
                tick = try delivery.message.validated()
            } catch {
                output.deadLetter(id: delivery.id, reason: "invalid tick: \(error)")
                continue
            }
            // A sampled tick's trace continues on its snapshot (see `StreamTrace`).
            let trace = StreamTrace.stage("feature-pipeline tick", parent: delivery.traceParent)
            defer { trace.span?.end() }
            trace.span?.attributes["te.symbol"] = tick.symbol
            trace.span?.attributes["te.stream_id"] = delivery.id
            let start = clock.now
            let outcome = engine.apply(tick)
            let elapsed = clock.now - start
            switch outcome {
            case .snapshot(let snapshot):
                metrics.computed(symbol: tick.symbol, elapsed: elapsed)
                try output.add(snapshot, to: outputStream, maxLen: settings.streamMaxLen, tp: trace.tp)
                latest[snapshot.symbol] = snapshot
            case .tradeApplied:
                break
            case .droppedOutOfOrder:
                metrics.outOfOrder(symbol: tick.symbol)
            case .rejected(let field):
                output.deadLetter(id: delivery.id, reason: "invalid tick: field '\(field)'")
            }
        }
        let writtenAt = Int64(Date().timeIntervalSince1970 * 1e9)
        for snapshot in latest.values {
            var fields = try snapshot.streamFields()
            fields.field("written_at_ns", int: writtenAt)
            // Outside the shard's step (another slot on a cluster), never replacing a newer snapshot.
            output.outside.append(
                ShardLeases.latest(
                    StreamKey.online(snapshot.symbol), tsNs: snapshot.tsNs, ttlSeconds: settings.onlineTTLSeconds,
                    fields: fields))
            metrics.window(symbol: snapshot.symbol, quotes: snapshot.nQuotes)
        }
        if let lastID = StreamID(batch[batch.count - 1].id) {
            position = lastID
            highWater = max(highWater ?? lastID, lastID)
        }
        return output
    }

    /// Replaces the engine with one rebuilt from the `te:ticks` entries before `id`.
    private mutating func rebuild(before id: String) async throws {
        guard let redis else { throw FeatureStageError.notPrepared }
        let windowNs = engine.windowNs
        var coverage = HistoryCoverage(windowNs: windowNs)
        var history: [Tick] = []
        var scanned = 0
        var end = "(" + id
        scan: while !coverage.isSufficient, scanned < settings.rebuildMaxEntries {
            let page = try await redis.xrevrange(
                inputStream, end: end, start: "-", count: min(2_000, settings.rebuildMaxEntries - scanned))
            guard let last = page.last else { break }
            end = "(" + last.id
            for entry in page {
                scanned += 1
                // What the live path would skip (undecodable → dead letter, invalid) is skipped here too.
                guard let tick = try? StreamFieldDecoder.decode(Tick.self, from: entry.fields).validated() else {
                    continue
                }
                coverage.observe(tick)
                history.append(tick)
                if coverage.isSufficient { break scan }
            }
        }
        var rebuilt = FeatureEngine(windowNs: windowNs)
        for tick in history.reversed() { _ = rebuilt.apply(tick) }
        engine = rebuilt
        position = nil
        highWater = nil
        logger.info(
            "feature windows rebuilt from the stream",
            metadata: [
                "before": "\(id)", "entries_read": "\(scanned)", "ticks_replayed": "\(history.count)",
                "symbols": "\(coverage.symbols.count)", "complete": "\(coverage.isSufficient)",
                "uncovered_symbols": "\(coverage.uncoveredSymbols.joined(separator: ","))"
            ])
    }
}

enum FeatureStageError: Error, CustomStringConvertible {
    case notPrepared
    var description: String { "the stage was not prepared with a Redis client" }
}

/// DESIGN/COMMON metric names of feature-pipeline, with per-symbol handles cached (creating one
/// looks it up in the registry).
struct FeatureMetrics: Sendable {
    private var quotes: [String: Metrics.Counter] = [:]
    private var outOfOrders: [String: Metrics.Counter] = [:]
    private var windows: [String: Metrics.Gauge] = [:]
    /// Buckets from `MetricHelp.durationBuckets` (per-quote compute is around a microsecond).
    private let compute = Metrics.Timer(label: "te_features_compute_seconds")

    mutating func computed(symbol: String, elapsed: Duration) {
        compute.record(duration: elapsed)
        if let c = quotes[symbol] {
            c.increment()
        } else {
            let c = Metrics.Counter(label: "te_features_quotes_total", dimensions: [("symbol", symbol)])
            quotes[symbol] = c
            c.increment()
            // A symbol's out-of-order series exists (at 0) from its first quote, so rate() has a series.
            if outOfOrders[symbol] == nil {
                outOfOrders[symbol] = Metrics.Counter(
                    label: "te_features_out_of_order_total", dimensions: [("symbol", symbol)])
            }
        }
    }

    mutating func outOfOrder(symbol: String) {
        if let c = outOfOrders[symbol] {
            c.increment()
        } else {
            let c = Metrics.Counter(label: "te_features_out_of_order_total", dimensions: [("symbol", symbol)])
            outOfOrders[symbol] = c
            c.increment()
        }
    }

    mutating func window(symbol: String, quotes: Int) {
        if let g = windows[symbol] {
            g.record(quotes)
        } else {
            let g = Metrics.Gauge(label: "te_features_window_quotes", dimensions: [("symbol", symbol)])
            windows[symbol] = g
            g.record(quotes)
        }
    }
}
