import TEModels
import TERedis
import Testing

@testable import ServiceKit

/// The stream worker's decisions, event by event, without a server or a clock: `t0` plus offsets.
@Suite("StreamWorkerCore (no I/O)")
struct StreamWorkerCoreTests {
    typealias Core = StreamWorkerCore<Job>
    let t0 = ContinuousClock.now

    func core(maxDeliveries: Int = 3) -> Core {
        var c = StreamWorkerConfiguration(consumerName: "me", batchSize: 10, maxDeliveries: maxDeliveries)
        c.retryBackoff = .milliseconds(100)
        return Core(configuration: c, now: t0, jitter: { 0 })
    }

    func entry(_ id: Int, _ n: Int, tag: String = "ok") -> StreamEntry {
        StreamEntry(id: "\(id)-0", fields: [("v", "1"), ("n", String(n)), ("tag", tag)])
    }

    func at(_ ms: Int) -> ContinuousClock.Instant { t0 + .milliseconds(ms) }

    /// Start → prepare → claim → gauges → the first read (own pending entries from 0).
    func started(_ core: inout Core) -> Core.Action {
        #expect(core.event(.started, now: t0).kind == "prepare")
        #expect(core.event(.prepared, now: t0).kind == "claim")
        #expect(core.event(.claimed(0), now: t0).kind == "refreshGauges")
        return core.event(.gaugesRefreshed, now: t0)
    }

    /// Past the empty pending re-read: reading new entries.
    func running() -> Core {
        var c = core()
        #expect(read(started(&c)) == Core.ReadRequest(cursor: "0", count: 10, block: nil))
        #expect(read(c.event(.read([]), now: t0))?.cursor == ">")
        return c
    }

    @Test func startsWithOwnPendingEntriesThenBlocksOnNewOnes() {
        var c = core()
        #expect(read(started(&c)) == Core.ReadRequest(cursor: "0", count: 10, block: nil))
        #expect(read(c.event(.read([]), now: t0)) == Core.ReadRequest(cursor: ">", count: 10, block: .seconds(1)))
        #expect(!c.readingPending)
    }

    @Test func theNextBatchIsReadWhileTheStageHandlesOneAndHandedOverOnlyAfterItsCommit() {
        var c = running()
        guard case .handle(let batch, let ahead?) = c.event(.read([entry(1, 1), entry(2, 2)]), now: t0) else {
            Issue.record("expected the batch handed over with a read-ahead")
            return
        }
        #expect(batch.map(\.message.n) == [1, 2])
        #expect(batch.map(\.deliveries) == [1, 1])
        #expect(ahead == Core.ReadRequest(cursor: ">", count: 10, block: .seconds(1)))
        var out = StageOutput()
        out.append(.xadd("out", maxLen: nil, fields: [("n", "1")]))
        guard case .commit(let commit) = c.event(.handled(.success(out)), now: t0) else {
            Issue.record("expected the batch's commit")
            return
        }
        #expect(commit.acks == ["1-0", "2-0"])
        #expect(commit.outputs.count == 1)
        // The commit's outcome first, then the read-ahead's: its batch goes to the stage at once.
        #expect(c.event(.committed(failedCommands: 0), now: t0).kind == "awaitReadAhead")
        #expect(c.takeNotes().contains(.processed(2)))
        #expect(handled(c.event(.read([entry(3, 3)]), now: t0))?.map(\.message.n) == [3])
    }

    @Test func aTraceContextWrittenLastReachesTheStageAndAnUnknownFieldIsIgnored() {
        var c = running()
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        let traced = StreamEntry(id: "1-0", fields: [("v", "1"), ("n", "1"), ("tag", "ok"), ("tp", tp)])
        let extra = StreamEntry(id: "2-0", fields: [("v", "1"), ("n", "2"), ("tag", "ok"), ("src", "0:7")])
        let batch = handled(c.event(.read([traced, extra, entry(3, 3)]), now: t0))
        #expect(batch?.map(\.message.n) == [1, 2, 3])
        #expect(batch?.map(\.traceParent) == [tp, nil, nil])
    }

