import TECore
import TEKafka

/// ingest's assignment / write / commit / fence cycle as a value: `IngestService` performs each `Action` and
/// reports what happened as the next `Event`. No I/O here, so every path (a rebalance mid-batch, Redis down
/// and back, a refused or failed commit, a shutdown with a write in flight) is tested without servers.
///
/// The rules it enforces:
/// - Commit after write: a batch's Kafka offsets become committable only once its write landed in Redis;
///   commits go out at most every `commitInterval` (and when the topic is idle, and at shutdown).
/// - One write in flight: Redis runs batch N while batch N+1 is polled and built; N+1 is sent only after N
///   landed, so a partition's writes stay in order and a fence never passes a failed batch. A failed write
///   is re-sent after a backoff (safe: the fenced scripts skip what Redis already holds).
/// - Fences: per partition, the last offset written to each fence group (the tick shards, then the
///   dead-letter stream), read from Redis before a partition's first message after every assignment
///   (another instance may have written it meanwhile), and never with a write of ours in flight.
struct IngestCycle {
    /// A Kafka message's place in its topic.
    struct Position: Hashable, Sendable {
        var partition: Int32
        var offset: Int64
    }

    /// Partition → the last offset written to each fence group (-1: none).
    typealias Fences = [Int32: [Int64]]

    enum Event: Equatable {
        case started
        /// A poll returned `batch` (in order; maybe empty) under assignment `generation`.
        case polled([Position], generation: Int, now: ContinuousClock.Instant)
        case pollFailed
        /// A partition's stored fences, one per group.
        case restored(partition: Int32, fences: [Int64])
        case restoreFailed
        /// The batch asked for by `.build` is built; false when it has nothing to write.
        case built(writes: Bool)
        /// The write asked for by `.send` / `.resend` is on its way.
        case sent
        case landed
        case writeFailed
        case committed
        case commitFailed(retriable: Bool)
        case slept
        /// A graceful shutdown was requested (reported instead of performing `.poll`, `.sleep` or `.restore`).
        case shutdown
    }

    enum Action: Equatable {
        case poll
        case restore(partition: Int32)
        /// Build the polled batch's writes against these fences (a message is written to a group only if its
        /// offset is above the partition's fence there).
        case build(Fences)
        /// Wait for the write in flight, then report `.landed` or `.writeFailed`.
        case awaitWrite
        /// Start writing the built batch (it becomes the write in flight).
        case send
        /// Start writing the write in flight again.
        case resend
        case commit([KafkaOffset])
        case sleep(Duration)
        /// Close the consumer and return.
        case close
        /// Close the consumer and throw the poll's error.
        case fail
    }

    /// What to do once the step in between (a commit, a landed write, a backoff) is done.
    private enum Next: Equatable {
        case idle
        /// Commit what landed, then poll.
        case idleCommit
        case assignment
        case restoreNext
        case send
        case stop
        /// After the last commit.
        case closing
        case fail
    }

    private enum Phase: Equatable {
        case idle
        case committing([KafkaOffset], attempt: Int, then: Next)
        case commitBackoff([KafkaOffset], attempt: Int, then: Next)
        case landing(then: Next)
        case writeBackoff(then: Next)
        case resending(then: Next)
        case restoring(Int32)
        case restoreBackoff(Int32)
        case building
        case sending
        case closed
    }

    let topic: String
    /// Fence groups: the tick shards plus the dead-letter stream.
    let groups: Int
    let commitInterval: Duration
    let backoff: Backoff

    private(set) var fences: Fences = [:]
    /// Partition → next offset to commit (its messages are in Redis).
    private(set) var uncommitted: [Int32: Int64] = [:]
    private var generation = -1
    private var phase = Phase.idle
    /// A shutdown or a failed poll: no new batch is read.
    private(set) var stopping = false
    private var batch: [Position] = []
    private var batchGeneration = -1
    private var now: ContinuousClock.Instant?
    private var lastCommit: ContinuousClock.Instant?
    private var restoreQueue: [Int32] = []
    private var restoreAttempt = 0
    /// Offsets the built batch makes committable once it landed.
    private var built: [Int32: Int64] = [:]
    /// The write in flight: the offsets it makes committable, and how often it failed.
    private var inFlight: [Int32: Int64]?
    private var writeAttempt = 0
    private var builtWrites = false

    init(topic: String, groups: Int, commitInterval: Duration = .milliseconds(200), backoff: Backoff = Backoff()) {
        precondition(groups >= 1)
        self.topic = topic
        self.groups = groups
        self.commitInterval = commitInterval
        self.backoff = backoff
    }

    /// Doubling delay with a cap: the wait before retrying Redis (writes, restores) and Kafka commits.
    struct Backoff: Equatable, Sendable {
        /// The shared policy (100 ms doubling to 5 s). Its ceiling, without jitter: the machine stays
        /// deterministic, and one ingest per partition set has no herd to spread out.
        var policy = RetryPolicy(initial: .milliseconds(100), maximum: .seconds(5), jitter: 0)
        /// Commit attempts before a failed commit is left to the next one (commits are cumulative).
        var commitAttempts = 5

        /// The delay before retry `attempt` (1 = after the first failure).
        func delay(_ attempt: Int) -> Duration { policy.ceiling(attempt: max(attempt, 1)) }
    }

    /// Whether a message has nothing left to write: its offset is at or below every group's fence.
    static func written(_ position: Position, fences: Fences) -> Bool {
        guard let f = fences[position.partition], let low = f.min() else { return false }
        return position.offset <= low
    }

