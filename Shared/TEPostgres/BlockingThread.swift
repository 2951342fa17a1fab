import Foundation

/// One dedicated OS thread that runs submitted jobs in order. libpq calls block (network I/O,
/// `PQreset`, COPY back-pressure), so they must never run on Swift's cooperative pool, whose few
/// threads every task in the process shares.
final class BlockingThread: Sendable {
    private let jobs = JobQueue()

    init(name: String) {
        let jobs = self.jobs
        let thread = Thread {
            while let job = jobs.next() { job() }
        }
        thread.name = name
        thread.start()
    }

    /// Runs `job` on the thread. After `shutdown()` jobs are still run (so continuations always
    /// resume); the thread exits once the queue is empty.
    func submit(_ job: @escaping @Sendable () -> Void) {
        jobs.push(job)
    }

    /// Lets the thread exit after the queued jobs.
    func shutdown() {
        jobs.finish()
    }

    deinit {
        jobs.finish()
    }
}

/// A FIFO guarded by an NSCondition.
// @unchecked Sendable: every stored property is read and written only while `condition` is locked.
private final class JobQueue: @unchecked Sendable {
    private let condition = NSCondition()
    private var pending: [@Sendable () -> Void] = []
    private var head = 0
    private var finished = false

    func push(_ job: @escaping @Sendable () -> Void) {
        condition.lock()
        pending.append(job)
        condition.signal()
        condition.unlock()
    }

    func finish() {
        condition.lock()
        finished = true
        condition.signal()
        condition.unlock()
    }

    /// Blocks until a job is available; nil once finished and drained.
    func next() -> (@Sendable () -> Void)? {
        condition.lock()
        defer { condition.unlock() }
        while head == pending.count {
            if finished { return nil }
            condition.wait()
        }
        let job = pending[head]
        head += 1
        if head == pending.count {
            pending.removeAll(keepingCapacity: true)
            head = 0
        }
        return job
    }
}
