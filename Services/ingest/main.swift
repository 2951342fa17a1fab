import ServiceKit
import TERedis

// ingest: Kafka topic `ticks` (group `ingest`) → te:ticks, te:spread_bps:{SYMBOL}, te:dlq. See IngestService.
await ServiceRunner.run(service: "ingest", defaultMetricsPort: 9101) { resources in
    let settings = try IngestSettings.fromEnvironment(resources.env)
    let redis = try resources.env.redis()
    let client = RedisClient(configuration: redis, name: "ingest", logger: resources.logger)
    let kafka = KafkaReadiness()
    // ReadinessChecks answers /readyz within its deadline whatever a check does (a hung one is reported).
    resources.readiness.add("redis") { try await client.ping() }
    resources.readiness.add("kafka") { try await kafka.check() }
    return [
        IngestService(
            settings: settings, redis: client, logger: resources.logger,
            metrics: IngestMetrics(),
            kafka: kafka)
    ]
}
