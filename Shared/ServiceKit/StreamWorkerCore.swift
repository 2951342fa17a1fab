import TECore
import TEModels
import TERedis

/// The decisions of a `StreamWorker`, without I/O: which entries to read (new ones, or the consumer's own
/// pending entries from a cursor), when to claim idle entries of other consumers, how a batch is split into
/// deliveries, dead letters and bare acknowledgements, how a failing batch is retried entry by entry, when
/// an entry is dead-lettered, how long to back off, and when to stop on shutdown.
///
/// The driver performs each `Action` and reports its outcome as the next `Event`; `event` returns what to do
/// next. Everything the driver should log or count is queued in `notes` (`takeNotes()`).
///
/// Pipelining: handing a batch read from new entries to the stage may carry a read-ahead of the next batch.
/// The driver starts the read, and meanwhile has the stage handle the batch and performs the commits that
/// follow; once the batch is written and acknowledged the core answers `.awaitReadAhead` and the driver
/// reports the read's outcome. So a stage's slow `handle` (audit-writer's PostgreSQL transaction) hides the
/// next read; the next batch is handled only after the previous one is written and acknowledged, so a stage
/// sees its entries in stream order; and a failed commit discards the read-ahead: its entries are this
/// consumer's pending entries and are re-read from the start with the failed batch.
struct StreamWorkerCore<Input: StreamMessage> {
    typealias Instant = ContinuousClock.Instant

    struct ReadRequest: Equatable, Sendable {
        /// `>` for new entries, else the id after which own pending entries are re-read.
        var cursor: String
        var count: Int
        /// nil when re-reading pending entries (they are there or not: no waiting).
        var block: Duration?
        var isPending: Bool { cursor != ">" }
    }

    /// An entry moved to the dead-letter stream.
    struct DeadEntry {
        var entry: StreamEntry
        var reason: String
        /// The `te_stream_dlq_total` reason label.
        var label: String
        var deliveries: Int?
        /// A stage's dead letter: its id is acknowledged with the batch already.
        var inBatchAcks = false
    }

    /// One MULTI/EXEC: the stage's output commands, dead letters, and one XACK of `acks` plus the dead
    /// letters' ids.
    struct Commit {
        /// The stage's `StageOutput.outside` commands.
        var outside: [RedisCommand] = []
        var outputs: [RedisCommand] = []
        var deadLetters: [DeadEntry] = []
        var acks: [String] = []
        /// Entries handled successfully by this commit (for the processed counter).
        var processed = 0

        var isEmpty: Bool { outside.isEmpty && outputs.isEmpty && deadLetters.isEmpty && acks.isEmpty }
        /// Every id this commit acknowledges.
        var acknowledged: [String] { acks + deadLetters.filter { !$0.inBatchAcks }.map(\.entry.id) }
    }

    enum Action {
        /// Create the consumer group and `prepare` the stage.
        case prepare
        /// Claim entries idle longer than `claimMinIdle` on other consumers.
        case claim
        /// Refresh the lag and pending gauges.
        case refreshGauges
        case read(ReadRequest)
        /// XPENDING of the re-read pending entries, for their delivery counts.
        case lookUpDeliveries(start: String, end: String, count: Int)
        /// Have the stage handle the batch; with a read-ahead, start reading the next batch first.
        case handle([StreamDelivery<Input>], readAhead: ReadRequest?)
        /// Write `Commit` in one MULTI/EXEC.
        case commit(Commit)
        /// Report the read-ahead's outcome next (once the batch it was started with is acknowledged).
        case awaitReadAhead
        /// Sleep (cut short by shutdown), then report `.backedOff`.
        case backOff(Duration)
        /// A read of new entries came back empty: ask the stage for output of its own (`StreamStage.idle`),
        /// then report `.idled`. Only when `callsIdle`.
        case idle
        case stop
    }

    enum Event: Sendable {
        case started
        case prepared
        case prepareFailed(String)
        /// Claimed this many entries (0: none).
        case claimed(Int)
        case claimFailed(String)
        case gaugesRefreshed
        case read([StreamEntry])
        case deliveries([String: Int])
        case handled(Result<StageOutput, any Error>)
        /// The commit ran; `failedCommands` of its commands got an error reply (Redis has no rollback).
        case committed(failedCommands: Int)
        /// A Redis command failed (read, pending lookup, commit). `noGroup`: the group is gone.
        case redisFailed(String, noGroup: Bool)
        case backedOff
        /// The stage's idle output (nothing: `.none`), or its error.
        case idled(Result<StageOutput, any Error>)
        /// A commit, read or claim was refused by the store: this worker's shard lease is gone (see
        /// `ShardLeases`). Nothing of it was written, delivered or acknowledged; the worker stops and its state
        /// is dropped.
        case fenced(String)
    }

