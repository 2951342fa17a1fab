import ServiceKit
import ServiceLifecycle
import Synchronization
import Testing

/// `BackgroundTasks` without servers: jobs run at once and side by side, a graceful shutdown refuses new jobs
/// and returns only after the accepted ones have finished.
@Suite(.timeLimit(.minutes(1))) struct BackgroundTasksTests {
    /// Two jobs that each wait for the other finish only if they run at the same time (a second worker starts
    /// when the first is busy); later jobs reuse the idle workers.
    @Test func jobsRunConcurrentlyAndWorkersAreReused() async {
        let tasks = BackgroundTasks()
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await tasks.run() }
            for round in 0..<3 {
                let a = Latch()
                let b = Latch()
                let done = Latch(count: 2)
                #expect(
                    tasks.submit {
                        a.open()
                        await b.wait()
                        done.open()
                    })
                #expect(
                    tasks.submit {
                        b.open()
                        await a.wait()
                        done.open()
                    })
                await done.wait()
                #expect(done.isOpen, "round \(round)")
            }
            group.cancelAll()
        }
    }

    @Test func gracefulShutdownRefusesNewJobsAndWaitsForTheTakenOnes() async throws {
        let tasks = BackgroundTasks()
        let started = Latch()
        let release = Latch()
        let finished = Mutex(false)
        let group = ServiceGroup(
            configuration: .init(
                services: [tasks], gracefulShutdownSignals: [], cancellationSignals: [], logger: .init(label: "t")))
        try await withThrowingTaskGroup(of: Void.self) { running in
            running.addTask { try await group.run() }
            #expect(
                tasks.submit {
                    started.open()
                    await release.wait()
                    finished.withLock { $0 = true }
                })
            await started.wait()
            await group.triggerGracefulShutdown()
            // Shutdown has begun once a submit is refused; the taken job is still running.
            while tasks.submit({}) { await Task.yield() }
            #expect(finished.withLock { $0 } == false)
            release.open()
            try await running.waitForAll()
        }
        #expect(finished.withLock { $0 }, "run() returned only after the taken job")
    }
}

/// Opens after `count` calls of `open()`; `wait` returns once open.
final class Latch: Sendable {
    private let state: Mutex<(remaining: Int, waiters: [CheckedContinuation<Void, Never>])>

    init(count: Int = 1) { state = Mutex((count, [])) }

    var isOpen: Bool { state.withLock { $0.remaining <= 0 } }

    func open() {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.remaining -= 1
            guard s.remaining <= 0 else { return [] }
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiters { w.resume() }
    }

    func wait() async {
        await withCheckedContinuation { c in
            let now = state.withLock { s in
                if s.remaining <= 0 { return true }
                s.waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }
}
