import Dispatch
import Foundation
import Synchronization

/// One dedicated OS thread that runs submitted jobs in submission order: the one way to run a blocking C
/// call (hiredis, libpq, librdkafka's poll/commit/flush/metadata, a decompressor's pipe) off Swift's
/// cooperative pool, whose few threads every task in the process shares.
///
/// A thread per connection, not a shared pool (NIOThreadPool): a hiredis context or a PGconn is not
/// thread-safe and a blocking read holds it, so its calls are serial anyway. A thread of its own keeps
/// them in order without a lock around the connection, lets the connection live on that thread alone,
/// and one connection blocked (a `BLOCK` read, a COPY, a reconnect wait) never delays another's calls.
public final class BlockingExecutor: Sendable {
    public typealias Job = @Sendable () -> Void

    private struct Queue {
        var jobs: [Job?] = []
        var head = 0
        var closed = false
    }

    /// A reference to the queue, so the thread's closure shares it without retaining the executor.
    private final class SharedQueue: Sendable {
        let state = Mutex(Queue())
        let wakeup = DispatchSemaphore(value: 0)
    }

    private let queue = SharedQueue()

    public init(name: String) {
        let thread = Thread { [queue] in
            // For `top -H` and debuggers; set here too: on Linux a name set before `start` may not reach
            // the OS thread.
            Thread.current.name = name
            while true {
                queue.wakeup.wait()
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
                // A nil job is the shutdown marker: everything queued before it has run.
                guard let next else { break }
                next()
            }
        }
        thread.name = name
        thread.start()
    }

    deinit { shutdown() }

    /// Queues `job`; false after `shutdown` (the job will not run).
    @discardableResult
    public func submit(_ job: @escaping Job) -> Bool {
        let accepted = queue.state.withLock { q -> Bool in
            guard !q.closed else { return false }
            q.jobs.append(job)
            return true
        }
        if accepted { queue.wakeup.signal() }
        return accepted
    }

    /// Runs `body` on the thread and returns its value; nil after `shutdown` (`body` did not run).
    public func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T? {
        await withCheckedContinuation { (continuation: CheckedContinuation<T?, Never>) in
            if !submit({ continuation.resume(returning: body()) }) { continuation.resume(returning: nil) }
        }
    }

    /// Runs the jobs already queued, then ends the thread. Later submissions are refused.
    public func shutdown() {
        let first = queue.state.withLock { q -> Bool in
            guard !q.closed else { return false }
            q.closed = true
            q.jobs.append(nil)
            return true
        }
        if first { queue.wakeup.signal() }
    }

    /// Runs one blocking call on a thread of its own (a rare call that must not queue behind a
    /// connection's long-running jobs: a metadata probe, a flush, a one-off read).
    public static func runAlone<T: Sendable>(name: String, _ body: @escaping @Sendable () -> T) async -> T {
        let executor = BlockingExecutor(name: name)
        defer { executor.shutdown() }
        // Cannot be nil: nothing shuts this executor down before the job is queued.
        return await executor.run(body)!
    }
}
