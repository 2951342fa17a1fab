import ServiceKit
import Strategies
import TEModels

/// Settings of `opportunity-aggregator`, from the environment.
struct AggregatorSettings: Sendable {
    /// `COOLDOWN_MS` (default 5000), `MIN_CONFIDENCE` (default 0.5), `MAX_SIGNAL_AGE_MS` (default 30000),
    /// `UPGRADE_MIN_STEP` (default 0.05).
    var aggregation = OpportunityAggregator.Configuration()
    /// Windows of a symbol that has gone quiet close once the latest event time over all symbols is this far
    /// past their end. `CLOSE_GRACE_MS`; default 1000.
    var closeGraceNs: Int64 = 1_000_000_000
    /// After this long (wall clock) without input, open windows are closed as if event time had moved on by
    /// the idle time. `IDLE_CLOSE_MS`; default 10000.
    var idleCloseAfter: Duration = .seconds(10)
    /// How long the memory of a seen signal id lasts. `SEEN_TTL_SEC`; default 86400.
    var seenTTLSeconds = 86_400
    /// Input stream. `SIGNALS_STREAM`; default `te:signals`.
    var inputStream = StreamKey.signals
    /// Output stream. `OPPORTUNITIES_STREAM`; default `te:opportunities`.
    var outputStream = StreamKey.opportunities
    /// Prefix of the aggregator's own keys: `{prefix}:state` (hash), `{prefix}:outbox` (stream),
    /// `{prefix}:seen:{signal id}` and `{prefix}:relayed:{te:opportunities}` (hash). With shards, each shard's
    /// keys are under `{prefix}:{k}`. `AGG_STATE_PREFIX`; default `te:agg`.
    var statePrefix = "te:agg"
    /// `MAXLEN ~` of the output stream. `STREAM_MAXLEN`; default 1000000.
    var streamMaxLen = 1_000_000
    /// The shard this state serves when `STREAM_SHARDS` > 1 (its gauges carry it as `shard`), else nil.
    var shardIndex: Int?
    /// `{prefix}:{k}` of the shard when sharded.
    var shardPrefix: String?

    /// The shard's keys' prefix.
    var keyPrefix: String { shardPrefix ?? statePrefix }
    var stateKey: String { "\(keyPrefix):state" }
    /// The shard's outbox of opportunities (see `ShardOutbox`).
    var outboxKey: String { "\(keyPrefix):outbox" }
    /// What every shard's relay remembers, in the output stream's slot.
    var relayedKey: String { ShardOutbox.relayedKey(prefix: statePrefix, target: outputStream) }

    /// The settings of shard `k` of `shards` (DESIGN.md "Shards"): input `te:signals:{k}` and the state under
    /// `{prefix}:{k}`, so the batch's fenced step (outbox, state, seen ids, XACK) stays in the shard's slot. One shard keeps
    /// today's names.
    func shard(_ k: Int, of shards: Int) -> AggregatorSettings {
        guard shards > 1 else { return self }
        var settings = self
        settings.inputStream = StreamKey.sharded(inputStream, shard: k, of: shards)
        settings.shardPrefix = "\(statePrefix):{\(k)}"
        settings.shardIndex = k
        return settings
    }
    func seenKey(_ signalID: String) -> String { "\(keyPrefix):seen:\(signalID)" }

    static func fromEnvironment(_ env: Env) throws(ConfigurationError) -> AggregatorSettings {
        let d = AggregatorSettings()
        let ms: Int64 = 1_000_000
        let cooldownMs = try env.int("COOLDOWN_MS", default: Int(d.aggregation.cooldownNs / ms), range: 1...86_400_000)
        let minConfidence = try env.double("MIN_CONFIDENCE", default: d.aggregation.minConfidence, range: 0...1)
        let maxAgeMs = try env.int(
            "MAX_SIGNAL_AGE_MS", default: Int(d.aggregation.maxSignalAgeNs / ms), range: 0...86_400_000)
        let upgradeStep = try env.double("UPGRADE_MIN_STEP", default: d.aggregation.minUpgradeStep, range: 0...1)
        let graceMs = try env.int("CLOSE_GRACE_MS", default: Int(d.closeGraceNs / ms), range: 0...86_400_000)
        let idleMs = try env.int("IDLE_CLOSE_MS", default: 10_000, range: 1...86_400_000)
        return AggregatorSettings(
            aggregation: .init(
                cooldownNs: Int64(cooldownMs) * ms, minConfidence: minConfidence, maxSignalAgeNs: Int64(maxAgeMs) * ms,
                minUpgradeStep: upgradeStep),
            closeGraceNs: Int64(graceMs) * ms,
            idleCloseAfter: .milliseconds(idleMs),
            seenTTLSeconds: try env.int("SEEN_TTL_SEC", default: d.seenTTLSeconds, range: 1...31_536_000),
            inputStream: try env.string("SIGNALS_STREAM", default: d.inputStream),
            outputStream: try env.string("OPPORTUNITIES_STREAM", default: d.outputStream),
            statePrefix: try env.string("AGG_STATE_PREFIX", default: d.statePrefix),
            streamMaxLen: try env.int("STREAM_MAXLEN", default: d.streamMaxLen, range: 1...Int.max))
    }
}
