import Metrics
import ServiceKit
import Strategies
import TEModels
import TERedis
import Tracing

/// Settings of `strategy-engine`, from the environment.
struct StrategyEngineSettings: Sendable {
    /// The strategy file. `STRATEGIES_FILE`; default `deploy/strategies/default.json` (relative to the
    /// working directory).
    var strategiesFile = "deploy/strategies/default.json"
    /// Input stream (its shards with `STREAM_SHARDS` > 1). `FEATURES_STREAM`; default `te:features`.
    var inputStream = StreamKey.features
    /// Output stream (its shards with `STREAM_SHARDS` > 1). `SIGNALS_STREAM`; default `te:signals`.
    var outputStream = StreamKey.signals
    /// `MAXLEN ~` of the output stream. `STREAM_MAXLEN`; default 1000000.
    var streamMaxLen = 1_000_000

    static func fromEnvironment(_ env: Env) throws(ConfigurationError) -> StrategyEngineSettings {
        let d = StrategyEngineSettings()
        return StrategyEngineSettings(
            strategiesFile: try env.string("STRATEGIES_FILE", default: d.strategiesFile),
            inputStream: try env.string("FEATURES_STREAM", default: d.inputStream),
            outputStream: try env.string("SIGNALS_STREAM", default: d.outputStream),
            streamMaxLen: try env.int("STREAM_MAXLEN", default: d.streamMaxLen, range: 1...Int.max))
    }
}

/// Evaluates every configured strategy on each snapshot and appends the signals to `te:signals`, in
/// snapshot order and, per snapshot, in file order. Stateless: a redelivered snapshot gives the same
/// signals with the same ids (`symbol:strategy:ts_ns`), which the aggregator recognises. Each shard
/// (`te:features:{k}` → `te:signals:{k}`) is handled by the one replica holding its lease
/// (`ShardedStreamWorker`), so a symbol's signals stay in its snapshots' order.
struct StrategyStage: StreamStage {
    typealias Input = FeatureSnapshot

    let stage = "strategy-engine"
    let inputStream: String
    let outputStream: String
    let streamMaxLen: Int
    let strategies: StrategySet
    /// te_signals_total{strategy,direction}, one pair per strategy in file order.
    let signalCounters: [(buy: Counter, sell: Counter)]

    /// Shard `shard` of `shards` of the settings' streams (the streams themselves when unsharded).
    init(settings: StrategyEngineSettings, strategies: StrategySet, shard: Int = 0, of shards: Int = 1) {
        inputStream = StreamKey.sharded(settings.inputStream, shard: shard, of: shards)
        outputStream = StreamKey.sharded(settings.outputStream, shard: shard, of: shards)
        streamMaxLen = settings.streamMaxLen
        self.strategies = strategies
        signalCounters = strategies.strategies.map { strategy in
            (
                Counter(label: "te_signals_total", dimensions: [("strategy", strategy.name), ("direction", "buy")]),
                Counter(label: "te_signals_total", dimensions: [("strategy", strategy.name), ("direction", "sell")])
            )
        }
    }

    mutating func handle(_ batch: [StreamDelivery<FeatureSnapshot>]) async throws -> StageOutput {
        var output = StageOutput()
        // Counted after the whole batch is built: a throwing batch counts nothing. (A failed write is
        // retried and counted again; the counter is a rate, not a ledger.)
        var fired = [Int](repeating: 0, count: strategies.strategies.count * 2)
        for delivery in batch {
            guard delivery.message.warm else { continue }
            // A sampled snapshot's trace continues on its signals (see `StreamTrace`).
            let trace = StreamTrace.stage("strategy-engine snapshot", parent: delivery.traceParent)
            defer { trace.span?.end() }
            trace.span?.attributes["te.symbol"] = delivery.message.symbol
            trace.span?.attributes["te.stream_id"] = delivery.id
            for (index, strategy) in strategies.strategies.enumerated() {
                guard let signal = strategy.evaluate(delivery.message) else { continue }
                try output.add(signal, to: outputStream, maxLen: streamMaxLen, tp: trace.tp)
                fired[index * 2 + (signal.direction == .buy ? 0 : 1)] += 1
            }
        }
        for (index, counters) in signalCounters.enumerated() {
            if fired[index * 2] > 0 { counters.buy.increment(by: fired[index * 2]) }
            if fired[index * 2 + 1] > 0 { counters.sell.increment(by: fired[index * 2 + 1]) }
        }
        return output
    }
}
