import ServiceKit
import TEModels
import TERedis
import Testing

/// W3C `traceparent` parsing and the stream stages' `tp` handoff with tracing off (this test process
/// never bootstraps a tracer). The exported spans are checked end to end in GatewayTraceTests and
/// StreamTraceTests.
@Suite("trace context (no I/O)")
struct TraceHeadersTests {
    static let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    @Test func theTraceIDOfAWellFormedTraceparent() {
        #expect(TraceHeaders.traceID(ofParent: Self.valid) == "4bf92f3577b34da6a3ce929d0e0e4736")
        #expect(TraceHeaders.isSampled(Self.valid))
        #expect(!TraceHeaders.isSampled("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"))
    }

    @Test(arguments: [
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  // no flags
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  // another version
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  // upper case
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  // zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  // zero parent id
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",  // not hex
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  // separator
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-"  // trailing
    ])
    func aMalformedTraceparentHasNoTraceID(_ text: String) {
        #expect(TraceHeaders.traceID(ofParent: text) == nil)
    }

    @Test func tracingOffPassesACarriedContextOnUnchangedAndStartsNone() {
        #expect(!Traces.enabled)
        #expect(StreamTrace.head("ingest tick") == nil)
        let carried = StreamTrace.stage("feature-pipeline tick", parent: Self.valid)
        #expect(carried.span == nil && carried.tp == Self.valid)
        let none = StreamTrace.stage("feature-pipeline tick", parent: nil)
        #expect(none.span == nil && none.tp == nil)
        let malformed = StreamTrace.stage("feature-pipeline tick", parent: "00-zz")
        #expect(malformed.span == nil && malformed.tp == nil)
    }

    @Test func aTraceContextGoesLastInTheOutputEntry() throws {
        var output = StageOutput()
        let letter = DeadLetter(stage: "t", reason: "r", payload: "p", tsNs: 1)
        try output.add(letter, to: "out", maxLen: nil, tp: Self.valid)
        try output.add(letter, to: "out", maxLen: nil)
        let traced = output.commands[0].arguments.map { String(decoding: $0, as: UTF8.self) }
        let plain = output.commands[1].arguments.map { String(decoding: $0, as: UTF8.self) }
        #expect(traced.suffix(2) == ["tp", Self.valid])
        #expect(Array(traced.dropLast(2)) == plain)
        #expect(!plain.contains("tp"))
    }
}
