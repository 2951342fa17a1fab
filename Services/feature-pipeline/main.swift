import ServiceKit
import TEModels

// feature-pipeline: te:ticks (group feature-pipeline) → te:features + te:online:{SYMBOL}. See FeatureStage.
await ServiceRunner.run(service: "feature-pipeline", defaultMetricsPort: 9102) { resources in
    let settings = try FeatureSettings.fromEnvironment(resources.env)
    let redis = try resources.env.redis()
    let worker = try StreamWorkerConfiguration.fromEnvironment(resources.env)
    var logger = resources.logger
    logger[metadataKey: "window_ms"] = "\(settings.windowMs)"
    let stage = FeatureStage(settings: settings, registry: resources.registry, logger: logger)
    return [StreamWorker(stage: stage, redis: redis, configuration: worker, readiness: resources.readiness, logger: logger)]
}
