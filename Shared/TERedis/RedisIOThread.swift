import Dispatch
import Foundation
import Logging
import Synchronization

/// The one thread that drives a client's hiredis connection. hiredis calls block (connect, write,
/// read with a socket timeout, `BLOCK` reads), so they must never run on Swift's cooperative pool:
/// jobs are queued here and their results handed back through continuations.
final class RedisIOThread: Sendable {
    typealias Job = @Sendable (RedisConnection) -> Void

    private struct Queue {
        var jobs: [Job?] = []
        var head = 0
        var closed = false
    }

    /// A reference to the queue, so the thread's closure can share it with `submit`.
    private final class SharedQueue: Sendable {
        let state = Mutex(Queue())
    }

    private let queue = SharedQueue()
    private let wakeup = DispatchSemaphore(value: 0)

    init(name: String, configuration: RedisConfiguration, logger: Logger) {
        let thread = Thread { [queue, wakeup] in
            let connection = RedisConnection(configuration: configuration, logger: logger)
            while true {
                wakeup.wait()
                let job: Job?? = queue.state.withLock { q in
                    guard q.head < q.jobs.count else { return .none }
                    let job = q.jobs[q.head]
                    q.head += 1
                    if q.head > 256, q.head * 2 > q.jobs.count {
                        q.jobs.removeFirst(q.head)
                        q.head = 0
                    }
                    return .some(job)
                }
                guard case .some(let next) = job else { continue }
                // A nil job is the close marker: everything queued before it has run.
                guard let next else { break }
                next(connection)
            }
            connection.disconnect()
        }
        thread.name = "redis-\(name)"
        thread.start()
    }

    /// Queues `job`; false when the thread was closed (the job will not run).
    @discardableResult
    func submit(_ job: @escaping Job) -> Bool {
        let accepted = queue.state.withLock { q -> Bool in
            guard !q.closed else { return false }
            q.jobs.append(job)
            return true
        }
        if accepted { wakeup.signal() }
        return accepted
    }

    /// Runs the jobs already queued, then disconnects and ends the thread.
    func close() {
        let first = queue.state.withLock { q -> Bool in
            guard !q.closed else { return false }
            q.closed = true
            q.jobs.append(nil)
            return true
        }
        if first { wakeup.signal() }
    }
}
