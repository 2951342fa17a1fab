import ServiceKit
import ServiceLifecycle
import TEModels

// opportunity-aggregator: te:signals (group opportunity-aggregator) → te:opportunities.
// With STREAM_SHARDS = S > 1 it reads every te:signals:{k}: one worker and one state per shard (each symbol
// lives in one shard, so a shard's state is complete for its symbols), keys `{prefix}:{k}:…` in the shard's
// slot. One replica reads all shards. See AggregatorCore for the delivery guarantees and
// deploy/strategies/README.md for the rules.
await ServiceRunner.run(service: "opportunity-aggregator", defaultMetricsPort: 9104) { resources in
    let settings = try AggregatorSettings.fromEnvironment(resources.env)
    let shards = try resources.env.stageShards()
    let redis = try resources.env.redis()
    let worker = try StreamWorkerConfiguration.fromEnvironment(resources.env)
    var services: [any Service] = []
    for k in 0..<shards {
        let shard = settings.shard(k, of: shards)
        var logger = resources.logger
        logger[metadataKey: "state"] = "\(shard.stateKey)"
        let core = AggregatorCore(settings: shard, logger: logger)
        services.append(
            StreamWorker(
                stage: AggregatorStage(core: core, inputStream: shard.inputStream), redis: redis,
                configuration: worker, readiness: resources.readiness, logger: logger))
        services.append(IdleCloser(core: core, interval: shard.idleCheckInterval))
    }
    return services
}
