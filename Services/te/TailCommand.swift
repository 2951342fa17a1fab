import ArgumentParser
import Foundation
import ServiceKit
import TEModels
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
    @Option(help: "With STREAM_SHARDS > 1: only this shard of a sharded stream (default: all shards, merged by id).")
    var shard: Int?
    @Flag(help: "One field per line.") var pretty = false
    @OptionGroup var format: OutputOptions

    func validate() throws {
        guard n > 0 else { throw ValidationError("-n must be positive") }
        if follow && until != nil { throw ValidationError("--follow and --until exclude each other") }
    }

    /// The streams to show: `key` itself, or with `STREAM_SHARDS` > 1 and a sharded base name (te:ticks,
    /// te:features, te:signals) its shards (`--shard k`: one).
    static func keys(_ key: String, shard: Int?, shards: Int) throws -> [String] {
        let sharded = [StreamKey.ticks, StreamKey.features, StreamKey.signals].contains(key) && shards > 1
        guard let shard else { return sharded ? StreamKey.allShards(key, shards: shards) : [key] }
        guard sharded, (0..<shards).contains(shard) else {
            throw ValidationError(
                "--shard needs a sharded stream (te:ticks, te:features, te:signals) and 0 ≤ k < STREAM_SHARDS (\(shards))"
            )
        }
        return [StreamKey.sharded(key, shard: shard, of: shards)]
    }

    /// Those of `keys` that exist: one key must; of several shards, those no symbol maps to yet are left out.
    static func existing(_ keys: [String], in redis: RedisClient) async throws -> [String] {
        guard keys.count > 1 else {
            for key in keys { try await Inspect.requireStream(key, in: redis) }
            return keys
        }
        var found: [String] = []
        for key in keys where try await redis.send(RedisCommand(["TYPE", key])).string == "stream" { found.append(key) }
        guard !found.isEmpty else {
            throw CLIError("no stream \(keys.joined(separator: ", ")) (`te streams` lists them)")
        }
        return found
    }

    func run() async throws {
        let key = stream.hasPrefix("te:") || stream.contains(":") ? stream : "te:" + stream
        let redis = try Inspect.redis()
        defer { redis.close() }
        let keys = try await Self.existing(
            try Self.keys(key, shard: shard, shards: try Env().streamShards()), in: redis)
        let start = try since.map { try Inspect.streamBound($0, option: "--since") }
        let end = try until.map { try Inspect.streamBound($0, option: "--until") }
        // Several shards: each shard's N, merged by id (ids of different streams order by their milliseconds).
        var entries: [(String, StreamEntry)] = []
        for key in keys {
            let part: [StreamEntry]
            if start != nil {
                part = try await redis.xrange(key, start: start ?? "-", end: end ?? "+", count: n)
            } else {
                part = try await redis.xrevrange(key, end: end ?? "+", count: n).reversed()
            }
            entries += part.map { (key, $0) }
        }
        entries.sort {
            (StreamID($0.1.id) ?? StreamID(milliseconds: 0, sequence: 0))
                < (StreamID($1.1.id) ?? StreamID(milliseconds: 0, sequence: 0))
        }
        entries = start != nil ? Array(entries.prefix(n)) : Array(entries.suffix(n))
        for (key, entry) in entries { show(entry, stream: keys.count > 1 ? key : nil) }
        guard follow else { return }
        var cursors = Dictionary(uniqueKeysWithValues: keys.map { ($0, "$") })
        for (key, entry) in entries { cursors[key] = entry.id }
        while !Task.isCancelled {
            // One XREAD per shard on a cluster (shards live on different nodes), all at once otherwise.
            let groups = redis.isCluster ? keys.map { [$0] } : [keys]
            for group in groups {
                let block: Duration = .milliseconds(max(50, 1000 / groups.count))
                for result in try await redis.xread(streams: group.map { ($0, cursors[$0]!) }, count: 100, block: block)
                {
                    for entry in result.entries {
                        show(entry, stream: keys.count > 1 ? result.stream : nil)
                        cursors[result.stream] = entry.id
                    }
                }
            }
        }
    }

    /// `stream`: shown before the entry when several shards are merged.
    func show(_ entry: StreamEntry, stream: String? = nil) {
        let ms = Inspect.milliseconds(ofID: entry.id)
        if format.json {
            var fields: [String: String] = [:]
            for (k, v) in entry.fields { fields[k] = v }
            var object: [String: Any] = ["id": entry.id, "time_ms": ms as Any? ?? NSNull(), "fields": fields]
            if let stream { object["stream"] = stream }
            if let data = try? JSONSerialization.data(
                withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
            {
                print(String(decoding: data, as: UTF8.self))
            }
            return
        }
        let when =
            (ms.map { Inspect.dim(format.time(ms: $0)) + " " } ?? "") + (stream.map { Inspect.dim($0) + " " } ?? "")
        print(pretty ? when + Inspect.pretty(entry) : when + Inspect.line(entry))
    }
}
