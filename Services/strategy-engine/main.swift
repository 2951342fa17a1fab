import ServiceKit
import Strategies

// strategy-engine: te:features:{k} (group strategy-engine) → te:signals:{k}, each shard by the replica
// holding its lease. See StrategyStage, ShardedStreamWorker and
// deploy/strategies/README.md.
await ServiceRunner.run(service: "strategy-engine", defaultMetricsPort: 9103) { resources in
    let settings = try StrategyEngineSettings.fromEnvironment(resources.env)
    let redis = try resources.env.redis()
    let worker = try StreamWorkerConfiguration.fromEnvironment(resources.env)
    let strategies: StrategySet
    do {
        strategies = try StrategySet.load(file: settings.strategiesFile)
    } catch {
        // One line naming the variable, the file, the key path and the reason; exit 1.
        throw ConfigurationError(variable: "STRATEGIES_FILE", problem: "is unusable: \(error)")
    }
    var logger = resources.logger
    logger[metadataKey: "strategies_file"] = "\(settings.strategiesFile)"
    logger.info(
        "strategies loaded",
        metadata: ["strategies": "\(strategies.strategies.map { "\($0.name) (\($0.rule.kind.rawValue))" })"])
    let sharding = try ShardedStreamWorker<StrategyStage>.Settings.fromEnvironment(resources.env)
    return [
        ShardedStreamWorker(
            stage: "strategy-engine", input: settings.inputStream, settings: sharding, redis: redis,
            configuration: worker,
            readiness: resources.readiness, logger: logger
        ) { k in StrategyStage(settings: settings, strategies: strategies, shard: k, of: sharding.shards) }
    ]
}
