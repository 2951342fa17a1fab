import ServiceKit
import TEModels

// outcome-tracker: te:audit + te:ticks (groups outcome-tracker) → te:outcomes, one Outcome per decision
// once its horizon has passed on the market clock; rolling model quality per version on /metrics.
// It also judges the canary against the primary on those outcomes and rolls it back (or promotes it) through
// the shared rollout state that every gateway follows (CanaryQuality.swift).
// AUDIT_STREAM, TICKS_STREAM, OUTCOMES_STREAM and ROLLOUT_STREAM (defaults te:audit, te:ticks, te:outcomes,
// te:rollout) let tests use streams of their own.
await ServiceRunner.run(service: "outcome-tracker", defaultMetricsPort: 9105) { resources in
    let env = resources.env
    let settings = try TrackerSettings.fromEnvironment(env)
    let redis = try env.redis()
    let worker = try StreamWorkerConfiguration.fromEnvironment(env)
    let auditStream = try env.string("AUDIT_STREAM", default: StreamKey.audit)
    let ticksStream = try env.string("TICKS_STREAM", default: StreamKey.ticks)
    let outcomesStream = try env.string("OUTCOMES_STREAM", default: StreamKey.outcomes)
    let rolloutStream = try env.string("ROLLOUT_STREAM", default: StreamKey.rollout)
    var logger = resources.logger
    logger[metadataKey: "horizon_ms"] = "\(settings.horizonMs)"
    let state = TrackerState(settings: settings, logger: logger)
    let decisions = DecisionStage(inputStream: auditStream, state: state)
    let quotes = QuoteStage(inputStream: ticksStream, state: state, settings: settings, logger: logger)
    return [
        StreamWorker(
            stage: quotes, redis: redis, configuration: worker, readiness: resources.readiness, logger: logger),
        StreamWorker(stage: decisions, redis: redis, configuration: worker, logger: logger),
        OutcomeSweeper(
            state: state, redis: redis, auditStream: auditStream, outcomesStream: outcomesStream,
            group: decisions.stage, settings: settings, logger: logger),
        CanaryRolloutService(state: state, redis: redis, stream: rolloutStream, settings: settings, logger: logger)
    ]
}
