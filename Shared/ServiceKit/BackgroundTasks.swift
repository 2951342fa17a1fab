import ServiceLifecycle

/// Work a caller starts but does not wait for (the gateway's async shadow/canary comparison), run as
/// child tasks of this service instead of unstructured `Task {}`s, so it belongs to the ServiceGroup. At
/// graceful shutdown it takes no more work and returns once the work it took has finished: the services
/// listed before it stop after it, so they still see what that work produced (the audit writer drains
/// the comparison's record).
public final class BackgroundTasks: Service, Sendable {
    public typealias Job = @Sendable () async -> Void

    private let jobs: AsyncStream<Job>
    private let continuation: AsyncStream<Job>.Continuation

    public init() {
        (jobs, continuation) = AsyncStream.makeStream(of: Job.self)
    }

    /// Queues `job`; false once shutdown has begun (the job will not run: the caller does without it).
    @discardableResult
    public func submit(_ job: @escaping Job) -> Bool {
        switch continuation.yield(job) {
        case .enqueued: true
        case .terminated, .dropped: false
        @unknown default: false
        }
    }

    public func run() async {
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                for await job in jobs { group.addTask { await job() } }
            }
        } onGracefulShutdown: {
            self.continuation.finish()
        }
    }
}
