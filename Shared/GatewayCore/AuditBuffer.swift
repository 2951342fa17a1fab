import DequeModule
import Synchronization
import TEModels

/// Audit records waiting for the background writer. Bounded: when full (Redis unreachable for long),
/// new records are dropped, counted (`te_gateway_audit_dropped_total`) and reported by `/readyz`;
/// nothing is dropped silently. The request path only appends under a lock and signals the writer.
public final class AuditBuffer: Sendable {
    private struct State {
        var records: Deque<AuditRecord> = []
        var dropped: Int = 0
        var waiter: CheckedContinuation<Void, Never>?
        var lastWriteFailed = false
    }

    public let capacity: Int
    private let state = Mutex(State())
    let metrics: GatewayMetrics?

    public init(capacity: Int, metrics: GatewayMetrics?) {
        self.capacity = max(1, capacity)
        self.metrics = metrics
    }

    /// Returns false when the record was dropped because the buffer is full.
    @discardableResult
    public func append(_ record: AuditRecord) -> Bool {
        let (accepted, waiter, depth): (Bool, CheckedContinuation<Void, Never>?, Int) = state.withLock { s in
            guard s.records.count < capacity else {
                s.dropped += 1
                return (false, nil, s.records.count)
            }
            s.records.append(record)
            let w = s.waiter
            s.waiter = nil
            return (true, w, s.records.count)
        }
        metrics?.auditBufferDepth.set(Double(depth))
        if !accepted { metrics?.auditDropped.increment() }
        waiter?.resume()
        return accepted
    }

    public var depth: Int { state.withLock { $0.records.count } }
    public var dropped: Int { state.withLock { $0.dropped } }
    /// The last write to Redis failed: records are waiting.
    public var degraded: Bool { state.withLock { $0.lastWriteFailed } }

    /// Waits until at least one record is buffered (or the task is cancelled), then returns up to `max`
    /// from the head without removing them: they are removed by `commit` once written.
    func nextBatch(max: Int) async -> [AuditRecord] {
        while !Task.isCancelled {
            let batch = state.withLock { s in Array(s.records.prefix(max)) }
            if !batch.isEmpty { return batch }
            await withTaskCancellationHandler {
                await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                    let resumeNow = state.withLock { s in
                        if !s.records.isEmpty { return true }
                        s.waiter = c
                        return false
                    }
                    if resumeNow { c.resume() }
                }
            } onCancel: {
                let w = state.withLock { s in
                    let w = s.waiter
                    s.waiter = nil
                    return w
                }
                w?.resume()
            }
        }
        return state.withLock { s in Array(s.records.prefix(max)) }
    }

    func commit(count: Int) {
        let depth = state.withLock { s in
            s.records.removeFirst(min(count, s.records.count))
            s.lastWriteFailed = false
            return s.records.count
        }
        metrics?.auditBufferDepth.set(Double(depth))
        metrics?.auditWritten.increment(by: Int64(count))
    }

    func markFailed() { state.withLock { $0.lastWriteFailed = true } }
}
