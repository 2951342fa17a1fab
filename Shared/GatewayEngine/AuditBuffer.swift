import DequeModule
import Synchronization
import TEModels

/// Audit records waiting for the background writer. Bounded: when full (Redis unreachable for long),
/// new records are refused, counted (`te_gateway_audit_dropped_total`) and reported by `/readyz`;
/// nothing is dropped silently. The request path only appends under a lock and signals the writer.
///
/// `AUDIT_DURABILITY=sync`: `appendDurable` also waits until the writer's XADD of the record is
/// acknowledged (`commit`). Every record appended while a write is in flight goes out in the writer's
/// next pipeline, so concurrent requests share one Redis round trip (group commit). A waiter whose
/// deadline passes is answered false by `expireWaiters`, and its record is withdrawn unless a write of
/// it is already in flight.
public final class AuditBuffer: Sendable {
    struct Entry {
        var record: AuditRecord
        /// Its request gave up waiting before the record was taken for a write: never written.
        var withdrawn = false
    }

    struct Waiter {
        var seq: UInt64
        var deadline: ContinuousClock.Instant
        var continuation: CheckedContinuation<Bool, Never>
    }

    private struct State {
        var entries: Deque<Entry> = []
        /// Sequence number of `entries.first` (records ever removed by `commit`).
        var headSeq: UInt64 = 0
        /// Entries at the head taken by the writer's current write.
        var inFlight = 0
        var dropped = 0
        var withdrawn = 0
        /// In append order, so in seq and deadline order (deadline = append time + a fixed wait).
        var waiters: Deque<Waiter> = []
        var writerWaiting: CheckedContinuation<Void, Never>?
        var lastWriteFailed = false
        /// The writer has stopped: sync waiters would never be answered.
        var closed = false

        /// Buffered, not withdrawn.
        var live: Int { entries.count - withdrawnInBuffer }
        var withdrawnInBuffer = 0
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
        let (accepted, writer, depth) = state.withLock { s in enqueue(record, &s) }
        afterEnqueue(accepted: accepted, writer: writer, depth: depth)
        return accepted
    }

