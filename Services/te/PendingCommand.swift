import ArgumentParser
import ServiceKit
import TERedis

/// `te pending STREAM GROUP`: who holds which entries, for how long, delivered how often; every shard of a
/// sharded stream with `STREAM_SHARDS` > 1 (`--shard k`: one).
struct PendingCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pending", abstract: "Show a consumer group's pending entries.")

    @Argument(help: "Stream key.") var stream: String
    @Argument(help: "Consumer group.") var group: String
    @Option(help: "At most this many entries.") var count = 50
    @Option(help: "With STREAM_SHARDS > 1: only this shard of a sharded stream (default: every shard).") var shard: Int?
    @OptionGroup var format: OutputOptions

    func run() async throws {
        let redis = try Inspect.redis()
        defer { redis.close() }
        let keys = try await TailCommand.existing(
            try TailCommand.keys(stream, shard: shard, shards: try Env().streamShards()), in: redis)
        for (i, key) in keys.enumerated() {
            if i > 0 && !format.json { print("") }
            try await show(key, redis: redis)
        }
    }

    func show(_ stream: String, redis: RedisClient) async throws {
        try await Inspect.requireStream(stream, in: redis)
        let summary = try await redis.xpending(stream, group: group)
        let entries = try await redis.xpending(stream, group: group, count: count)
        func milliseconds(_ d: Duration) -> Int64 {
            d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000
        }
        if format.json {
            try format.printJSON([
                "stream": stream, "group": group, "pending": summary.count,
                "consumers": summary.consumers,
                "entries": entries.map { e -> [String: Any] in
                    ["id": e.id, "consumer": e.consumer, "idle_ms": milliseconds(e.idle), "deliveries": e.deliveries]
                }
            ])
            return
        }
        print("\(Inspect.bold(String(summary.count))) pending in \(stream) / \(group)")
        if !summary.consumers.isEmpty {
            print(
                Inspect.table(
                    ["CONSUMER", "PENDING"],
                    summary.consumers.sorted { $0.key < $1.key }.map { [$0.key, String($0.value)] }))
        }
        guard !entries.isEmpty else { return }
        print("")
        print(
            Inspect.table(
                ["ID", "CONSUMER", "IDLE", "DELIVERIES"] + (format.wide ? ["ADDED_AT"] : []),
                entries.map { e in
                    let deliveries = e.deliveries > 1 ? Inspect.warn(String(e.deliveries)) : String(e.deliveries)
                    let added = format.wide ? [Inspect.milliseconds(ofID: e.id).map(format.time(ms:)) ?? "-"] : []
                    return [e.id, e.consumer, Inspect.duration(milliseconds(e.idle)), deliveries] + added
                }))
    }
}