    /// What the driver logs and counts.
    enum Note: Equatable {
        case setupFailed(String)
        case claimFailed(String)
        case claimed(Int)
        case batchFailed(String)
        case retryingOneByOne(error: String, entries: Int)
        /// A stage failure: the entry stays pending (`final` false) or was dead-lettered.
        case entryFailed(id: String, deliveries: Int, error: String, final: Bool)
        case deadLettered(id: String, reason: String, label: String)
        case unknownDeadLetterID(String)
        case processed(Int)
        case failedCommands(Int)
        case batchFinished(Duration)
        case fenced(String)
    }

    let configuration: StreamWorkerConfiguration
    /// Whether an empty read of new entries is followed by `.idle` (a stage with output of its own, such as
    /// windows that close on a quiet input).
    let callsIdle: Bool
    /// The retry jitter draw in 0..<1 (`RetryPolicy.delay(attempt:fraction:)`); injectable so tests are exact.
    var jitter: () -> Double

    private(set) var notes: [Note] = []
    private(set) var needsPrepare = true
    /// Re-reading own pending entries after `pendingCursor` instead of new ones.
    private(set) var readingPending = true
    private(set) var pendingCursor = "0"
    /// When entries that failed in the stage are next re-read.
    private(set) var pendingRetryAt: Instant?
    private(set) var consecutiveFailures = 0
    private var nextClaim: Instant?
    private var nextGauges: Instant?
    /// The last stage error per pending entry, for its dead letter's reason.
    private(set) var lastErrors: [String: String] = [:]
    private(set) var shuttingDown = false
    /// The clock of the event being handled.
    private var now: Instant

    /// The batch in hand, from its read until its last commit.
    private struct Batch {
        var startedAt: Instant
        var fromPending: Bool
        var entries: [StreamEntry]
        var deliveries: [StreamDelivery<Input>] = []
        var dead: [DeadEntry] = []
        var ackOnly: [String] = []
        /// After the whole batch failed in the stage: the deliveries still to handle alone.
        var oneByOne: [StreamDelivery<Input>]?
        /// The delivery being handled alone.
        var current: StreamDelivery<Input>?
    }
    private var batch: Batch?
    /// The commit the driver is performing.
    private var commitInFlight: Commit?
    private var readAheadInFlight = false
    /// The read-ahead's outcome is dropped: its commit failed.
    private var discardReadAhead = false
    /// A read-ahead's entries, the next batch.
    private var readAhead: [StreamEntry]?

    init(
        configuration: StreamWorkerConfiguration, now: Instant, callsIdle: Bool = false,
        jitter: @escaping () -> Double = { Double.random(in: 0..<1) }
    ) {
        self.configuration = configuration
        self.callsIdle = callsIdle
        self.now = now
        self.jitter = jitter
    }

    mutating func takeNotes() -> [Note] {
        defer { notes = [] }
        return notes
    }

    /// Graceful shutdown: no new reads; the batch in hand (and a read-ahead already read) is finished and
    /// acknowledged, then `.stop`.
    mutating func shutdownRequested() { shuttingDown = true }