    /// Appends `record` and waits until it is in Redis (true), or until `wait` has passed or the buffer
    /// is full (false: the caller must not answer the decision as audited).
    public func appendDurable(_ record: AuditRecord, wait: Duration) async -> Bool {
        await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
            let (accepted, writer, depth) = state.withLock { s -> (Bool, CheckedContinuation<Void, Never>?, Int) in
                if s.closed { return (false, nil, s.live) }
                let result = enqueue(record, &s)
                if result.0 {
                    let seq = s.headSeq + UInt64(s.entries.count - 1)
                    s.waiters.append(Waiter(seq: seq, deadline: .now + wait, continuation: c))
                }
                return result
            }
            afterEnqueue(accepted: accepted, writer: writer, depth: depth)
            if !accepted { c.resume(returning: false) }
        }
    }

    private func enqueue(_ record: AuditRecord, _ s: inout State) -> (Bool, CheckedContinuation<Void, Never>?, Int) {
        guard s.live < capacity else {
            s.dropped += 1
            return (false, nil, s.live)
        }
        s.entries.append(Entry(record: record))
        let w = s.writerWaiting
        s.writerWaiting = nil
        return (true, w, s.live)
    }

    private func afterEnqueue(accepted: Bool, writer: CheckedContinuation<Void, Never>?, depth: Int) {
        metrics?.auditBufferDepth.record(depth)
        if !accepted { metrics?.auditDropped.increment() }
        writer?.resume()
    }

    public var depth: Int { state.withLock { $0.live } }
    public var dropped: Int { state.withLock { $0.dropped } }
    /// Records whose request stopped waiting (sync mode) before they were written: answered 503.
    public var withdrawn: Int { state.withLock { $0.withdrawn } }
    /// The last write to Redis failed: records are waiting.
    public var degraded: Bool { state.withLock { $0.lastWriteFailed } }
    public var isFull: Bool { state.withLock { $0.live >= capacity } }

    /// Waits until at least one record is buffered (or the task is cancelled), then takes up to `max`
    /// entries from the head for a write, without removing them: `commit` removes them once written,
    /// `markFailed` hands them back. Returns the records to write (withdrawn ones skipped) and how many
    /// entries they span.
    func nextBatch(max: Int) async -> (records: [AuditRecord], entries: Int) {
        while !Task.isCancelled {
            if let batch = takeBatch(max: max) { return batch }
            await withTaskCancellationHandler {
                await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                    let resumeNow = state.withLock { s in
                        if !s.entries.isEmpty { return true }
                        s.writerWaiting = c
                        return false
                    }
                    if resumeNow { c.resume() }
                }
            } onCancel: {
                let w = state.withLock { s in
                    let w = s.writerWaiting
                    s.writerWaiting = nil
                    return w
                }
                w?.resume()
            }
        }
        return takeBatch(max: max) ?? ([], 0)
    }

    private func takeBatch(max: Int) -> (records: [AuditRecord], entries: Int)? {
        state.withLock { s in
            guard !s.entries.isEmpty else { return nil }
            var records: [AuditRecord] = []
            var spanned = 0
            for entry in s.entries {
                if records.count == max { break }
                spanned += 1
                if !entry.withdrawn { records.append(entry.record) }
            }
            s.inFlight = spanned
            return (records, spanned)
        }
    }

    /// The first `entries` entries are in Redis: remove them and release their waiters.
    func commit(entries count: Int, written: Int) {
        let (released, depth): ([CheckedContinuation<Bool, Never>], Int) = state.withLock { s in
            let n = min(count, s.entries.count)
            for entry in s.entries.prefix(n) where entry.withdrawn { s.withdrawnInBuffer -= 1 }
            s.entries.removeFirst(n)
            s.headSeq += UInt64(n)
            s.inFlight = 0
            s.lastWriteFailed = false
            var released: [CheckedContinuation<Bool, Never>] = []
            while let first = s.waiters.first, first.seq < s.headSeq {
                released.append(s.waiters.removeFirst().continuation)
            }
            return (released, s.live)
        }
        for c in released { c.resume(returning: true) }
        metrics?.auditBufferDepth.record(depth)
        metrics?.auditWritten.increment(by: Int64(written))
    }

    func markFailed() {
        state.withLock { s in
            s.lastWriteFailed = true
            s.inFlight = 0
        }
    }

    /// The writer has stopped (shutdown): every waiter is answered false, and so is every later
    /// `appendDurable`.
    func close() {
        let waiters: [CheckedContinuation<Bool, Never>] = state.withLock { s in
            s.closed = true
            defer { s.waiters.removeAll() }
            return s.waiters.map(\.continuation)
        }
        for c in waiters { c.resume(returning: false) }
    }

    /// Answers false to every waiter whose deadline has passed, withdrawing its record unless it is in
    /// the write in flight (then it may still reach Redis: a 503 that was audited anyway). Returns the
    /// next waiter's deadline, nil when none waits.
    func expireWaiters(now: ContinuousClock.Instant) -> ContinuousClock.Instant? {
        let (expired, next): ([CheckedContinuation<Bool, Never>], ContinuousClock.Instant?) = state.withLock { s in
            var expired: [CheckedContinuation<Bool, Never>] = []
            while let first = s.waiters.first, first.deadline <= now {
                s.waiters.removeFirst()
                expired.append(first.continuation)
                let index = Int(first.seq - s.headSeq)
                if index >= s.inFlight, index < s.entries.count, !s.entries[index].withdrawn {
                    s.entries[index].withdrawn = true
                    s.withdrawnInBuffer += 1
                    s.withdrawn += 1
                }
            }
            return (expired, s.waiters.first?.deadline)
        }
        for c in expired { c.resume(returning: false) }
        return next
    }
}
