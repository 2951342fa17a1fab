import Foundation
import TEModels
import TERedis
import TestSupport
import Testing

/// `te top` in a real pseudo-terminal (tmux) while a recording flows through the real binaries.
@Suite("te top", .serialized, .timeLimit(.minutes(5)))
struct TopCommandTests {
    static let recording = RecordedData.path("binance/usdm_btcusdt_20240718.gz")

    /// A tmux server of the test's own (its own socket), so nothing of the user's tmux is touched.
    let socket = "te-top-test-\(UInt32.random(in: 0...UInt32.max))"

    func tmux(_ arguments: [String]) async throws -> (status: Int32, output: String) {
        let process = try ChildProcess("/usr/bin/tmux", arguments: ["-L", socket] + arguments)
        let status = try await process.waitForExit(timeout: .seconds(10))
        return (status, process.output())
    }

    @Test("the live view shows each stage up or down, its rates while the replay runs, the streams, and q quits")
    func liveView() async throws {
        let pipeline = try await LivePipeline("top")
        defer { Task { await pipeline.close() } }
        let ports = (ingest: try TestEnv.freePort(), features: try TestEnv.freePort(), strategy: try TestEnv.freePort())
        let strategies = repositoryRoot.appendingPathComponent("deploy/strategies/default.json").path
        let services = [
            try await pipeline.startIngest(ports.ingest),
            try pipeline.start("feature-pipeline", ["METRICS_PORT": String(ports.features)]),
            try pipeline.start(
                "strategy-engine", ["METRICS_PORT": String(ports.strategy), "STRATEGIES_FILE": strategies])
        ]
        defer { for s in services { s.terminate() } }
        let closed = try TestEnv.freePort()
        let targets = [
            "ingest=127.0.0.1:\(ports.ingest)", "feature-pipeline=127.0.0.1:\(ports.features)",
            "strategy-engine=127.0.0.1:\(ports.strategy)", "opportunity-aggregator=127.0.0.1:\(closed)",
            "outcome-tracker=127.0.0.1:\(closed)", "audit-writer=127.0.0.1:\(closed)", "gateway=127.0.0.1:\(closed)"
        ].joined(separator: ",")
        let session = "te-top-\(UInt32.random(in: 0...UInt32.max))"
        let te = TestEnv.binDirectory.appendingPathComponent("te").path
        let command = "REDIS_URL=\(pipeline.redisURL) \(te) top --interval 0.3 --targets \(targets)"
        // The first tmux command forks the server, which keeps the client's inherited descriptors open, so
        // Foundation never sees that client end: start it without waiting and ask the server instead.
        // (A ChildProcess kills its process when released: keep the starter to the end of the test.)
        let starter = try ChildProcess(
            "/usr/bin/tmux",
            arguments: ["-L", socket, "new-session", "-d", "-s", session, "-x", "200", "-y", "30", command])
        defer {
            _ = try? ChildProcess("/usr/bin/tmux", arguments: ["-L", socket, "kill-server"])
            withExtendedLifetime(starter) {}
        }
        #expect(
            await TestEnv.eventually(timeout: .seconds(10)) {
                (try? await tmux(["has-session", "-t", session]).status) == 0
            })
        func screen() async throws -> String { try await tmux(["capture-pane", "-p", "-t", session]).output }
        /// The cells of the stage's row, "" past its end (so a screen without the row fails the expectation,
        /// not the test process).
        func cells(_ screen: String, _ stage: String) -> [String] {
            let row =
                screen.split(separator: "\n").first { $0.hasPrefix(stage + " ") }.map {
                    $0.split(separator: " ").map(String.init)
                } ?? []
            return row + Array(repeating: "", count: max(0, 8 - row.count))
        }

