import ArgumentParser
import TERedis

/// `te streams`: every `te:` stream with its length, first/last entry age, and groups (pending, lag).
struct StreamsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "streams", abstract: "List the te: streams: length, entry ages, consumer groups.")

    @Option(help: "Key pattern.") var match = "te:*"

    func run() async throws {
        let redis = try Inspect.redis()
        defer { redis.close() }
        let keys = try await redis.scan(match: match, type: "stream").sorted()
        var rows: [[String]] = []
        for key in keys {
            let info = try await redis.xinfoStream(key)
            let groups = try await redis.xinfoGroups(key)
            let groupText = groups.isEmpty
                ? Inspect.dim("(no groups)")
                : groups.map { g in
                    let lag = g.lag.map(String.init) ?? "?"
                    let text = "\(g.name)[pending \(g.pending), lag \(lag), consumers \(g.consumers)]"
                    return g.pending > 0 || (g.lag ?? 0) > 1000 ? Inspect.warn(text) : text
                }.joined(separator: " ")
            rows.append([key, String(info.length), Inspect.age(ofID: info.firstEntryID), Inspect.age(ofID: info.lastEntryID), groupText])
        }
        if rows.isEmpty {
            print("no streams match \(match)")
        } else {
            print(Inspect.table(["STREAM", "LENGTH", "FIRST", "LAST", "GROUPS"], rows))
        }
    }
}