    @Test func deadLettersUndecodableEntriesAndAcknowledgesTrimmedOnes() {
        var c = core()
        _ = started(&c)
        let bad = StreamEntry(id: "1-0", fields: [("v", "1"), ("n", "x"), ("tag", "ok")])
        let trimmed = StreamEntry(id: "2-0", fields: [], isDeleted: true)
        guard case .lookUpDeliveries(let start, let end, let count) = c.event(.read([bad, trimmed]), now: t0) else {
            Issue.record("a pending re-read looks up delivery counts")
            return
        }
        #expect((start, end, count) == ("1-0", "2-0", 2))
        guard case .commit(let commit) = c.event(.deliveries(["1-0": 2]), now: t0) else {
            Issue.record("expected the dead letter's commit")
            return
        }
        #expect(commit.acks == ["2-0"])
        #expect(commit.deadLetters.map(\.reason) == ["undecodable: field 'n': expected an integer, got \"x\""])
        #expect(commit.deadLetters.map(\.deliveries) == [2])
        #expect(commit.acknowledged == ["2-0", "1-0"])
        // The pending cursor moved past the batch.
        #expect(
            read(c.event(.committed(failedCommands: 0), now: t0))
                == Core.ReadRequest(cursor: "2-0", count: 10, block: nil))
        #expect(c.takeNotes().contains(.deadLettered(id: "1-0", reason: commit.deadLetters[0].reason, label: "decode")))
    }

    @Test func aPoisonEntryIsFoundAloneRetriedAfterBackoffAndDeadLetteredOnItsLastDelivery() {
        var c = running()
        #expect(c.event(.read([entry(1, 1), entry(2, 2, tag: "poison"), entry(3, 3)]), now: t0).readAhead != nil)
        // The batch fails: each entry alone, while the read-ahead goes on.
        let alone = c.event(.handled(.failure(PoisonError(n: 2))), now: t0)
        #expect(handled(alone)?.map(\.message.n) == [1])
        #expect(alone.readAhead == nil)
        guard case .commit(let first) = c.event(.handled(.success(.none)), now: t0) else {
            Issue.record("expected the first entry's commit")
            return
        }
        #expect(first.acks == ["1-0"])
        #expect(handled(c.event(.committed(failedCommands: 0), now: t0))?.map(\.message.n) == [2])
        #expect(handled(c.event(.handled(.failure(PoisonError(n: 2))), now: t0))?.map(\.message.n) == [3])
        #expect(c.pendingRetryAt == at(100))
        guard case .commit(let third) = c.event(.handled(.success(.none)), now: t0) else {
            Issue.record("expected the third entry's commit")
            return
        }
        #expect(third.acks == ["3-0"])
        // The read-ahead started with the batch comes next: nothing new was there.
        #expect(c.event(.committed(failedCommands: 0), now: at(20)).kind == "awaitReadAhead")
        // Until the retry is due, new entries are read, blocking no longer than until then.
        #expect(
            read(c.event(.read([]), now: at(20))) == Core.ReadRequest(cursor: ">", count: 10, block: .milliseconds(80)))
        #expect(c.event(.read([]), now: at(100)).isRead(cursor: "0"))

        // Deliveries 2 and 3: it fails again, then it is dead-lettered with the stage's last error.
        var now = 100
        for deliveries in 2...3 {
            #expect(c.event(.read([entry(2, 2, tag: "poison")]), now: at(now)).kind == "lookUpDeliveries")
            #expect(handled(c.event(.deliveries(["2-0": deliveries]), now: at(now)))?.map(\.deliveries) == [deliveries])
            let next = c.event(.handled(.failure(PoisonError(n: 2))), now: at(now))
            if deliveries < 3 {
                #expect(c.lastErrors["2-0"] == "job 2 is poison")
                #expect(read(next)?.cursor == "2-0")
                #expect(read(c.event(.read([]), now: at(now)))?.cursor == ">")
                now += 1000
                #expect(c.event(.read([]), now: at(now)).isRead(cursor: "0"))
            } else {
                guard case .commit(let dead) = next else {
                    Issue.record("expected the dead letter")
                    return
                }
                #expect(dead.deadLetters.map(\.reason) == ["max deliveries exceeded: job 2 is poison"])
                #expect(dead.deadLetters.map(\.deliveries) == [3])
                #expect(dead.acknowledged == ["2-0"])
                _ = c.event(.committed(failedCommands: 0), now: at(now))
                #expect(c.lastErrors.isEmpty)
            }
        }
    }

    @Test func anEntryDeliveredTooOftenWithoutAnErrorIsDeadLetteredUnhandled() {
        var c = core(maxDeliveries: 3)
        _ = started(&c)
        _ = c.event(.read([entry(1, 1)]), now: t0)
        guard case .commit(let commit) = c.event(.deliveries(["1-0": 4]), now: t0) else {
            Issue.record("expected the dead letter")
            return
        }
        #expect(
            commit.deadLetters.map(\.reason) == ["max deliveries exceeded: delivered 3 times without acknowledgement"])
        #expect(commit.deadLetters.map(\.label) == ["max_deliveries"])
    }

    @Test func aFailedCommitDropsTheReadAheadBacksOffAndReReadsPendingFromTheStart() {
        var c = running()
        #expect(c.event(.read([entry(1, 1)]), now: t0).readAhead != nil)
        guard case .commit = c.event(.handled(.success(.none)), now: t0) else {
            Issue.record("expected a commit")
            return
        }
        #expect(c.event(.redisFailed("connection lost", noGroup: false), now: t0).kind == "awaitReadAhead")
        // The read-ahead's entries are this consumer's pending entries now: dropped, re-read later.
        guard case .backOff(let delay) = c.event(.read([entry(2, 2)]), now: t0) else {
            Issue.record("expected a backoff")
            return
        }
        #expect(delay == .milliseconds(100))
        #expect(c.event(.backedOff, now: at(100)).isRead(cursor: "0"))
        #expect(c.takeNotes().contains(.batchFailed("connection lost")))
    }

    @Test func backoffDoublesPerConsecutiveFailureAndALostGroupIsRecreated() {
        var c = running()
        guard case .backOff(let first) = c.event(.redisFailed("NOGROUP", noGroup: true), now: t0) else {
            Issue.record("expected a backoff")
            return
        }
        #expect(first == .milliseconds(100))
        #expect(c.event(.backedOff, now: at(100)).kind == "prepare")
        guard case .backOff(let second) = c.event(.prepareFailed("down"), now: at(100)) else {
            Issue.record("expected a backoff")
            return
        }
        #expect(second == .milliseconds(200))
        #expect(c.event(.backedOff, now: at(300)).kind == "prepare")
        // Set up again: the failures are over, the pending entries come first.
        #expect(c.event(.prepared, now: at(300)).isRead(cursor: "0"))
        #expect(c.consecutiveFailures == 0)
    }

    @Test func shutdownFinishesTheBatchInHandWithoutReadingAhead() {
        var c = running()
        c.shutdownRequested()
        let handOver = c.event(.read([entry(1, 1)]), now: t0)
        #expect(handled(handOver)?.count == 1)
        #expect(handOver.readAhead == nil)
        guard case .commit(let commit) = c.event(.handled(.success(.none)), now: t0) else {
            Issue.record("expected the batch's commit")
            return
        }
        #expect(commit.acks == ["1-0"])
        #expect(c.event(.committed(failedCommands: 0), now: t0).kind == "stop")
    }

    @Test func aReadAheadAlreadyReadIsFinishedOnShutdownToo() {
        var c = running()
        _ = c.event(.read([entry(1, 1)]), now: t0)
        _ = c.event(.handled(.success(.none)), now: t0)
        _ = c.event(.committed(failedCommands: 0), now: t0)
        c.shutdownRequested()
        #expect(handled(c.event(.read([entry(2, 2)]), now: t0))?.map(\.message.n) == [2])
        #expect(c.event(.handled(.success(.none)), now: t0).committedNothingElse(&c).kind == "stop")
    }

    @Test func claimsRunOnTheirIntervalAndClaimedEntriesAreReReadFromPending() {
        var c = running()
        #expect(c.event(.read([]), now: at(5000)).kind == "claim")
        #expect(c.event(.claimed(4), now: at(5000)).kind == "refreshGauges")
        #expect(c.event(.gaugesRefreshed, now: at(5000)).isRead(cursor: "0"))
        #expect(c.takeNotes().contains(.claimed(4)))
    }

    @Test func aFencedCommitStopsTheWorkerAndDropsItsBatchAndReadAhead() throws {
        var c = running()
        let handOver = c.event(.read([entry(1, 1)]), now: t0)
        #expect(handOver.readAhead != nil)
        guard case .commit = handOver.handledBy(&c, t0) else {
            Issue.record("expected a commit")
            return
        }
        #expect(c.event(.fenced("lease of shard 0 is b's under token 2"), now: t0).kind == "stop")
        #expect(c.takeNotes().contains(.fenced("lease of shard 0 is b's under token 2")))
        #expect(c.shuttingDown && c.readingPending)
    }

    /// A shard's fenced read-ahead refused while its commit went through: the commit counts, then the worker
    /// stops (the read delivered nothing, so nothing of the next batch is in hand).
    @Test func aFencedReadAheadAfterACommittedBatchStopsTheWorker() throws {
        var c = running()
        let handOver = c.event(.read([entry(1, 1)]), now: t0)
        #expect(handOver.readAhead?.cursor == ">")
        guard case .commit = handOver.handledBy(&c, t0) else {
            Issue.record("expected a commit")
            return
        }
        #expect(c.event(.committed(failedCommands: 0), now: t0).kind == "awaitReadAhead")
        let refusal = "read refused: the lease of shard 0 is b's under token 2, ours was 1"
        #expect(c.event(.fenced(refusal), now: t0).kind == "stop")
        let notes = c.takeNotes()
        #expect(notes.contains(.processed(1)) && notes.contains(.fenced(refusal)))
        #expect(c.shuttingDown)
    }

    /// A refused read or claim (no batch in hand) stops the worker at once.
    @Test func aFencedReadOrClaimWithNothingInHandStopsTheWorker() throws {
        for refusal in ["read refused", "claim refused"] {
            var c = running()
            #expect(c.event(.fenced(refusal), now: t0).kind == "stop")
            #expect(c.takeNotes().contains(.fenced(refusal)))
        }
    }

    @Test func aShardCommitWritesOutsideValuesAndDeadLettersBeforeTheFencedStep() throws {
        var c = running()
        _ = c.event(.read([entry(1, 1), entry(2, 2)]), now: t0)
        var out = StageOutput()
        out.append(.xadd("out:{0}", maxLen: nil, fields: [("n", "1")]))
        out.outside.append(RedisCommand("HSET", "latest", "ts_ns", "1"))
        out.deadLetter(id: "2-0", reason: "rejected by stage")
        guard case .commit(let commit) = c.event(.handled(.success(out)), now: t0) else {
            Issue.record("expected a commit")
            return
        }
        let steps = commit.fencedSteps(stream: "in:{0}", group: "g", configuration: c.configuration, tsNs: 42)
        #expect(steps.before.map(\.name) == ["HSET", "XADD"])
        #expect(steps.before[1].description.hasPrefix("XADD te:dlq"))
        #expect(steps.atomic.map(\.description) == ["XADD out:{0} * n 1", "XACK in:{0} g 1-0 2-0"])
        // Without a lease all of it is one MULTI/EXEC, the outside values first.
        let multi = commit.commands(stream: "in:{0}", group: "g", configuration: c.configuration, tsNs: 42)
        #expect(multi.map(\.name) == ["HSET", "XADD", "XADD", "XACK"])
    }

    @Test func theCommitWritesOutputsThenDeadLettersThenOneAck() throws {
        var c = running()
        _ = c.event(.read([entry(1, 1), entry(2, 2, tag: "reject")]), now: t0)
        var out = StageOutput()
        out.append(.xadd("out", maxLen: nil, fields: [("n", "1")]))
        out.deadLetter(id: "2-0", reason: "rejected by stage")
        out.deadLetter(id: "9-0", reason: "not in the batch")
        guard case .commit(let commit) = c.event(.handled(.success(out)), now: t0) else {
            Issue.record("expected a commit")
            return
        }
        let commands = commit.commands(stream: "in", group: "g", configuration: c.configuration, tsNs: 42)
        #expect(commands.map(\.name) == ["XADD", "XADD", "XACK"])
        #expect(commands[1].description.hasPrefix("XADD te:dlq MAXLEN ~ 100000 * v 1 stage g reason rejected by stage"))
        // The stage's dead letter is acknowledged with the batch, once.
        #expect(commands[2].description == "XACK in g 1-0 2-0")
        #expect(c.takeNotes().contains(.unknownDeadLetterID("9-0")))
    }

    /// A stage with output of its own (`callsIdle`) is asked after each empty read of new entries; its output
    /// is committed with no acknowledgement, and nothing is asked of a stage without it, nor on shutdown.
    @Test func anEmptyReadAsksAnIdleStageForOutputAndCommitsItWithoutAcks() {
        var plain = running()
        #expect(read(plain.event(.read([]), now: t0))?.cursor == ">")

        var configuration = StreamWorkerConfiguration(consumerName: "me", batchSize: 10)
        configuration.retryBackoff = .milliseconds(100)
        var c = Core(configuration: configuration, now: t0, callsIdle: true, jitter: { 0 })
        #expect(read(started(&c))?.cursor == "0")
        // An empty re-read of own pending entries is not idleness: the next read is of new entries.
        #expect(read(c.event(.read([]), now: t0))?.cursor == ">")
        #expect(c.event(.read([]), now: t0).kind == "idle")
        #expect(read(c.event(.idled(.success(.none)), now: t0))?.cursor == ">")
        #expect(c.event(.read([]), now: t0).kind == "idle")
        var out = StageOutput()
        out.append(.xadd("out", maxLen: nil, fields: [("n", "1")]))
        guard case .commit(let commit) = c.event(.idled(.success(out)), now: t0) else {
            Issue.record("expected a commit")
            return
        }
        #expect(commit.outputs.count == 1 && commit.acknowledged.isEmpty && commit.processed == 0)
        #expect(read(c.event(.committed(failedCommands: 0), now: t0))?.cursor == ">")
        // A failing idle stage backs off; on shutdown an empty read stops.
        #expect(c.event(.read([]), now: t0).kind == "idle")
        #expect(c.event(.idled(.failure(TestError())), now: t0).kind == "backOff")
        #expect(read(c.event(.backedOff, now: at(100)))?.cursor == ">")
        c.shutdownRequested()
        #expect(c.event(.read([]), now: at(100)).kind == "stop")
    }

}

extension StreamWorkerCore.Action {
    /// A `.handle` answered with an empty output.
    func handledBy(_ core: inout StreamWorkerCore<Input>, _ now: ContinuousClock.Instant) -> Self {
        guard case .handle = self else { return self }
        return core.event(.handled(.success(.none)), now: now)
    }

    /// The read-ahead a `.handle` starts.
    var readAhead: StreamWorkerCore<Input>.ReadRequest? {
        if case .handle(_, let next) = self { return next }
        return nil
    }

    func isRead(cursor: String) -> Bool {
        if case .read(let r) = self { return r.cursor == cursor }
        return false
    }

    /// After a commit with nothing more to do: the action that follows its outcome.
    func committedNothingElse(_ core: inout StreamWorkerCore<Input>) -> Self {
        if case .commit = self { return core.event(.committed(failedCommands: 0), now: .now) }
        return self
    }
}

func read<I>(_ a: StreamWorkerCore<I>.Action) -> StreamWorkerCore<I>.ReadRequest? {
    if case .read(let r) = a { return r }
    return nil
}
func handled<I>(_ a: StreamWorkerCore<I>.Action) -> [StreamDelivery<I>]? {
    if case .handle(let b, _) = a { return b }
    return nil
}

struct TestError: Error {}
