import ServiceLifecycle
import Synchronization

/// Work a caller starts but does not wait for (the gateway's decisions on the fast path, its batched Triton
/// calls, its async shadow/canary comparisons, readiness probes), run as child tasks of this service instead of
/// unstructured `Task {}`s, so it belongs to the ServiceGroup. At graceful shutdown it takes no more work and
/// returns once the work it took has finished: the services listed before it stop after it, so they still see
/// what that work produced (the audit writer drains the comparison's record).
///
/// The child tasks are workers that stay for the life of the service: a job handed to an idle worker resumes it
/// directly, one task switch like `Task {}`, where a stream drained by one consumer task would add a second
/// (measured: 10 µs vs 21 µs p50 from submit to start, bench/results/gateway-tasks.md). A job finding no idle
/// worker queues and starts one more, so there are as many workers as jobs ever ran at once.
public final class BackgroundTasks: Service, Sendable {
    public typealias Job = @Sendable () async -> Void

    private struct State {
        var queue: [Job] = []
        var head = 0
        var idle: [CheckedContinuation<Job?, Never>] = []
        var finished = false
    }

    private let state = Mutex(State())
    /// One element per worker to start.
    private let starts: AsyncStream<Void>
    private let startContinuation: AsyncStream<Void>.Continuation

    public init() {
        (starts, startContinuation) = AsyncStream.makeStream(of: Void.self)
    }

    /// Queues `job`; false once shutdown has begun (the job will not run: the caller does without it).
    @discardableResult
    public func submit(_ job: @escaping Job) -> Bool {
        let worker: CheckedContinuation<Job?, Never>?? = state.withLock { s in
            if s.finished { return .none }
            if let idle = s.idle.popLast() { return .some(idle) }
            s.queue.append(job)
            // Under the lock: a start asked for before `finish` is still delivered to `run`.
            startContinuation.yield()
            return .some(nil)
        }
        switch worker {
        case .none: return false
        case .some(let idle): idle?.resume(returning: job)
        }
        return true
    }

    public func run() async {
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await withDiscardingTaskGroup { group in
                    for await _ in starts {
                        group.addTask { while let job = await self.next() { await job() } }
                    }
                }
            } onGracefulShutdown: {
                self.finish()
            }
        } onCancel: {
            self.finish()
        }
    }

    /// The next job for a worker: a queued one, else the next submitted (waiting idle); nil once finished and
    /// nothing is queued.
    private func next() async -> Job? {
        await withCheckedContinuation { (c: CheckedContinuation<Job?, Never>) in
            let job: Job?? = state.withLock { s in
                if s.head < s.queue.count {
                    let job = s.queue[s.head]
                    s.head += 1
                    if s.head == s.queue.count {
                        s.queue.removeAll(keepingCapacity: true)
                        s.head = 0
                    }
                    return .some(job)
                }
                if s.finished { return .some(nil) }
                s.idle.append(c)
                return .none
            }
            if let job { c.resume(returning: job) }
        }
    }

    /// Takes no more jobs; idle workers end, busy ones end after the queue is empty.
    private func finish() {
        let idle = state.withLock { s in
            s.finished = true
            startContinuation.finish()
            defer { s.idle = [] }
            return s.idle
        }
        for worker in idle { worker.resume(returning: nil) }
    }
}
