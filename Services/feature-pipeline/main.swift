import ServiceKit
import TEModels

// feature-pipeline: te:ticks:{k} (group feature-pipeline) → te:features:{k} + te:online:{SYMBOL}, each
// shard by the replica holding its lease. See FeatureStage and ShardedStreamWorker.
await ServiceRunner.run(service: "feature-pipeline", defaultMetricsPort: 9102) { resources in
    let settings = try FeatureSettings.fromEnvironment(resources.env)
    let redis = try resources.env.redis()
    let worker = try StreamWorkerConfiguration.fromEnvironment(resources.env)
    var logger = resources.logger
    logger[metadataKey: "window_ms"] = "\(settings.windowMs)"
    let sharding = try ShardedStreamWorker<FeatureStage>.Settings.fromEnvironment(resources.env)
    let stageLogger = logger
    return [
        ShardedStreamWorker(
            stage: "feature-pipeline", input: StreamKey.ticks, settings: sharding, redis: redis, configuration: worker,
            readiness: resources.readiness, logger: logger
        ) { k in
            FeatureStage(settings: settings, shard: k, of: sharding.shards, logger: stageLogger)
        }
    ]
}