    mutating func event(_ event: Event, now: Instant) -> Action {
        self.now = now
        switch event {
        case .started, .gaugesRefreshed, .backedOff:
            return nextCycle()
        case .prepared:
            needsPrepare = false
            consecutiveFailures = 0
            return nextCycle()
        case .prepareFailed(let error):
            notes.append(.setupFailed(error))
            return backOff()
        case .claimed(let count):
            if count > 0 {
                notes.append(.claimed(count))
                readingPending = true
                pendingCursor = "0"
            }
            return afterClaim()
        case .claimFailed(let error):
            notes.append(.claimFailed(error))
            return afterClaim()
        case .read(let entries):
            if readAheadInFlight {
                readAheadInFlight = false
                if discardReadAhead {
                    discardReadAhead = false
                    return backOff()
                }
                if !entries.isEmpty { readAhead = entries }
                return nextCycle()
            }
            return received(entries, fromPending: readingPending)
        case .deliveries(let counts):
            return classify(deliveries: counts)
        case .handled(let result):
            return handled(result)
        case .idled(.success(let output)):
            // Output without input: nothing to acknowledge; written (fenced under a lease) like a batch's.
            return issue(Commit(outside: output.outside, outputs: output.commands))
        case .idled(.failure(let error)):
            notes.append(.batchFailed("idle output: \(error)"))
            return backOff()
        case .committed(let failedCommands):
            if failedCommands > 0 { notes.append(.failedCommands(failedCommands)) }
            return committed()
        case .fenced(let reason):
            // A read-ahead still in flight belongs to the lost shard too; its entries stay pending for the
            // new owner, who claims them.
            notes.append(.fenced(reason))
            reset(after: reason, noGroup: false)
            readAheadInFlight = false
            discardReadAhead = false
            shuttingDown = true
            return .stop
        case .redisFailed(let error, let noGroup):
            if readAheadInFlight {
                if batch != nil {
                    // The commit failed; the read-ahead's outcome is still to come, and is dropped.
                    reset(after: error, noGroup: noGroup)
                    discardReadAhead = true
                    return .awaitReadAhead
                }
                readAheadInFlight = false
                if discardReadAhead {
                    // Both failed: one backoff.
                    discardReadAhead = false
                    return backOff()
                }
            }
            reset(after: error, noGroup: noGroup)
            return backOff()
        }
    }

    // MARK: Cycle

    private mutating func nextCycle() -> Action {
        if let entries = readAhead {
            // Already read, so in hand: finished even on shutdown.
            readAhead = nil
            return received(entries, fromPending: false)
        }
        if shuttingDown { return .stop }
        if needsPrepare { return .prepare }
        if nextClaim.map({ now >= $0 }) ?? true {
            nextClaim = now + configuration.claimInterval
            return .claim
        }
        return afterClaim()
    }

    private mutating func afterClaim() -> Action {
        if shuttingDown { return .stop }
        if nextGauges.map({ now >= $0 }) ?? true {
            nextGauges = now + configuration.gaugeInterval
            return .refreshGauges
        }
        if !readingPending, let at = pendingRetryAt, now >= at {
            pendingRetryAt = nil
            readingPending = true
            pendingCursor = "0"
        }
        if readingPending {
            return .read(ReadRequest(cursor: pendingCursor, count: configuration.batchSize, block: nil))
        }
        return .read(ReadRequest(cursor: ">", count: configuration.batchSize, block: blockTime()))
    }

    /// XREADGROUP's BLOCK: shortened when failed entries are due for a retry sooner.
    func blockTime() -> Duration {
        var block = configuration.block
        if let at = pendingRetryAt { block = min(block, max(.milliseconds(1), at - now)) }
        return max(block, .milliseconds(1))
    }

    // MARK: Batch

    private mutating func received(_ entries: [StreamEntry], fromPending: Bool) -> Action {
        if entries.isEmpty {
            if fromPending {
                readingPending = false
            } else if callsIdle && !shuttingDown {
                return .idle
            }
            return nextCycle()
        }
        batch = Batch(startedAt: now, fromPending: fromPending, entries: entries)
        if fromPending {
            pendingCursor = entries[entries.count - 1].id
            return .lookUpDeliveries(start: entries[0].id, end: pendingCursor, count: entries.count)
        }
        return classify(deliveries: [:])
    }

    /// Decodes the batch: trimmed entries are only acknowledged, undecodable and over-delivered ones are
    /// dead-lettered, the rest goes to the stage.
    private mutating func classify(deliveries counts: [String: Int]) -> Action {
        guard var b = batch else { return nextCycle() }
        b.deliveries.reserveCapacity(b.entries.count)
        for entry in b.entries {
            if entry.isDeleted {
                // Trimmed away while pending: nothing left to process.
                b.ackOnly.append(entry.id)
                continue
            }
            let n = counts[entry.id] ?? 1
            let message: Input
            do {
                message = try StreamFieldDecoder.decode(Input.self, from: entry.fields)
            } catch {
                b.dead.append(DeadEntry(entry: entry, reason: "undecodable: \(error)", label: "decode", deliveries: n))
                continue
            }
            if n > configuration.maxDeliveries {
                let last = lastErrors[entry.id] ?? "delivered \(n - 1) times without acknowledgement"
                b.dead.append(
                    DeadEntry(
                        entry: entry, reason: "max deliveries exceeded: \(last)", label: "max_deliveries",
                        deliveries: n - 1))
                continue
            }
            // `tp` (trace context) is written last: one comparison, no scan of the fields.
            let tp = entry.fields.withView { f in
                f.count > 0 && f.name(f.count - 1).equals(StreamTrace.field) ? f.value(f.count - 1).string : nil
            }
            b.deliveries.append(StreamDelivery(id: entry.id, message: message, deliveries: n, traceParent: tp))
        }
        batch = b
        if b.deliveries.isEmpty { return commitRest() }
        // Pipelining only while reading new entries with no retry due: pending entries come first then.
        guard !shuttingDown, !b.fromPending, !readingPending, pendingRetryAt == nil, !readAheadInFlight else {
            return .handle(b.deliveries, readAhead: nil)
        }
        readAheadInFlight = true
        return .handle(
            b.deliveries,
            readAhead: ReadRequest(cursor: ">", count: configuration.batchSize, block: configuration.block))
    }

