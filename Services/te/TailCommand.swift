import ArgumentParser
import TERedis

/// `te tail STREAM [-n N] [--follow]`: the last entries, one per line (or pretty), then new ones as they come.
struct TailCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tail", abstract: "Show the last entries of a stream.")

    @Argument(help: "Stream key, e.g. te:ticks (the te: prefix may be left out).") var stream: String
    @Option(name: .short, help: "How many entries.") var n = 10
    @Flag(name: .shortAndLong, help: "Keep printing new entries.") var follow = false
    @Flag(help: "One field per line.") var pretty = false

    func run() async throws {
        let key = stream.hasPrefix("te:") || stream.contains(":") ? stream : "te:" + stream
        let redis = try Inspect.redis()
        defer { redis.close() }
        let last = try await redis.xrevrange(key, count: n).reversed()
        for entry in last { print(pretty ? Inspect.pretty(entry) : Inspect.line(entry)) }
        guard follow else { return }
        var cursor = last.last?.id ?? "$"
        while !Task.isCancelled {
            for result in try await redis.xread(streams: [(key, cursor)], count: 100, block: .seconds(1)) {
                for entry in result.entries {
                    print(pretty ? Inspect.pretty(entry) : Inspect.line(entry))
                    cursor = entry.id
                }
            }
        }
    }
}
