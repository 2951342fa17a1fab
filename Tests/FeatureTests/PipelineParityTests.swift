import FeatureEngine
import Foundation
import MarketData
import ServiceKit
import TEModels
import TERedis
import TestSupport
import Testing

/// A recording's ticks as `ingest` produces them: MarketData's reader and normaliser, each message
/// with its recorded receive time (the `ts_ns` header `te replay` sets) and key.
enum NormalizedRecording {
    static func ticks(_ path: String) throws -> [Tick] {
        let reader = try RecordingReader(path: path)
        var normalizer = MarketNormalizer()
        var out: [Tick] = []
        while let message = try reader.next() {
            if case .ticks(let ticks) = normalizer.normalize(
                payload: message.payload, receiveTsNs: message.tsNs, key: message.key)
            {
                out += ticks
            }
        }
        return out
    }
}

@Suite("feature-pipeline equals te features", .serialized)
struct PipelineParityTests {
    /// spot_ethusdt_20240808 through the real path — `te replay --speed max` into a topic of the test's own
    /// → `ingest` → `te:ticks` → `feature-pipeline` (SIGKILLed a third of the way and restarted, so the
    /// rebuild from te:ticks is on the path) → `te:features` — against `te features` on the recording file
    /// itself: every row, every feature, bit for bit, and the same warm flags.
    @Test(
        "replay → ingest → feature-pipeline equals te features, across a SIGKILL and restart", .timeLimit(.minutes(5)))
    func parityAcrossRestart() async throws {
        let recording = try RecordedData.file("binance/spot_ethusdt_20240808.gz")
        let ticks = try NormalizedRecording.ticks(recording)
        #expect(ticks.count > 25_000)
        #expect(ticks.contains { $0.bids != nil && $0.bids!.count > 1 })  // real depth from the synced book

        // The offline side: `te features` over the recording file.
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            TestEnv.uniqueName("features").replacingOccurrences(of: ":", with: "-"))
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let csvPath = dir.appendingPathComponent("features.csv").path
        let offline = try ChildProcess.built("te", arguments: ["features", recording, "--output", csvPath])
        #expect(try await offline.waitForExit(timeout: .seconds(120)) == 0, "\(offline.output())")
        let csv = try String(contentsOfFile: csvPath, encoding: .utf8)
        let rows = csv.split(separator: "\n").dropFirst().map { FeatureCSV.parse($0) }
        #expect(rows.allSatisfy { $0 != nil })
        let expected = rows.compactMap { $0 }
        // Warm flags are not in the CSV: the same engine in process gives them.
        var engine = FeatureEngine(windowMs: 5000)
        var expectedWarm: [Bool] = []
        for tick in ticks { if case .snapshot(let s) = engine.apply(tick) { expectedWarm.append(s.warm) } }
        #expect(expected.count == expectedWarm.count)
        #expect(expected.count > 20_000)

        // The streaming side: ingest subscribed first, feature-pipeline, then the replay.
        let pipeline = try await LivePipeline("parity")
        defer { Task { await pipeline.close() } }
        let redis = pipeline.redis
        let ingest = try await pipeline.startIngest()
        let first = try pipeline.start("feature-pipeline", ["STREAM_BATCH_SIZE": "200", "FEATURE_TTL_SEC": "600"])
        let replay = Task { try await pipeline.replay(recording) }
        let partway = try await TestEnv.eventually(timeout: .seconds(120)) {
            (try? await redis.xlen(StreamKey.features)) ?? 0 >= expected.count / 3
        }
        #expect(partway, "feature-pipeline: \(first.output().suffix(2000))\ningest: \(ingest.output().suffix(2000))")
        first.kill9()
        try await first.waitForExit()

        let second = try pipeline.start("feature-pipeline", ["STREAM_BATCH_SIZE": "200", "FEATURE_TTL_SEC": "600"])
        try await replay.value
        let done = try await TestEnv.eventually(timeout: .seconds(180), every: .milliseconds(200)) {
            guard try await redis.xlen(StreamKey.ticks) >= ticks.count else { return false }
            return try await pipeline.drained(StreamKey.ticks, group: "feature-pipeline")
        }
        #expect(done, "feature-pipeline: \(second.output().suffix(2000))\ningest: \(ingest.output().suffix(2000))")
        // ingest wrote exactly the recording's ticks (nothing lost, nothing twice, nothing dead-lettered).
        #expect(try await redis.xlen(StreamKey.ticks) == ticks.count)
        #expect(try await redis.xlen(StreamKey.dlq) == 0)
        second.terminate()
        ingest.terminate()
        #expect(try await second.waitForExit() == 0)
        #expect(try await ingest.waitForExit(timeout: .seconds(20)) == 0)
        #expect(second.output().contains("feature windows rebuilt from the stream"))

        let streamed = try await pipeline.messages(FeatureSnapshot.self, in: StreamKey.features)
        #expect(streamed.count == expected.count)
        var mismatches = 0
        for (i, (s, row)) in zip(streamed, expected).enumerated() {
            let same =
                FeatureCSV.Row(s) == row && s.features.values.map(\.bitPattern) == row.features.map(\.bitPattern)
                && s.tradeVolume.bitPattern == row.tradeVolume.bitPattern && s.warm == expectedWarm[i]
            if !same {
                mismatches += 1
                if mismatches <= 3 {
                    Issue.record("row \(i): streamed \(s) vs offline \(row), warm \(expectedWarm[i])")
                }
            }
        }
        #expect(mismatches == 0)

        // The online store holds the latest snapshot, its event time and when it was written, with a TTL.
        let online = try await redis.hgetall(StreamKey.online("ETHUSDT"))
        let latest = try StreamFieldDecoder.decode(FeatureSnapshot.self, from: online)
        #expect(latest == streamed.last)
        #expect(online["written_at_ns"].flatMap { Int64($0) } != nil)
        let ttl = try await redis.ttl(StreamKey.online("ETHUSDT"))
        #expect(ttl != nil && ttl! > 0 && ttl! <= 600)
        // ETH spot: a one-cent tick on ~2,600 USD is ~0.04 bps.
        let spreads = streamed.map(\.features.spreadBps).sorted()
        #expect(spreads[spreads.count / 2] > 0.01 && spreads[spreads.count / 2] < 1)
    }
}