        let replay = Task { try await pipeline.replay(Self.recording) }
        // While the replay flows: feature-pipeline reads ticks at a rate (IN/s a number above 0) and writes features.
        var seen = ""
        let flowing = await TestEnv.eventually(timeout: .seconds(120), every: .milliseconds(200)) {
            seen = (try? await screen()) ?? ""
            let row = cells(seen, "feature-pipeline")
            return row[1] == "up" && !row[2].isEmpty && !row[3].isEmpty && row[2] != "-" && row[2] != "0"
                && row[3] != "-" && row[3] != "0"
        }
        #expect(flowing, "\(seen)")
        try await replay.value
        let expected = try recordingTicks(Self.recording).count
        let ticks = try await TestEnv.eventually(timeout: .seconds(120), every: .milliseconds(250)) {
            guard try await pipeline.redis.xlen(StreamKey.ticks) == expected else { return false }
            guard try await pipeline.drained(StreamKey.ticks, group: "feature-pipeline") else { return false }
            return try await pipeline.drained(StreamKey.features, group: "strategy-engine")
        }
        #expect(ticks)
        let length = try await pipeline.redis.xlen(StreamKey.ticks)
        let count = length >= 1000 ? String(format: "%.1fk", Double(length) / 1000) : String(length)
        // A frame drawn after the drain: lag 0 alone can also be an earlier frame's, taken between two of
        // ingest's batches, whose stream length is not the final one yet.
        let settled = await TestEnv.eventually(timeout: .seconds(30), every: .milliseconds(200)) {
            seen = (try? await screen()) ?? ""
            let features = cells(seen, "feature-pipeline")
            return features[1] == "up" && features[4] == "0" && cells(seen, "strategy-engine")[1] == "up"
                && seen.contains("te:ticks \(count)")
        }
        #expect(settled, "up with lag 0 once drained: \(seen)")
        #expect(cells(seen, "ingest")[1] == "up", "\(seen)")
        #expect(cells(seen, "strategy-engine")[1] == "up", "\(seen)")
        #expect(cells(seen, "opportunity-aggregator")[1] == "down", "\(seen)")
        #expect(cells(seen, "gateway")[1] == "down", "\(seen)")
        #expect(seen.contains("te:ticks \(count)"), "te:ticks has \(length) entries: \(seen)")
        #expect(seen.contains("te:dlq") == false || seen.contains("te:dlq 0"), "\(seen)")

        // q quits and gives the terminal back: the session's only window ends with te top.
        _ = try await tmux(["send-keys", "-t", session, "q"])
        let quit = await TestEnv.eventually(timeout: .seconds(10), every: .milliseconds(100)) {
            (try? await tmux(["has-session", "-t", session]).status) != 0
        }
        let last = (try? await screen()) ?? ""
        #expect(quit, "te top still running after q: \(last)")
    }

    @Test("te top --once prints one plain frame (no escape codes) with every stage")
    func once() async throws {
        let closed = try TestEnv.freePort()
        let targets = [
            "ingest", "feature-pipeline", "strategy-engine", "opportunity-aggregator", "outcome-tracker",
            "audit-writer", "gateway"
        ]
        .map { "\($0)=127.0.0.1:\(closed)" }.joined(separator: ",")
        let result = try await runTe(
            ["top", "--once", "--interval", "0.2", "--targets", targets],
            environment: ["REDIS_URL": try TestEnv.redisURL()])
        #expect(result.status == 0, "\(result.output)")
        #expect(!result.output.contains("\u{1B}"), "\(result.output)")
        for stage in targets.split(separator: ",").map({ String($0.split(separator: "=")[0]) }) {
            #expect(
                result.output.contains("\(stage) ")
                    && result.output.split(separator: "\n").contains {
                        $0.hasPrefix(stage + " ") && $0.contains("down")
                    },
                "\(stage): \(result.output)")
        }
        let bad = try await runTe(["top", "--once", "--targets", "nosuch=1.2.3.4:5"])
        #expect(bad.status != 0)
        #expect(bad.output.contains("'nosuch=1.2.3.4:5' is not name=host:port"), "\(bad.output)")
    }
}