    private mutating func handled(_ result: Result<StageOutput, any Error>) -> Action {
        guard var b = batch else { return nextCycle() }
        if let current = b.current {
            // One entry of a failed batch, alone.
            b.current = nil
            batch = b
            switch result {
            case .success(let output):
                return issue(commit(output, acks: [current.id], processed: 1))
            case .failure(let error):
                failedEntry(current, error: "\(error)")
                return nextAlone()
            }
        }
        switch result {
        case .success(let output):
            var c = commit(output, acks: b.deliveries.map(\.id) + b.ackOnly, processed: b.deliveries.count)
            c.deadLetters += b.dead
            b.dead = []
            b.ackOnly = []
            batch = b
            return issue(c)
        case .failure(let error):
            if b.deliveries.count == 1 {
                failedEntry(b.deliveries[0], error: "\(error)")
                return commitRest()
            }
            // Find the poison entries: one at a time, the others succeed and are acknowledged.
            notes.append(.retryingOneByOne(error: "\(error)", entries: b.deliveries.count))
            b.oneByOne = b.deliveries
            batch = b
            return nextAlone()
        }
    }

    private mutating func nextAlone() -> Action {
        guard var b = batch, var queue = b.oneByOne else { return commitRest() }
        guard !queue.isEmpty else {
            b.oneByOne = nil
            batch = b
            return commitRest()
        }
        b.current = queue.removeFirst()
        b.oneByOne = queue
        batch = b
        return .handle([b.current!], readAhead: nil)
    }

    /// The batch's remaining dead letters and bare acknowledgements, or the end of the batch.
    private mutating func commitRest() -> Action {
        guard var b = batch else { return nextCycle() }
        let c = Commit(deadLetters: b.dead, acks: b.ackOnly)
        b.dead = []
        b.ackOnly = []
        batch = b
        if c.isEmpty { return finishBatch() }
        return issue(c)
    }

    private mutating func issue(_ c: Commit) -> Action {
        commitInFlight = c
        if c.isEmpty {
            // Nothing to write (a stage that output nothing for a batch of nothing).
            return committed()
        }
        return .commit(c)
    }

    /// The stage's output, its dead letters (ids of this batch only) and the acknowledgements.
    private mutating func commit(_ output: StageOutput, acks: [String], processed: Int) -> Commit {
        // Entries the stage keeps pending are acknowledged by a later output of its own.
        var c = Commit(
            outside: output.outside, outputs: output.commands, acks: acks.filter { !output.keepPending.contains($0) },
            processed: processed)
        // Looked up only for a batch with dead letters: no dictionary per batch on the hot path.
        var byID: [String: StreamEntry] = [:]
        if !output.deadLetters.isEmpty, let entries = batch?.entries {
            for entry in entries where !entry.isDeleted { byID[entry.id] = entry }
        }
        for (id, reason) in output.deadLetters {
            guard let entry = byID[id] else {
                notes.append(.unknownDeadLetterID(id))
                continue
            }
            c.deadLetters.append(
                DeadEntry(entry: entry, reason: reason, label: "stage", deliveries: nil, inBatchAcks: true))
        }
        return c
    }

    private mutating func failedEntry(_ delivery: StreamDelivery<Input>, error: String) {
        if delivery.deliveries >= configuration.maxDeliveries,
            let entry = batch?.entries.first(where: { $0.id == delivery.id && !$0.isDeleted })
        {
            notes.append(.entryFailed(id: delivery.id, deliveries: delivery.deliveries, error: error, final: true))
            batch?.dead.append(
                DeadEntry(
                    entry: entry, reason: "max deliveries exceeded: \(error)", label: "max_deliveries",
                    deliveries: delivery.deliveries))
            return
        }
        notes.append(.entryFailed(id: delivery.id, deliveries: delivery.deliveries, error: error, final: false))
        lastErrors[delivery.id] = error
        consecutiveFailures += 1
        let at = now + backoffDelay()
        pendingRetryAt = min(pendingRetryAt ?? at, at)
    }

