import ServiceKit

// opportunity-aggregator: te:signals (group opportunity-aggregator) → te:opportunities.
// See AggregatorCore for the delivery guarantees and deploy/strategies/README.md for the rules.
await ServiceRunner.run(service: "opportunity-aggregator", defaultMetricsPort: 9104) { resources in
    let settings = try AggregatorSettings.fromEnvironment(resources.env)
    let redis = try resources.env.redis()
    let worker = try StreamWorkerConfiguration.fromEnvironment(resources.env)
    var logger = resources.logger
    logger[metadataKey: "state"] = "\(settings.stateKey)"
    let core = AggregatorCore(settings: settings, logger: logger)
    return [
        StreamWorker(
            stage: AggregatorStage(core: core, inputStream: settings.inputStream), redis: redis,
            configuration: worker, readiness: resources.readiness, logger: logger),
        IdleCloser(core: core, interval: settings.idleCheckInterval),
    ]
}
