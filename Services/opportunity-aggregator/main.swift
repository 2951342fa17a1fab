import ServiceKit
import TEModels

// opportunity-aggregator: te:signals:{k} (group opportunity-aggregator) → te:opportunities, each shard by the
// replica holding its lease, its state under `{prefix}:{k}:…` in the shard's slot and its opportunities
// relayed from the shard's outbox. See AggregatorStage, ShardedStreamWorker, docs/sharding.md and
// deploy/strategies/README.md for the rules.
await ServiceRunner.run(service: "opportunity-aggregator", defaultMetricsPort: 9104) { resources in
    let settings = try AggregatorSettings.fromEnvironment(resources.env)
    let redis = try resources.env.redis()
    let worker = try StreamWorkerConfiguration.fromEnvironment(resources.env)
    let sharding = try ShardedStreamWorker<AggregatorStage>.Settings.fromEnvironment(resources.env)
    let logger = resources.logger
    return [
        ShardedStreamWorker(
            stage: "opportunity-aggregator", input: settings.inputStream, settings: sharding, redis: redis,
            configuration: worker, readiness: resources.readiness, logger: logger
        ) { k in AggregatorStage(settings: settings.shard(k, of: sharding.shards), logger: logger) }
    ]
}
