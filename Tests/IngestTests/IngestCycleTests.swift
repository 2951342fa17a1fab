import TEKafka
import Testing

@testable import Ingest

/// `IngestCycle` driven by hand: each test plays the events a run would report and checks the actions.
@Suite("ingest cycle: assignment, fences, write, commit, backoff, shutdown (no servers)")
struct IngestCycleTests {
    typealias Position = IngestCycle.Position
    let t0 = ContinuousClock.now

    func batch(_ partition: Int32, _ offsets: ClosedRange<Int64>) -> [Position] {
        offsets.map { Position(partition: partition, offset: $0) }
    }

    /// Reports `event` and expects `action` back.
    func step(
        _ cycle: inout IngestCycle, _ event: IngestCycle.Event, _ action: IngestCycle.Action,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        let next = cycle.event(event)
        #expect(next == action, sourceLocation: sourceLocation)
    }

    func offset(_ partition: Int32, _ next: Int64) -> KafkaOffset {
        KafkaOffset(topic: "ticks", partition: partition, offset: next)
    }

    /// A cycle past its first batch of partition 0 (offsets 0…9, fences none): that batch is in flight.
    func running(groups: Int = 2) -> IngestCycle {
        var cycle = IngestCycle(topic: "ticks", groups: groups)
        step(&cycle, .started, .poll)
        step(&cycle, .polled(batch(0, 0...9), generation: 1, now: t0), .restore(partition: 0))
        step(
            &cycle, .restored(partition: 0, fences: Array(repeating: -1, count: groups)),
            .build([0: Array(repeating: -1, count: groups)]))
        step(&cycle, .built(writes: true), .send)
        step(&cycle, .sent, .poll)
        return cycle
    }

    @Test("a batch is committed only after its write landed, at most every commit interval")
    func commitAfterWrite() {
        var cycle = running()
        #expect(cycle.uncommitted.isEmpty)
        // The next batch, within the interval: built, then the first write is awaited before sending.
        step(&cycle, .polled(batch(0, 10...19), generation: 1, now: t0 + .milliseconds(50)), .build([0: [9, 9]]))
        step(&cycle, .built(writes: true), .awaitWrite)
        step(&cycle, .landed, .send)
        #expect(cycle.uncommitted == [0: 10])
        step(&cycle, .sent, .poll)
        // Past the interval: commit what landed (not the batch in flight) before building.
        step(&cycle, .polled(batch(0, 20...29), generation: 1, now: t0 + .milliseconds(250)), .commit([offset(0, 10)]))
        step(&cycle, .committed, .build([0: [19, 19]]))
        #expect(cycle.uncommitted.isEmpty)
        // An idle poll lands the write in flight and commits it at once.
        step(&cycle, .built(writes: true), .awaitWrite)
        step(&cycle, .landed, .send)
        step(&cycle, .sent, .poll)
        step(&cycle, .polled([], generation: 1, now: t0 + .milliseconds(260)), .awaitWrite)
        step(&cycle, .landed, .commit([offset(0, 30)]))
        step(&cycle, .committed, .poll)
        step(&cycle, .polled([], generation: 1, now: t0 + .milliseconds(270)), .poll)
    }

    @Test("a rebalance mid-batch: the write in flight lands before the fences are read again")
    func rebalanceMidBatch() {
        var cycle = running()
        // Generation 2: partition 0 may have been written by another instance meanwhile.
        step(
            &cycle, .polled(batch(0, 40...49) + batch(1, 5...6), generation: 2, now: t0 + .milliseconds(10)),
            .awaitWrite)
        step(&cycle, .landed, .restore(partition: 0))
        #expect(cycle.fences.isEmpty)
        // The other instance wrote partition 0 up to 44 in shard 0 and 41 in the dead-letter group.
        step(&cycle, .restored(partition: 0, fences: [44, 41]), .restore(partition: 1))
        step(&cycle, .restored(partition: 1, fences: [-1, -1]), .build([0: [44, 41], 1: [-1, -1]]))
        #expect(IngestCycle.written(Position(partition: 0, offset: 41), fences: cycle.fences))
        #expect(!IngestCycle.written(Position(partition: 0, offset: 42), fences: cycle.fences))
        step(&cycle, .built(writes: true), .send)
        #expect(cycle.fences == [0: [49, 49], 1: [6, 6]])
        #expect(cycle.uncommitted == [0: 10])
        // The same generation again: nothing is read.
        step(&cycle, .sent, .poll)
        step(
            &cycle, .polled(batch(1, 7...8), generation: 2, now: t0 + .milliseconds(20)),
            .build([0: [49, 49], 1: [6, 6]]))
    }

    @Test("a batch the fences already hold writes nothing and is committable at once")
    func fenceRefused() {
        var cycle = IngestCycle(topic: "ticks", groups: 3)
        step(&cycle, .started, .poll)
        step(&cycle, .polled(batch(2, 0...4), generation: 7, now: t0), .restore(partition: 2))
        step(&cycle, .restored(partition: 2, fences: [9, 4, 6]), .build([2: [9, 4, 6]]))
        #expect((0...4).allSatisfy { IngestCycle.written(Position(partition: 2, offset: $0), fences: [2: [9, 4, 6]]) })
        step(&cycle, .built(writes: false), .poll)
        #expect(cycle.uncommitted == [2: 5])
        #expect(cycle.fences == [2: [9, 4, 6]])
    }

