import ArgumentParser
import Foundation
import TERedis

/// `te tail STREAM [-n N] [--since T] [--until T] [--follow]`: entries one per line (or pretty, or JSON
/// lines), each with its time, then new ones as they come.
struct TailCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tail", abstract: "Show the last entries of a stream (or those of a time range).",
        discussion: "-o json prints one JSON object per entry and line ({\"id\",\"time_ms\",\"fields\"}), for jq.")

    @Argument(help: "Stream key, e.g. te:ticks (the te: prefix may be left out).") var stream: String
    @Option(name: .short, help: "How many entries (the last N; with --since, the first N from there).") var n = 10
    @Option(help: "From: a duration back from now (90s, 5m, 2h), an entry id or an ISO-8601 time.") var since: String?
    @Option(help: "Up to (inclusive), same forms as --since.") var until: String?
    @Flag(name: .shortAndLong, help: "Keep printing new entries.") var follow = false
    @Flag(help: "One field per line.") var pretty = false
    @OptionGroup var format: OutputOptions

    func validate() throws {
        guard n > 0 else { throw ValidationError("-n must be positive") }
        if follow && until != nil { throw ValidationError("--follow and --until exclude each other") }
    }

    func run() async throws {
        let key = stream.hasPrefix("te:") || stream.contains(":") ? stream : "te:" + stream
        let redis = try Inspect.redis()
        defer { redis.close() }
        try await Inspect.requireStream(key, in: redis)
        let start = try since.map { try Inspect.streamBound($0, option: "--since") }
        let end = try until.map { try Inspect.streamBound($0, option: "--until") }
        let entries: [StreamEntry]
        if start != nil {
            entries = try await redis.xrange(key, start: start ?? "-", end: end ?? "+", count: n)
        } else {
            entries = try await redis.xrevrange(key, end: end ?? "+", count: n).reversed()
        }
        for entry in entries { show(entry) }
        guard follow else { return }
        var cursor = entries.last?.id ?? "$"
        while !Task.isCancelled {
            for result in try await redis.xread(streams: [(key, cursor)], count: 100, block: .seconds(1)) {
                for entry in result.entries {
                    show(entry)
                    cursor = entry.id
                }
            }
        }
    }

    func show(_ entry: StreamEntry) {
        let ms = Inspect.milliseconds(ofID: entry.id)
        if format.json {
            var fields: [String: String] = [:]
            for (k, v) in entry.fields { fields[k] = v }
            let object: [String: Any] = ["id": entry.id, "time_ms": ms as Any? ?? NSNull(), "fields": fields]
            if let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]) {
                print(String(decoding: data, as: UTF8.self))
            }
            return
        }
        let when = ms.map { Inspect.dim(format.time(ms: $0)) + " " } ?? ""
        print(pretty ? when + Inspect.pretty(entry) : when + Inspect.line(entry))
    }
}
