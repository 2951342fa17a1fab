import Foundation
import Synchronization
import TECore
import Testing

@Suite("BlockingExecutor", .timeLimit(.minutes(1)))
struct BlockingExecutorTests {
    @Test func runsJobsInSubmissionOrderOnOneThreadOffThePool() async {
        let executor = BlockingExecutor(name: "test-order")
        defer { executor.shutdown() }
        let seen = Mutex<[Int]>([])
        let threads = Mutex<Set<pthread_t>>([])
        for i in 0..<500 {
            executor.submit {
                seen.withLock { $0.append(i) }
                threads.withLock { _ = $0.insert(pthread_self()) }
            }
        }
        let last = await executor.run { seen.withLock { $0.count } }
        #expect(last == 500)
        #expect(seen.withLock { $0 } == Array(0..<500))
        let caller = pthread_self()
        #expect(threads.withLock { $0.count == 1 && !$0.contains(caller) })
    }

    @Test func aBlockedJobDoesNotHoldTheCallersThreadAndResultsComeBack() async {
        let executor = BlockingExecutor(name: "test-block")
        defer { executor.shutdown() }
        // A blocking C call's stand-in: usleep holds the executor's thread, not a cooperative one.
        let results = await withTaskGroup(of: Int?.self) { group in
            for i in 0..<4 {
                group.addTask {
                    await executor.run {
                        usleep(1000)
                        return i * i
                    }
                }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        #expect(Set(results.compactMap { $0 }) == [0, 1, 4, 9])
    }

    @Test func shutdownRunsTheQueuedJobsThenRefusesNewOnes() async {
        let executor = BlockingExecutor(name: "test-shutdown")
        let ran = Mutex(0)
        let gate = DispatchSemaphore(value: 0)
        executor.submit { gate.wait() }
        for _ in 0..<10 { executor.submit { ran.withLock { $0 += 1 } } }
        let done = OneShot<Void, Never>()
        executor.submit { done.finish(()) }
        executor.shutdown()
        #expect(executor.submit {} == false)
        #expect(await executor.run { 1 } == nil)
        gate.signal()
        await done.wait()
        #expect(ran.withLock { $0 } == 10)
    }

    @Test func runAloneUsesAThreadOfItsOwn() async {
        let executor = BlockingExecutor(name: "test-other")
        defer { executor.shutdown() }
        let other = await executor.run { pthread_self() }
        let alone = await BlockingExecutor.runAlone(name: "test-alone") { pthread_self() }
        #expect(other != nil && alone != other)
    }
}

@Suite("OneShot", .timeLimit(.minutes(1)))
struct OneShotTests {
    struct Failed: Error, Equatable {
        let reason: String
    }

    @Test func theFirstFinishWinsWhetherItComesBeforeOrAfterTheWait() async throws {
        let early = OneShot<Int, Failed>()
        early.finish(.success(1))
        early.finish(.success(2))
        #expect(early.isFinished)
        #expect(try await early.wait() == 1)

        let late = OneShot<Int, Failed>()
        let (started, waiting) = AsyncStream.makeStream(of: Void.self)
        let waiter = Task { () throws(Failed) -> Int in
            waiting.yield()
            return try await late.wait()
        }
        var iterator = started.makeAsyncIterator()
        await iterator.next()
        late.finish(.failure(Failed(reason: "late")))
        late.finish(.success(3))
        await #expect(throws: Failed(reason: "late")) { try await waiter.value }
    }

    @Test func cancellingTheWaiterFinishesWithTheGivenFailure() async {
        let slot = OneShot<Int, Failed>()
        let waiter = Task { () throws(Failed) -> Int in try await slot.wait(cancelled: Failed(reason: "gave up")) }
        waiter.cancel()
        await #expect(throws: Failed(reason: "gave up")) { try await waiter.value }
        #expect(slot.isFinished)
        slot.finish(.success(1))
    }

    @Test func aNeverFailingSlotHandsOverAValue() async {
        let slot = OneShot<String, Never>()
        Task.detached { slot.finish("ready") }
        #expect(await slot.wait() == "ready")
    }
}
