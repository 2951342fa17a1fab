import Foundation
import ServiceKit
import TEKafka
import TEModels

/// ingest's environment (DESIGN.md "Environment"), plus the names tests override to run in isolation.
struct IngestSettings: Sendable {
    var kafka: KafkaConfiguration
    /// `KAFKA_TOPIC`; default `ticks`.
    var topic: String
    /// `KAFKA_GROUP`; default `ingest`.
    var group: String
    /// `group.instance.id` (static membership, so a restarted ingest gets its partitions back at once):
    /// `KAFKA_GROUP_INSTANCE_ID`, else `POD_NAME` (Kubernetes), else `HOSTNAME`, else the host name.
    /// `KAFKA_GROUP_INSTANCE_ID=""` turns static membership off (two instances on one host, same group).
    var groupInstanceID: String?
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
    /// `INGEST_OFFSETS_KEY`: base name of the fences, one hash per fence group `<base>:{tag}` (see
    /// `FencedBatch`); default `te:ingest:offsets:<topic>`. One per (topic, output streams) pair.
    var offsetsKey: String
    /// `INGEST_BOOKS_KEY`: base name of the order books stored with those fences (see `FencedBatch`);
    /// default `te:ingest:books:<topic>`.
    var booksKey: String
    /// `STREAM_SHARDS` (DESIGN.md "Shards"): a tick goes to its symbol's shard of `ticksStream`; default 1.
    var shards: Int
    /// `INGEST_SNAPSHOT_TIMEOUT_MS`: receive time a book may stay out of sync after a gap before ingest
    /// reports the snapshot overdue (`te_ingest_book_snapshot_overdue_total`); default 10000.
    var snapshotTimeoutNs: Int64
    /// `INGEST_BATCH_SIZE`: Kafka messages per Redis pipeline and offset commit; default 500.
    var batchSize: Int
    /// `INGEST_DEPTH_LEVELS`: levels per quote in `bids`/`asks`; default 10.
    var depthLevels: Int

    static func fromEnvironment(_ env: Env) throws(ConfigurationError) -> IngestSettings {
        let kafka = try KafkaConfiguration.fromEnvironment(env)
        let topic = try env.string("KAFKA_TOPIC", default: "ticks")
        return IngestSettings(
            kafka: kafka,
            topic: topic,
            group: try env.string("KAFKA_GROUP", default: "ingest"),
            groupInstanceID: staticMemberID(env.values),
            streamMaxLen: try env.int("STREAM_MAXLEN", default: 1_000_000, range: 1...Int.max),
            spreadTTLSeconds: try env.int("SPREAD_TTL_SEC", default: 180, range: 1...86_400 * 365),
            ticksStream: try env.string("INGEST_TICKS_STREAM", default: "te:ticks"),
            dlqStream: try env.string("INGEST_DLQ_STREAM", default: "te:dlq"),
            spreadPrefix: try env.string("INGEST_SPREAD_PREFIX", default: "te:spread_bps:"),
            offsetsKey: try env.string("INGEST_OFFSETS_KEY", default: "te:ingest:offsets:" + topic),
            booksKey: try env.string("INGEST_BOOKS_KEY", default: "te:ingest:books:" + topic),
            shards: try env.streamShards(),
            snapshotTimeoutNs: Int64(try env.int("INGEST_SNAPSHOT_TIMEOUT_MS", default: 10_000, range: 1...86_400_000))
                * 1_000_000,
            batchSize: try env.int("INGEST_BATCH_SIZE", default: 500, range: 1...100_000),
            depthLevels: try env.int("INGEST_DEPTH_LEVELS", default: 10, range: 0...1000))
    }
}

extension IngestSettings {
    /// One stream ingest writes with its fence (and books) in the stream's slot.
    struct FenceGroup: Sendable, Equatable {
        var stream: String
        var fenceKey: String
        var booksKey: String
    }

    /// The tick shards in shard order, then the dead-letter stream (`IngestCycle`'s group numbers).
    var groups: [FenceGroup] {
        (StreamKey.allShards(ticksStream, shards: shards) + [dlqStream]).map {
            FenceGroup(
                stream: $0, fenceKey: FencedBatch.groupKey(offsetsKey, stream: $0),
                booksKey: FencedBatch.groupKey(booksKey, stream: $0))
        }
    }

    /// The group of `symbol`'s ticks.
    func shard(of symbol: String) -> Int { StreamKey.shard(of: symbol, shards: shards) }
}

/// See `IngestSettings.groupInstanceID`. Nil when turned off.
func staticMemberID(_ environment: [String: String]) -> String? {
    if let explicit = environment["KAFKA_GROUP_INSTANCE_ID"] { return explicit.isEmpty ? nil : explicit }
    for name in ["POD_NAME", "HOSTNAME"] {
        if let value = environment[name], !value.isEmpty { return value }
    }
    // gethostname, not ProcessInfo.hostName: that one may resolve the name through DNS.
    var buffer = [CChar](repeating: 0, count: 256)
    guard gethostname(&buffer, buffer.count - 1) == 0 else { return nil }
    let host = String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return host.isEmpty ? nil : host
}