    @Test("Redis down and back: a failed write is re-sent after a doubling backoff; a failed restore is retried")
    func redisDownAndBack() {
        var cycle = running()
        step(&cycle, .polled(batch(0, 10...19), generation: 1, now: t0), .build([0: [9, 9]]))
        step(&cycle, .built(writes: true), .awaitWrite)
        step(&cycle, .writeFailed, .sleep(.milliseconds(100)))
        step(&cycle, .slept, .resend)
        step(&cycle, .sent, .awaitWrite)
        step(&cycle, .writeFailed, .sleep(.milliseconds(200)))
        step(&cycle, .slept, .resend)
        step(&cycle, .sent, .awaitWrite)
        #expect(cycle.uncommitted.isEmpty)
        step(&cycle, .landed, .send)
        #expect(cycle.uncommitted == [0: 10])
        step(&cycle, .sent, .poll)
        // The backoff starts again from the first delay; restores back off the same way.
        step(&cycle, .polled(batch(3, 0...1), generation: 1, now: t0), .awaitWrite)
        step(&cycle, .writeFailed, .sleep(.milliseconds(100)))
        step(&cycle, .slept, .resend)
        step(&cycle, .sent, .awaitWrite)
        step(&cycle, .landed, .restore(partition: 3))
        step(&cycle, .restoreFailed, .sleep(.milliseconds(100)))
        step(&cycle, .slept, .restore(partition: 3))
        step(&cycle, .restoreFailed, .sleep(.milliseconds(200)))
        step(&cycle, .slept, .restore(partition: 3))
        step(&cycle, .restored(partition: 3, fences: [-1, -1]), .build([0: [19, 19], 3: [-1, -1]]))
    }

    @Test("the backoff doubles up to its cap")
    func backoffCap() {
        let backoff = IngestCycle.Backoff()
        #expect(
            (1...8).map(backoff.delay)
                == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5, 5].map { Duration.milliseconds(Int($0 * 1000)) })
    }

    @Test("a failed commit is retried while retriable, then left to the next commit, which carries it again")
    func commitFailure() {
        var cycle = running()
        step(&cycle, .polled([], generation: 1, now: t0), .awaitWrite)
        step(&cycle, .landed, .commit([offset(0, 10)]))
        step(&cycle, .commitFailed(retriable: true), .sleep(.milliseconds(50)))
        step(&cycle, .slept, .commit([offset(0, 10)]))
        step(&cycle, .commitFailed(retriable: false), .poll)
        #expect(cycle.uncommitted == [0: 10])
        step(&cycle, .polled([], generation: 1, now: t0 + .milliseconds(10)), .commit([offset(0, 10)]))
        for attempt in 1..<5 {
            step(&cycle, .commitFailed(retriable: true), .sleep(.milliseconds(50 << (attempt - 1))))
            step(&cycle, .slept, .commit([offset(0, 10)]))
        }
        step(&cycle, .commitFailed(retriable: true), .poll)
        #expect(cycle.uncommitted == [0: 10])
    }

    @Test("shutdown: the write in flight lands and is committed before the consumer closes")
    func shutdownWithWriteInFlight() {
        var cycle = running()
        step(&cycle, .shutdown, .awaitWrite)
        #expect(cycle.stopping)
        step(&cycle, .landed, .commit([offset(0, 10)]))
        step(&cycle, .committed, .close)
    }

    @Test("shutdown while Redis is down: the failed batch is neither written nor committed")
    func shutdownDuringWriteBackoff() {
        var cycle = running()
        step(&cycle, .polled([], generation: 1, now: t0), .awaitWrite)
        step(&cycle, .writeFailed, .sleep(.milliseconds(100)))
        step(&cycle, .shutdown, .close)
        #expect(cycle.uncommitted.isEmpty)
    }

    @Test("shutdown while restoring: what landed is committed, the polled batch is re-read later")
    func shutdownWhileRestoring() {
        var cycle = running()
        step(&cycle, .polled([], generation: 1, now: t0), .awaitWrite)
        step(&cycle, .landed, .commit([offset(0, 10)]))
        step(&cycle, .committed, .poll)
        step(&cycle, .polled(batch(1, 0...3), generation: 2, now: t0), .restore(partition: 1))
        step(&cycle, .shutdown, .close)
    }

    @Test("a failed poll lands the write in flight, commits nothing and fails")
    func pollFailure() {
        var cycle = running()
        step(&cycle, .pollFailed, .awaitWrite)
        step(&cycle, .landed, .fail)
    }
}

@Suite("ingest fence groups: one slot per script")
struct IngestFenceGroupTests {
    @Test("a group's fence and books share its stream's hash tag")
    func groupKeys() {
        #expect(
            FencedBatch.groupKey("te:ingest:offsets:ticks", stream: "te:ticks:{0}") == "te:ingest:offsets:ticks:{0}")
        #expect(FencedBatch.groupKey("te:ingest:books:ticks", stream: "te:ticks") == "te:ingest:books:ticks:{te:ticks}")
    }
}
