import ArgumentParser
import Foundation
import TERedis

/// `te streams`: every `te:` stream with its length, first/last entry age, and groups (pending, lag).
struct StreamsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "streams", abstract: "List the te: streams: length, entry ages, consumer groups.")

    @Option(help: "Key pattern.") var match = "te:*"
    @OptionGroup var format: OutputOptions

    func run() async throws {
        let redis = try Inspect.redis()
        defer { redis.close() }
        let keys = try await redis.scan(match: match, type: "stream").sorted()
        var streams: [(key: String, info: StreamInfo, groups: [StreamGroupInfo])] = []
        for key in keys {
            streams.append((key, try await redis.xinfoStream(key), try await redis.xinfoGroups(key)))
        }
        if format.json {
            try format.printJSON(
                streams.map { s -> [String: Any] in
                    [
                        "stream": s.key, "length": s.info.length,
                        "first_entry_id": s.info.firstEntryID as Any? ?? NSNull(),
                        "last_entry_id": s.info.lastEntryID as Any? ?? NSNull(),
                        "groups": s.groups.map { g -> [String: Any] in
                            [
                                "name": g.name, "pending": g.pending, "lag": g.lag as Any? ?? NSNull(),
                                "consumers": g.consumers
                            ]
                        }
                    ]
                })
            return
        }
        guard !streams.isEmpty else {
            print("no streams match \(match)")
            return
        }
        let rows = streams.map { s -> [String] in
            let groupText =
                s.groups.isEmpty
                ? Inspect.dim("(no groups)")
                : s.groups.map { g in
                    let lag = g.lag.map(String.init) ?? "?"
                    let text = "\(g.name)[pending \(g.pending), lag \(lag), consumers \(g.consumers)]"
                    return g.pending > 0 || (g.lag ?? 0) > 1000 ? Inspect.warn(text) : text
                }.joined(separator: " ")
            var row = [
                s.key, String(s.info.length), Inspect.age(ofID: s.info.firstEntryID),
                Inspect.age(ofID: s.info.lastEntryID)
            ]
            if format.wide {
                row += [
                    s.info.lastEntryID ?? "-",
                    s.info.lastEntryID.flatMap(Inspect.milliseconds(ofID:)).map(format.time(ms:)) ?? "-"
                ]
            }
            return row + [groupText]
        }
        let header = ["STREAM", "LENGTH", "FIRST", "LAST"] + (format.wide ? ["LAST_ID", "LAST_AT"] : []) + ["GROUPS"]
        print(Inspect.table(header, rows))
    }
}
