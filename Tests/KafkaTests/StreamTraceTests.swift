import Foundation
import ServiceKit
import TEModels
import TERedis
import TestSupport
import Testing

/// Trace context through the stream stages: the built `ingest` samples ticks at the head of the
/// pipeline (`OTEL_TRACES_SAMPLER_ARG`) and writes a sampled tick's `traceparent` in `tp`; the built
/// `feature-pipeline` continues it on the tick's snapshot. Real Kafka (dev broker), Redis (a private
/// server, see `LivePipeline`), and an OTLP/HTTP receiver in this process.
@Suite("stream traces", .serialized, .timeLimit(.minutes(5)))
struct StreamTraceTests {
    /// `count` quotes of one symbol as Tick JSON lines, 10 ms apart.
    static func quotes(_ count: Int, symbol: String) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            TestEnv.uniqueName("trace").replacingOccurrences(of: ":", with: "-"))
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent("quotes.jsonl").path
        let start: Int64 = 1_723_161_254_000_000_000
        let lines = (0..<count).map { i in
            let bid = 61_800 + Double(i % 7)
            return
                #"{"symbol":"\#(symbol)","ts_ns":\#(start + Int64(i) * 10_000_000),"kind":"quote","bid":\#(bid),"bid_size":\#(1 + Double(i % 5)),"ask":\#(bid + 0.5),"ask_size":2,"venue":"binance"}"#
        }
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test("a sampled tick's trace reaches its snapshot; unsampled ticks carry no tp; a span per stage")
    func sampledTickToSnapshot() async throws {
        let receiver = try await OTLPReceiver()
        defer { receiver.stop() }
        let pipeline = try await LivePipeline("trace")
        defer { Task { await pipeline.close() } }
        let otel = [
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
            "OTEL_TRACES_SAMPLER_ARG": "0.5", "OTEL_BSP_SCHEDULE_DELAY": "100"
        ]
        let count = 200
        let ingest = try await pipeline.startIngest(nil, otel)
        let features = try pipeline.start("feature-pipeline", otel)
        try await pipeline.replay(try Self.quotes(count, symbol: "TRACEUSDT"))
        let done = try await TestEnv.eventually(timeout: .seconds(120), every: .milliseconds(200)) {
            guard try await pipeline.redis.xlen(StreamKey.ticks) >= count else { return false }
            return try await pipeline.drained(StreamKey.ticks, group: "feature-pipeline")
        }
        #expect(done, "ingest:\n\(ingest.output().suffix(2000))\nfeature-pipeline:\n\(features.output().suffix(2000))")

        let ticks = try await pipeline.redis.xrange(StreamKey.ticks, start: "-", end: "+", count: 10_000)
        let snapshots = try await pipeline.redis.xrange(StreamKey.features, start: "-", end: "+", count: 10_000)
        #expect(ticks.count == count && snapshots.count == count)
        // One snapshot per quote, in order: the i-th snapshot is the i-th tick's.
        var sampled: [(tick: String, snapshot: String)] = []
        for (tick, snapshot) in zip(ticks, snapshots) {
            let tickTP = tick.fields.first { $0.0 == "tp" }?.1
            let snapshotTP = snapshot.fields.first { $0.0 == "tp" }?.1
            // Readable text, written last; the messages decode as before.
            _ = try StreamFieldDecoder.decode(Tick.self, from: tick.fields)
            _ = try StreamFieldDecoder.decode(FeatureSnapshot.self, from: snapshot.fields)
            guard let tickTP else {
                #expect(snapshotTP == nil, "an unsampled tick's snapshot carries \(snapshotTP ?? "")")
                continue
            }
            #expect(tick.fields.last?.0 == "tp" && snapshot.fields.last?.0 == "tp")
            let snapshotTPValue = try #require(snapshotTP, "sampled tick \(tick.id) lost its trace on the snapshot")
            #expect(TraceHeaders.traceID(ofParent: tickTP) != nil && TraceHeaders.isSampled(tickTP))
            // Same trace, a new span (the feature-pipeline's).
            #expect(TraceHeaders.traceID(ofParent: snapshotTPValue) == TraceHeaders.traceID(ofParent: tickTP))
            #expect(snapshotTPValue != tickTP)
            sampled.append((tickTP, snapshotTPValue))
        }
        // At a ratio of 0.5 over 200 ticks, both kinds occur (all or none would be a 2^-199 chance).
        #expect(sampled.count > 0 && sampled.count < count, "\(sampled.count) of \(count) sampled")

        // The spans: ingest's root, feature-pipeline's a child of it, parent and ids matching the tp fields.
        let spanID = { (tp: String) in String(tp.split(separator: "-")[2]) }
        let exported = await TestEnv.eventually(timeout: .seconds(20), every: .milliseconds(100)) {
            let ids = Set(receiver.spans.map(\.spanID))
            return sampled.allSatisfy { ids.contains(spanID($0.tick)) && ids.contains(spanID($0.snapshot)) }
        }
        #expect(exported, "\(receiver.spans.count) spans")
        let spans = Dictionary(receiver.spans.map { ($0.spanID, $0) }) { a, _ in a }
        for (tick, snapshot) in sampled.prefix(20) {
            let head = try #require(spans[spanID(tick)])
            let stage = try #require(spans[spanID(snapshot)])
            #expect(head.name == "ingest tick" && head.service == "ingest" && head.parentSpanID == nil)
            #expect(head.attributes["te.symbol"] == "TRACEUSDT")
            #expect(stage.name == "feature-pipeline tick" && stage.service == "feature-pipeline")
            #expect(stage.parentSpanID == head.spanID && stage.traceID == head.traceID)
        }
        // Only sampled ticks make spans downstream: one feature-pipeline span per sampled tick.
        #expect(receiver.spans.filter { $0.name == "feature-pipeline tick" }.count == sampled.count)

        features.terminate()
        ingest.terminate()
        #expect(try await features.waitForExit(timeout: .seconds(20)) == 0)
        #expect(try await ingest.waitForExit(timeout: .seconds(20)) == 0)
    }
}
