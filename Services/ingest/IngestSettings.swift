import ServiceKit
import TEKafka

/// ingest's environment (DESIGN.md "Environment"), plus the names tests override to run in isolation.
struct IngestSettings: Sendable {
    var kafka: KafkaConfiguration
    /// `KAFKA_TOPIC`; default `ticks`.
    var topic: String
    /// `KAFKA_GROUP`; default `ingest`.
    var group: String
    /// `STREAM_MAXLEN` (`XADD MAXLEN ~`); default 1000000.
    var streamMaxLen: Int
    /// `SPREAD_TTL_SEC`; default 180.
    var spreadTTLSeconds: Int
    /// `INGEST_TICKS_STREAM`; default `te:ticks`.
    var ticksStream: String
    /// `INGEST_DLQ_STREAM`; default `te:dlq`.
    var dlqStream: String
    /// `INGEST_SPREAD_PREFIX`; default `te:spread_bps:`.
    var spreadPrefix: String
    /// `INGEST_OFFSETS_KEY`: hash of each partition's last written offset (see `FencedBatch`); default
    /// `te:ingest:offsets:{topic}`. One per (topic, output streams) pair.
    var offsetsKey: String
    /// `INGEST_BATCH_SIZE`: Kafka messages per Redis pipeline and offset commit; default 500.
    var batchSize: Int
    /// `INGEST_DEPTH_LEVELS`: levels per quote in `bids`/`asks`; default 10.
    var depthLevels: Int

    static func fromEnvironment(_ env: Env) throws(ConfigurationError) -> IngestSettings {
        let kafka: KafkaConfiguration
        do {
            kafka = try KafkaConfiguration.fromEnvironment(env.values)
        } catch {
            throw ConfigurationError(variable: "KAFKA_BROKERS", problem: "is not set (host:port of the Kafka bootstrap servers)")
        }
        let topic = try env.string("KAFKA_TOPIC", default: "ticks")
        return IngestSettings(
            kafka: kafka,
            topic: topic,
            group: try env.string("KAFKA_GROUP", default: "ingest"),
            streamMaxLen: try env.int("STREAM_MAXLEN", default: 1_000_000, range: 1...Int.max),
            spreadTTLSeconds: try env.int("SPREAD_TTL_SEC", default: 180, range: 1...86_400 * 365),
            ticksStream: try env.string("INGEST_TICKS_STREAM", default: "te:ticks"),
            dlqStream: try env.string("INGEST_DLQ_STREAM", default: "te:dlq"),
            spreadPrefix: try env.string("INGEST_SPREAD_PREFIX", default: "te:spread_bps:"),
            offsetsKey: try env.string("INGEST_OFFSETS_KEY", default: "te:ingest:offsets:" + topic),
            batchSize: try env.int("INGEST_BATCH_SIZE", default: 500, range: 1...100_000),
            depthLevels: try env.int("INGEST_DEPTH_LEVELS", default: 10, range: 0...1000))
    }
}
