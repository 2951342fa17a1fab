import Foundation
import TERedis
import TestSupport
import Testing

@Suite("te streams and te tail", .serialized, .timeLimit(.minutes(2)))
struct StreamCommandCLITests {
    let redis: RedisClient
    let environment: [String: String]

    init() throws {
        redis = RedisClient(configuration: try TestEnv.redisConfiguration(), name: "cli-test")
        environment = ["REDIS_URL": try TestEnv.redisURL()]
    }

    /// Five entries at ids 1000-0 … 5000-0 (milliseconds since the epoch) and a group that read two of them.
    func makeStream() async throws -> String {
        let stream = TestEnv.uniqueName("cli")
        for i in 1...5 {
            _ = try await redis.send(RedisCommand(["XADD", stream, "\(i * 1000)-0", "n", String(i), "kind", "quote"]))
        }
        try await redis.xgroupCreate(stream: stream, group: "readers", startID: "0")
        _ = try await redis.xreadgroup(group: "readers", consumer: "c1", streams: [(stream, ">")], count: 2)
        return stream
    }

    @Test("te streams: a row per stream with its length and groups; -o json gives the same as numbers")
    func streams() async throws {
        let stream = try await makeStream()
        defer {
            Task { [redis] in
                _ = try? await redis.del([stream])
                redis.close()
            }
        }
        let table = try await runTe(["streams", "--match", stream], environment: environment)
        #expect(table.status == 0, "\(table.output)")
        let cells = try #require(row(table.output, startingWith: stream), "\(table.output)")
        #expect(cells[1] == "5")
        #expect(table.output.contains("readers[pending 2, lag 3, consumers 1]"), "\(table.output)")

        let json = try await runTe(["streams", "--match", stream, "-o", "json"], environment: environment)
        #expect(json.status == 0, "\(json.output)")
        let list = try #require(jsonOutput(json.output) as? [[String: Any]], "\(json.output)")
        #expect(list.count == 1)
        #expect(list.first?["stream"] as? String == stream)
        #expect(list.first?["length"] as? Int == 5)
        #expect(list.first?["first_entry_id"] as? String == "1000-0")
        #expect(list.first?["last_entry_id"] as? String == "5000-0")
        let group = try #require((list.first?["groups"] as? [[String: Any]])?.first)
        #expect(group["name"] as? String == "readers")
        #expect(group["pending"] as? Int == 2)
        #expect(group["lag"] as? Int == 3)

        let wide = try await runTe(["streams", "--match", stream, "-o", "wide", "--utc"], environment: environment)
        #expect(wide.output.contains("1970-01-01 00:00:05.000Z"), "the last entry's time in UTC: \(wide.output)")

        let none = try await runTe(["streams", "--match", stream + "-nothing*", "-o", "json"], environment: environment)
        #expect(none.status == 0)
        #expect((jsonOutput(none.output) as? [Any])?.isEmpty == true, "\(none.output)")
    }

    @Test("te tail: the last N with their times, --since/--until ranges by id or time, -o json lines")
    func tail() async throws {
        let stream = try await makeStream()
        defer {
            Task { [redis] in
                _ = try? await redis.del([stream])
                redis.close()
            }
        }
        func ids(_ output: String) -> [String] {
            output.split(separator: "\n").compactMap { line in
                line.split(separator: " ").first(where: { $0.hasSuffix("-0") }).map(String.init)
            }
        }
        let last2 = try await runTe(["tail", stream, "-n", "2", "--utc"], environment: environment)
        #expect(last2.status == 0, "\(last2.output)")
        #expect(ids(last2.output) == ["4000-0", "5000-0"], "\(last2.output)")
        #expect(last2.output.hasPrefix("1970-01-01 00:00:04.000Z 4000-0 n=4 kind=quote"), "\(last2.output)")

        let range = try await runTe(
            ["tail", stream, "--since", "2000", "--until", "3000-0", "-n", "10"], environment: environment)
        #expect(ids(range.output) == ["2000-0", "3000-0"], "\(range.output)")

        let iso = try await runTe(
            ["tail", stream, "--since", "1970-01-01T00:00:03Z", "-n", "2"], environment: environment)
        #expect(ids(iso.output) == ["3000-0", "4000-0"], "\(iso.output)")

        // Relative: every entry is from 1970, so "the last 5 minutes" holds none.
        let recent = try await runTe(["tail", stream, "--since", "5m"], environment: environment)
        #expect(recent.status == 0)
        #expect(ids(recent.output).isEmpty, "\(recent.output)")

        let json = try await runTe(["tail", stream, "-n", "3", "-o", "json"], environment: environment)
        let lines = json.output.split(separator: "\n").compactMap { jsonOutput(String($0)) as? [String: Any] }
        #expect(lines.count == 3, "\(json.output)")
        #expect(lines.map { $0["id"] as? String } == ["3000-0", "4000-0", "5000-0"])
        #expect(lines.first?["time_ms"] as? Int == 3000)
        #expect((lines.first?["fields"] as? [String: String]) == ["n": "3", "kind": "quote"])

        let bad = try await runTe(["tail", stream, "--since", "yesterday"], environment: environment)
        #expect(bad.status != 0)
        #expect(bad.output.contains("--since 'yesterday'"), "\(bad.output)")
    }

