import TEModels
import TestSupport
import Testing

@testable import GatewayEngine
@testable import GatewayHTTP

/// The audit buffer's sync-durability bookkeeping, without Redis: a waiter is released by the commit of
/// the write that carried its record; an expired one withdraws its record unless that write is in flight.
@Suite(.timeLimit(.minutes(1))) struct AuditBufferTests {
    static func record(_ id: String) -> AuditRecord {
        AuditRecord(
            decisionId: RequestID.random(), requestId: id, tsNs: 1, symbol: "BTCUSDT", decision: .abstain, score: nil,
            source: .abstain, modelName: nil, modelVersion: nil, modelHash: nil, features: nil, featureAgeMs: nil,
            latencyUs: 0)
    }

    @Test func waitersAreReleasedByTheCommitOfTheWriteThatCarriedThem() async throws {
        let buffer = AuditBuffer(capacity: 100, metrics: nil)
        let waiting = (0..<3).map { i in Task { await buffer.appendDurable(Self.record("r\(i)"), wait: .seconds(30)) } }
        #expect(await TestEnv.eventually { buffer.depth == 3 })
        // One write carries all three (group commit); a fourth arrives while it is in flight.
        let (first, spanned) = await buffer.nextBatch(max: 10)
        #expect(first.map(\.requestId).sorted() == ["r0", "r1", "r2"])
        let late = Task { await buffer.appendDurable(Self.record("late"), wait: .seconds(30)) }
        #expect(await TestEnv.eventually { buffer.depth == 4 })
        buffer.commit(entries: spanned, written: first.count)
        for task in waiting { #expect(await task.value) }
        let (second, spanned2) = await buffer.nextBatch(max: 10)
        #expect(second.map(\.requestId) == ["late"])
        buffer.commit(entries: spanned2, written: second.count)
        #expect(await late.value)
        #expect(buffer.depth == 0)
    }

    @Test func anExpiredWaiterWithdrawsItsRecordUnlessItsWriteIsInFlight() async throws {
        let buffer = AuditBuffer(capacity: 100, metrics: nil)
        let inFlight = Task { await buffer.appendDurable(Self.record("in-flight"), wait: .zero) }
        #expect(await TestEnv.eventually { buffer.depth == 1 })
        let (batch, _) = await buffer.nextBatch(max: 10)
        #expect(batch.map(\.requestId) == ["in-flight"])
        let queued = Task { await buffer.appendDurable(Self.record("queued"), wait: .zero) }
        #expect(await TestEnv.eventually { buffer.depth == 2 })
        #expect(buffer.expireWaiters(now: .now) == nil)
        #expect(await inFlight.value == false)
        #expect(await queued.value == false)
        #expect(buffer.withdrawn == 1)
        #expect(buffer.depth == 1)
        // The write failed; the retry carries the in-flight record only (it may already be in Redis).
        buffer.markFailed()
        let (retry, spanned) = await buffer.nextBatch(max: 10)
        #expect(retry.map(\.requestId) == ["in-flight"])
        #expect(spanned == 2)
        buffer.commit(entries: spanned, written: retry.count)
        #expect(buffer.depth == 0)
    }

    @Test func fullOrClosedBufferRefusesAtOnce() async throws {
        let buffer = AuditBuffer(capacity: 1, metrics: nil)
        #expect(buffer.append(Self.record("a")))
        #expect(await buffer.appendDurable(Self.record("b"), wait: .seconds(30)) == false)
        #expect(buffer.dropped == 1)
        let (batch, spanned) = await buffer.nextBatch(max: 10)
        buffer.commit(entries: spanned, written: batch.count)
        let waiting = Task { await buffer.appendDurable(Self.record("c"), wait: .seconds(30)) }
        #expect(await TestEnv.eventually { buffer.depth == 1 })
        buffer.close()
        #expect(await waiting.value == false)
        #expect(await buffer.appendDurable(Self.record("d"), wait: .seconds(30)) == false)
    }
}