    private mutating func committed() -> Action {
        if let c = commitInFlight {
            commitInFlight = nil
            if c.processed > 0 { notes.append(.processed(c.processed)) }
            for d in c.deadLetters { notes.append(.deadLettered(id: d.entry.id, reason: d.reason, label: d.label)) }
            for id in c.acknowledged { lastErrors[id] = nil }
        }
        if batch?.oneByOne != nil { return nextAlone() }
        return finishBatch()
    }

    private mutating func finishBatch() -> Action {
        if let b = batch { notes.append(.batchFinished(now - b.startedAt)) }
        batch = nil
        consecutiveFailures = 0
        if readAheadInFlight { return .awaitReadAhead }
        return nextCycle()
    }

    // MARK: Failures

    /// Redis failed: nothing of the batch past its last commit was acknowledged; re-read the pending
    /// entries from the start.
    private mutating func reset(after error: String, noGroup: Bool) {
        if noGroup { needsPrepare = true }
        notes.append(.batchFailed(error))
        batch = nil
        commitInFlight = nil
        readAhead = nil
        readingPending = true
        pendingCursor = "0"
    }

    private mutating func backOff() -> Action {
        consecutiveFailures += 1
        return .backOff(backoffDelay())
    }

    func backoffDelay() -> Duration {
        configuration.retry.delay(attempt: max(consecutiveFailures, 1), fraction: jitter())
    }
}

extension StreamWorkerCore.Action {
    /// The case's name, for logs and tests.
    var kind: String {
        switch self {
        case .prepare: "prepare"
        case .claim: "claim"
        case .refreshGauges: "refreshGauges"
        case .read: "read"
        case .lookUpDeliveries: "lookUpDeliveries"
        case .handle: "handle"
        case .commit: "commit"
        case .awaitReadAhead: "awaitReadAhead"
        case .backOff: "backOff"
        case .idle: "idle"
        case .stop: "stop"
        }
    }
}

extension StreamWorkerCore.Commit {
    /// The MULTI/EXEC body: `outside`, outputs in order, one dead-letter XADD per dead entry, one XACK.
    /// `tsNs` stamps the dead letters.
    func commands(stream: String, group: String, configuration: StreamWorkerConfiguration, tsNs: Int64)
        -> [RedisCommand]
    {
        var commands = outside + outputs
        commands.reserveCapacity(commands.count + deadLetters.count + 1)
        commands += deadLetterCommands(stream: stream, group: group, configuration: configuration, tsNs: tsNs)
        let ids = acknowledged
        if !ids.isEmpty { commands.append(.xack(stream, group: group, ids: ids)) }
        return commands
    }

    /// A shard's commit (a lease fences it): `before` (the outside commands and the dead letters, which
    /// live in other slots of a cluster) is written first, then `atomic` (outputs and XACK, all in the
    /// shard's slot) in one fenced step. A crash between the two leaves the entries pending: they are
    /// handled again and their dead letters written again (at least once, as everywhere between stages).
    func fencedSteps(stream: String, group: String, configuration: StreamWorkerConfiguration, tsNs: Int64)
        -> (before: [RedisCommand], atomic: [RedisCommand])
    {
        let before =
            outside + deadLetterCommands(stream: stream, group: group, configuration: configuration, tsNs: tsNs)
        var atomic = outputs
        let ids = acknowledged
        if !ids.isEmpty { atomic.append(.xack(stream, group: group, ids: ids)) }
        return (before, atomic)
    }

    func deadLetterCommands(stream: String, group: String, configuration: StreamWorkerConfiguration, tsNs: Int64)
        -> [RedisCommand]
    {
        deadLetters.map { d in
            let letter = DeadLetter(
                stage: group, reason: d.reason, payload: JSONText.object(Array(d.entry.fields)), source: stream,
                sourceId: d.entry.id, deliveries: d.deliveries, tsNs: tsNs)
            // Encoding a DeadLetter cannot fail: strings and integers only.
            let fields =
                (try? StreamFieldEncoder.encode(letter)) ?? [("v", "1"), ("stage", group), ("reason", d.reason)]
            return .xadd(configuration.deadLetterStream, maxLen: configuration.deadLetterMaxLen, fields: fields)
        }
    }
}