    @Test(
        "te tail on a missing stream, on a key of another type, and te against an unreachable Redis: one line, exit 1")
    func failures() async throws {
        let missing = try await runTe(["tail", "te:nosuch-\(UUID().uuidString)"], environment: environment)
        #expect(missing.status == 1)
        #expect(missing.output.hasPrefix("te: no stream te:nosuch-"), "\(missing.output)")
        #expect(missing.output.split(separator: "\n").count == 1, "\(missing.output)")

        let hash = TestEnv.uniqueName("cli-hash")
        _ = try await redis.send(RedisCommand(["HSET", hash, "a", "1"]))
        defer {
            Task { [redis] in
                _ = try? await redis.del([hash])
                redis.close()
            }
        }
        let wrongType = try await runTe(["tail", hash], environment: environment)
        #expect(wrongType.status == 1)
        #expect(wrongType.output == "te: \(hash) is a hash, not a stream\n", "\(wrongType.output)")

        let down = "redis://127.0.0.1:\(try TestEnv.freePort())/0"
        for command in [["streams"], ["tail", "te:ticks"], ["pending", "te:ticks", "g"], ["dlq", "list"]] {
            let result = try await runTe(command, environment: ["REDIS_URL": down])
            #expect(result.status == 1, "\(command): \(result.output)")
            #expect(result.output.hasPrefix("te: "), "\(command): \(result.output)")
            #expect(result.output.contains("Connection refused"), "\(command): \(result.output)")
            #expect(result.output.split(separator: "\n").count == 1, "\(command): \(result.output)")
        }
    }

    @Test("te pending and te dlq list: -o json")
    func pendingAndDLQJSON() async throws {
        let stream = try await makeStream()
        let dlq = TestEnv.uniqueName("cli-dlq")
        _ = try await redis.xadd(
            dlq,
            fields: [
                ("v", "1"), ("stage", "feature-pipeline"), ("reason", "missing field bid"), ("payload", "{\"x\":1}"),
                ("source", stream), ("ts_ns", "1723161254087891268")
            ])
        defer {
            Task { [redis] in
                _ = try? await redis.del([stream, dlq])
                redis.close()
            }
        }
        let pending = try await runTe(["pending", stream, "readers", "-o", "json"], environment: environment)
        #expect(pending.status == 0, "\(pending.output)")
        let summary = try #require(jsonOutput(pending.output) as? [String: Any], "\(pending.output)")
        #expect(summary["pending"] as? Int == 2)
        #expect((summary["consumers"] as? [String: Int]) == ["c1": 2])
        let entries = try #require(summary["entries"] as? [[String: Any]])
        #expect(entries.map { $0["id"] as? String } == ["1000-0", "2000-0"])
        #expect(entries.allSatisfy { $0["deliveries"] as? Int == 1 && ($0["idle_ms"] as? Int ?? -1) >= 0 })

        let letters = try await runTe(["dlq", "list", "--stream", dlq, "-o", "json"], environment: environment)
        #expect(letters.status == 0, "\(letters.output)")
        let list = try #require(jsonOutput(letters.output) as? [[String: Any]], "\(letters.output)")
        #expect(list.count == 1)
        #expect(list.first?["stage"] as? String == "feature-pipeline")
        #expect(list.first?["reason"] as? String == "missing field bid")
        #expect(list.first?["payload"] as? String == "{\"x\":1}")
        #expect(list.first?["source"] as? String == stream)
    }

    @Test("shell completion scripts are generated for bash, zsh and fish")
    func completion() async throws {
        for shell in ["bash", "zsh", "fish"] {
            let result = try await runTe(["--generate-completion-script", shell])
            #expect(result.status == 0, "\(shell): \(result.output)")
            #expect(result.output.contains("tail") && result.output.contains("streams"), "\(shell)")
        }
    }
}