    mutating func event(_ event: Event) -> Action {
        switch (event, phase) {
        case (_, .closed):
            preconditionFailure("ingest cycle: \(event) after close")
        case (.started, .idle):
            return .poll

        case (.shutdown, _) where !stopping:
            stopping = true
            if case .writeBackoff = phase {
                // The write failed and is not retried: neither written nor committed, it is re-read after restart.
                inFlight = nil
            }
            return proceed(.stop)

        case (.polled(let positions, let gen, let at), .idle):
            now = at
            if lastCommit == nil { lastCommit = at }
            batch = positions
            batchGeneration = gen
            if positions.isEmpty {
                // Idle topic: what landed is committed now rather than at the next batch.
                if inFlight != nil { return land(then: .idleCommit) }
                return commitOr(.idle)
            }
            if !uncommitted.isEmpty, let last = lastCommit, at - last >= commitInterval {
                return commit(then: .assignment)
            }
            return proceed(.assignment)
        case (.pollFailed, .idle):
            stopping = true
            return proceed(.fail)

        case (.committed, .committing(let offsets, _, let then)):
            for o in offsets where uncommitted[o.partition] == o.offset { uncommitted[o.partition] = nil }
            lastCommit = now
            return proceed(then)
        case (.commitFailed(let retriable), .committing(let offsets, let attempt, let then)):
            if retriable, attempt < backoff.commitAttempts {
                phase = .commitBackoff(offsets, attempt: attempt, then: then)
                return .sleep(backoff.delay(attempt) / 2)
            }
            // Left to the next commit, which carries these partitions' offsets again.
            lastCommit = now
            return proceed(then)
        case (.slept, .commitBackoff(let offsets, let attempt, let then)):
            phase = .committing(offsets, attempt: attempt + 1, then: then)
            return .commit(offsets)

        case (.landed, .landing(let then)):
            for (p, o) in inFlight ?? [:] { uncommitted[p] = max(uncommitted[p] ?? o, o) }
            inFlight = nil
            writeAttempt = 0
            return proceed(then)
        case (.writeFailed, .landing(let then)):
            writeAttempt += 1
            if stopping {
                inFlight = nil
                return proceed(then)
            }
            phase = .writeBackoff(then: then)
            return .sleep(backoff.delay(writeAttempt))
        case (.slept, .writeBackoff(let then)):
            phase = .resending(then: then)
            return .resend
        case (.sent, .resending(let then)):
            return land(then: then)

        case (.restored(let partition, let stored), .restoring(let expected)) where partition == expected:
            precondition(stored.count == groups, "ingest cycle: \(stored.count) fences for \(groups) groups")
            fences[partition] = stored
            restoreQueue.removeFirst()
            restoreAttempt = 0
            return proceed(.restoreNext)
        case (.restoreFailed, .restoring(let partition)):
            restoreAttempt += 1
            phase = .restoreBackoff(partition)
            return .sleep(backoff.delay(restoreAttempt))
        case (.slept, .restoreBackoff(let partition)):
            phase = .restoring(partition)
            return .restore(partition: partition)

        case (.built(let writes), .building):
            built = [:]
            for position in batch {
                built[position.partition] = max(built[position.partition] ?? 0, position.offset + 1)
            }
            // The batch's messages count as written from here on: the next batch is sent only after this
            // one landed, and a failed write is re-sent until it lands (or the process stops, and then
            // the fences are read again by whoever resumes).
            for (p, next) in built {
                fences[p] = (fences[p] ?? Array(repeating: -1, count: groups)).map { max($0, next - 1) }
            }
            builtWrites = writes
            return proceed(.send)
        case (.sent, .sending):
            inFlight = built
            built = [:]
            phase = .idle
            return .poll

        default:
            preconditionFailure("ingest cycle: \(event) in phase \(phase)")
        }
    }

    private mutating func proceed(_ next: Next) -> Action {
        switch next {
        case .idle:
            phase = .idle
            return .poll
        case .idleCommit:
            return commitOr(.idle)
        case .assignment:
            if batchGeneration != generation {
                // The stored fences are read only with no write of ours in flight.
                if inFlight != nil { return land(then: .assignment) }
                generation = batchGeneration
                fences.removeAll(keepingCapacity: true)
            }
            var seen = Set<Int32>()
            restoreQueue = batch.compactMap { position in
                fences[position.partition] == nil && seen.insert(position.partition).inserted ? position.partition : nil
            }
            return proceed(.restoreNext)
        case .restoreNext:
            guard let partition = restoreQueue.first else {
                phase = .building
                return .build(fences)
            }
            if inFlight != nil { return land(then: .restoreNext) }
            phase = .restoring(partition)
            return .restore(partition: partition)
        case .send:
            if inFlight != nil { return land(then: .send) }
            if !builtWrites {
                // Nothing to write (all redelivered or ignored): committable at once.
                for (p, o) in built { uncommitted[p] = max(uncommitted[p] ?? o, o) }
                built = [:]
                phase = .idle
                return .poll
            }
            phase = .sending
            return .send
        case .stop:
            if inFlight != nil { return land(then: .stop) }
            return commitOr(.closing)
        case .closing:
            phase = .closed
            return .close
        case .fail:
            if inFlight != nil { return land(then: .fail) }
            phase = .closed
            return .fail
        }
    }

    private var offsets: [KafkaOffset] {
        uncommitted.sorted { $0.key < $1.key }.map { KafkaOffset(topic: topic, partition: $0.key, offset: $0.value) }
    }

    private mutating func commit(then next: Next) -> Action {
        let offsets = self.offsets
        phase = .committing(offsets, attempt: 1, then: next)
        return .commit(offsets)
    }

    private mutating func commitOr(_ next: Next) -> Action {
        uncommitted.isEmpty ? proceed(next) : commit(then: next)
    }

    private mutating func land(then next: Next) -> Action {
        phase = .landing(then: next)
        return .awaitWrite
    }
}
