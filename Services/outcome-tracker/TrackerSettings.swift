import FeatureEngine
import ServiceKit

/// Settings of `outcome-tracker`, from the environment.
struct TrackerSettings: Sendable {
    /// H. `OUTCOME_HORIZON_MS`; default 5000.
    var horizonMs = 5000
    /// The label's cost. `OUTCOME_COST_BPS`; default 4.
    var costBps = 4.0
    /// Outcomes per model version in the rolling quality window. `OUTCOME_QUALITY_WINDOW`; default 1000.
    var qualityWindow = 1000
    /// Market time of quotes kept per symbol before its latest: a decision older than that against its
    /// symbol's clock gets `quote_history_pruned`. `OUTCOME_QUOTE_HISTORY_MS`; default 600000.
    var quoteHistoryMs = 600_000
    /// Wall time a decision is held without its horizon passing before it is written unlabelled (its
    /// symbol's feed stopped or never started). `OUTCOME_MAX_HOLD_MS`; default 120000.
    var maxHold: Duration = .seconds(120)
    /// How often held decisions are checked and known outcomes written. `OUTCOME_SWEEP_MS`; default 200.
    var sweepInterval: Duration = .milliseconds(200)
    /// Upper bound on the `te:ticks` entries read back to rebuild the quotes after a restart.
    /// `OUTCOME_REBUILD_MAX_ENTRIES`; default 2000000.
    var rebuildMaxEntries = 2_000_000
    /// `MAXLEN ~` of `te:outcomes`. `STREAM_MAXLEN`; default 1000000.
    var streamMaxLen = 1_000_000
    /// Where `<version>/reference.json` (the PSI reference of a model version) is found.
    /// `MODEL_REFERENCE_DIR`; default: none (no PSI).
    var referenceDirectory: String?
    /// The model and the configured pair the canary is judged on (the gateway's variables, same
    /// defaults): `MODEL_NAME` (trade_eligibility), `MODEL_VERSION` (1), `CANARY_VERSION` (2).
    var modelName = "trade_eligibility"
    var primaryVersion = "1"
    var canaryVersion = "2"
    /// The rollout on quality (`CanaryJudge.Policy`): `CANARY_QUALITY_MIN_OUTCOMES` (200 per side),
    /// `CANARY_QUALITY_MIN_TRADES` (50 per side, for precision), `CANARY_QUALITY_WINDOW` (1000 canary
    /// outcomes or shadow pairs), `CANARY_QUALITY_Z` (3), `CANARY_QUALITY_BRIER_MARGIN` (0),
    /// `CANARY_QUALITY_PRECISION_MARGIN` (0); `DECISION_THRESHOLD` (0.5) makes a shadow score a `trade`.
    var judgePolicy = CanaryJudge.Policy()
    /// `CANARY_QUALITY_ROLLBACK`: roll the canary back when it is worse. Default: true.
    var qualityRollback = true
    /// `CANARY_AUTO_PROMOTE`: promote the canary when it is better. Default: false.
    var autoPromote = false
    /// `ROLLOUT_POLL_MS`: how often the shared rollout state is re-read. Default: 1000.
    var rolloutPoll: Duration = .milliseconds(1000)

    var rule: OutcomeRule { OutcomeRule(horizonMs: horizonMs, costBps: costBps) }

    static func fromEnvironment(_ env: Env) throws(ConfigurationError) -> TrackerSettings {
        let d = TrackerSettings()
        return TrackerSettings(
            horizonMs: try env.int("OUTCOME_HORIZON_MS", default: d.horizonMs, range: 1...86_400_000),
            costBps: try env.double("OUTCOME_COST_BPS", default: d.costBps, range: 0...10_000),
            qualityWindow: try env.int("OUTCOME_QUALITY_WINDOW", default: d.qualityWindow, range: 1...10_000_000),
            quoteHistoryMs: try env.int("OUTCOME_QUOTE_HISTORY_MS", default: d.quoteHistoryMs, range: 1...864_000_000),
            maxHold: try env.milliseconds("OUTCOME_MAX_HOLD_MS", default: d.maxHold),
            sweepInterval: try env.milliseconds("OUTCOME_SWEEP_MS", default: d.sweepInterval),
            rebuildMaxEntries: try env.int(
                "OUTCOME_REBUILD_MAX_ENTRIES", default: d.rebuildMaxEntries, range: 1...Int.max),
            streamMaxLen: try env.int("STREAM_MAXLEN", default: d.streamMaxLen, range: 1...Int.max),
            referenceDirectory: env.optional("MODEL_REFERENCE_DIR").flatMap { $0.isEmpty ? nil : $0 },
            modelName: try env.string("MODEL_NAME", default: d.modelName),
            primaryVersion: try env.string("MODEL_VERSION", default: d.primaryVersion),
            canaryVersion: try env.string("CANARY_VERSION", default: d.canaryVersion),
            judgePolicy: CanaryJudge.Policy(
                minOutcomes: try env.int("CANARY_QUALITY_MIN_OUTCOMES", default: 200, range: 1...10_000_000),
                minTrades: try env.int("CANARY_QUALITY_MIN_TRADES", default: 50, range: 1...10_000_000),
                window: try env.int("CANARY_QUALITY_WINDOW", default: 1000, range: 1...10_000_000),
                z: try env.double("CANARY_QUALITY_Z", default: 3, range: 0...100),
                brierMargin: try env.double("CANARY_QUALITY_BRIER_MARGIN", default: 0, range: 0...1),
                precisionMargin: try env.double("CANARY_QUALITY_PRECISION_MARGIN", default: 0, range: 0...1),
                threshold: try env.double("DECISION_THRESHOLD", default: 0.5, range: 0...1)),
            qualityRollback: try env.bool("CANARY_QUALITY_ROLLBACK", default: d.qualityRollback),
            autoPromote: try env.bool("CANARY_AUTO_PROMOTE", default: d.autoPromote),
            rolloutPoll: try env.milliseconds("ROLLOUT_POLL_MS", default: d.rolloutPoll))
    }
}
