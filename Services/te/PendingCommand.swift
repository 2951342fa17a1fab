import ArgumentParser
import TERedis

/// `te pending STREAM GROUP`: who holds which entries, for how long, delivered how often.
struct PendingCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pending", abstract: "Show a consumer group's pending entries.")

    @Argument(help: "Stream key.") var stream: String
    @Argument(help: "Consumer group.") var group: String
    @Option(help: "At most this many entries.") var count = 50

    func run() async throws {
        let redis = try Inspect.redis()
        defer { redis.close() }
        let summary = try await redis.xpending(stream, group: group)
        print("\(Inspect.bold(String(summary.count))) pending in \(stream) / \(group)")
        if !summary.consumers.isEmpty {
            print(Inspect.table(["CONSUMER", "PENDING"], summary.consumers.sorted { $0.key < $1.key }.map { [$0.key, String($0.value)] }))
        }
        let entries = try await redis.xpending(stream, group: group, count: count)
        guard !entries.isEmpty else { return }
        print("")
        print(Inspect.table(["ID", "CONSUMER", "IDLE", "DELIVERIES"], entries.map { e in
            let ms = e.idle.components.seconds * 1000 + e.idle.components.attoseconds / 1_000_000_000_000_000
            let deliveries = e.deliveries > 1 ? Inspect.warn(String(e.deliveries)) : String(e.deliveries)
            return [e.id, e.consumer, Inspect.duration(ms), deliveries]
        }))
    }
}
