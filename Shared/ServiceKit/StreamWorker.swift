import Foundation
import Logging
import Metrics
import ServiceLifecycle
import TEModels
import TERedis

/// Runs a `StreamStage` on its consumer group until graceful shutdown:
///
/// 1. XREADGROUP a batch (new entries; or, at start, after a failure and after claiming, the
///    consumer's own pending entries from id 0, with their delivery counts from XPENDING).
/// 2. Decode each entry; an undecodable one goes to the dead-letter stream with the decoding
///    error, an entry delivered more than `maxDeliveries` times with "max deliveries exceeded".
/// 3. `handle` the batch, then write its outputs, its dead letters and the XACK of every entry in
///    ONE MULTI/EXEC: an entry is acknowledged only together with its output (entries the stage keeps
///    pending, `StageOutput.keepPending`, are left for it to acknowledge later); then `committed()`.
/// 4. If `handle` throws, retry the batch's entries one at a time, so only a poison entry stays
///    pending; it is re-read after a backoff and dead-lettered on its `maxDeliveries`-th failure.
///    If Redis fails, nothing is acknowledged; back off and re-read the pending entries.
///
/// At start and every `claimInterval`, entries idle longer than `claimMinIdle` on other consumers
/// (a consumer that died) are claimed (XPENDING IDLE + XCLAIM JUSTID) and processed here. On
/// graceful shutdown the worker stops reading, finishes and acknowledges the batch in hand, and
/// returns.
public struct StreamWorker<Stage: StreamStage>: Service {
    public let stage: Stage
    public let redis: RedisConfiguration
    public let configuration: StreamWorkerConfiguration
    public let readiness: ReadinessChecks?
    public let logger: Logger

    public init(
        stage: Stage, redis: RedisConfiguration, configuration: StreamWorkerConfiguration,
        readiness: ReadinessChecks? = nil, logger: Logger
    ) {
        self.stage = stage
        self.redis = redis
        self.configuration = configuration
        self.readiness = readiness
        self.logger = logger
    }

    public func run() async throws {
        // The blocking read holds its connection for up to `block`: writes, acks and claims use another.
        let reader = RedisClient(configuration: redis, name: "\(stage.stage)-read", logger: logger)
        let writer = RedisClient(configuration: redis, name: "\(stage.stage)-write", logger: logger)
        defer {
            reader.close()
            writer.close()
        }
        readiness?.add("redis") { try await writer.ping() }
        var loop = WorkerLoop(
            stage: stage, reader: reader, writer: writer, configuration: configuration, logger: logger)
        try await loop.run()
    }
}

/// The worker's mutable state; lives inside one `run()` call.
struct WorkerLoop<Stage: StreamStage> {
    var stage: Stage
    let reader: RedisClient
    let writer: RedisClient
    let configuration: StreamWorkerConfiguration
    var logger: Logger
    let group: String
    let stream: String
    let consumer: String

    /// Re-reading own pending entries from `pendingCursor` (exclusive) instead of new ones.
    var readingPending = true
    var pendingCursor = "0"
    /// When failed entries are next re-read.
    var pendingRetryAt: ContinuousClock.Instant?
    var consecutiveFailures = 0
    var nextClaim = ContinuousClock.now
    var nextGauges = ContinuousClock.now
    var needsPrepare = true
    /// The last `handle` error per pending entry, for the dead letter's reason.
    var lastErrors: [String: String] = [:]

    let processed: Counter
    let failed: Counter
    let claimed: Counter
    let batchDuration: Metrics.Timer
    let lagGauge: Gauge
    let pendingGauge: Gauge

    init(stage: Stage, reader: RedisClient, writer: RedisClient, configuration: StreamWorkerConfiguration, logger: Logger) {
        self.stage = stage
        self.reader = reader
        self.writer = writer
        self.configuration = configuration
        self.group = stage.stage
        self.stream = stage.inputStream
        self.consumer = configuration.consumerName
        var logger = logger
        logger[metadataKey: "stage"] = "\(stage.stage)"
        logger[metadataKey: "consumer"] = "\(configuration.consumerName)"
        self.logger = logger
        let dims = [("stage", stage.stage)]
        processed = Counter(label: "te_stream_entries_processed_total", dimensions: dims)
        failed = Counter(label: "te_stream_entries_failed_total", dimensions: dims)
        claimed = Counter(label: "te_stream_claimed_total", dimensions: dims)
        batchDuration = Metrics.Timer(label: "te_stream_batch_duration_seconds", dimensions: dims)
        let groupDims = [("stream", stage.inputStream), ("group", stage.stage)]
        lagGauge = Gauge(label: "te_stream_consumer_lag_entries", dimensions: groupDims)
        pendingGauge = Gauge(label: "te_stream_pending_entries", dimensions: groupDims)
        // Every dead-letter reason this worker can count, registered at 0: alerts on rate() need the series.
        for reason in ["decode", "max_deliveries", "stage"] {
            _ = Counter(label: "te_stream_dlq_total", dimensions: [("stage", stage.stage), ("reason", reason)])
        }
    }

    static var shuttingDown: Bool { Task.isShuttingDownGracefully || Task.isCancelled }

    mutating func run() async throws {
        logger.info("stream worker starting", metadata: ["stream": "\(stream)", "batch": "\(configuration.batchSize)"])
        while !Self.shuttingDown {
            if needsPrepare {
                do {
                    try await writer.xgroupCreate(stream: stream, group: group, startID: configuration.groupStartID)
                    try await stage.prepare(redis: writer)
                    needsPrepare = false
                    consecutiveFailures = 0
                } catch {
                    logger.error("stream worker setup failed", metadata: ["error": "\(error)"])
                    await backOff()
                    continue
                }
            }
            await step()
        }
        logger.info("stream worker stopped")
    }

    mutating func step() async {
        let now = ContinuousClock.now
        if now >= nextClaim {
            nextClaim = now + configuration.claimInterval
            do {
                try await claimIdleEntries()
            } catch {
                logger.warning("claiming idle entries failed", metadata: ["error": "\(error)"])
            }
        }
        if now >= nextGauges {
            nextGauges = now + configuration.gaugeInterval
            await refreshGauges()
        }
        if !readingPending, let at = pendingRetryAt, now >= at {
            pendingRetryAt = nil
            readingPending = true
            pendingCursor = "0"
        }
        do {
            let fromPending = readingPending
            let reads = try await reader.xreadgroup(
                group: group, consumer: consumer, streams: [(stream, fromPending ? pendingCursor : ">")],
                count: configuration.batchSize, block: fromPending ? nil : blockTime())
            let entries = reads.first?.entries ?? []
            if entries.isEmpty {
                if fromPending { readingPending = false }
                return
            }
            var deliveries: [String: Int] = [:]
            if fromPending {
                pendingCursor = entries[entries.count - 1].id
                let rows = try await writer.xpending(
                    stream, group: group, start: entries[0].id, end: pendingCursor, count: entries.count, consumer: consumer)
                for row in rows { deliveries[row.id] = row.deliveries }
            }
            try await process(entries, deliveries: deliveries)
            consecutiveFailures = 0
        } catch {
            // Redis failed (read, pending lookup or the write+ack): nothing of this batch was
            // acknowledged; re-read the pending entries after a backoff.
            if error.code == .server, error.isServerError("NOGROUP") { needsPrepare = true }
            logger.error("stream batch failed", metadata: ["error": "\(error)"])
            readingPending = true
            pendingCursor = "0"
            await backOff()
        }
    }

    /// XREADGROUP's BLOCK: shortened when failed entries are due for a retry sooner.
    func blockTime() -> Duration {
        var block = configuration.block
        if let at = pendingRetryAt { block = min(block, max(.milliseconds(1), at - .now)) }
        return max(block, .milliseconds(1))
    }

    struct DeadEntry {
        let entry: StreamEntry
        let reason: String
        let label: String
        let deliveries: Int?
    }

    mutating func process(_ entries: [StreamEntry], deliveries: [String: Int]) async throws(RedisError) {
        let start = ContinuousClock.now
        var batch: [StreamDelivery<Stage.Input>] = []
        batch.reserveCapacity(entries.count)
        var dead: [DeadEntry] = []
        var ackOnly: [String] = []
        var byID: [String: StreamEntry] = [:]
        for entry in entries {
            if entry.isDeleted {
                // Trimmed away while pending: nothing left to process.
                ackOnly.append(entry.id)
                continue
            }
            byID[entry.id] = entry
            let n = deliveries[entry.id] ?? 1
            let message: Stage.Input
            do {
                message = try StreamFieldDecoder.decode(Stage.Input.self, from: entry.fields)
            } catch {
                dead.append(DeadEntry(entry: entry, reason: "undecodable: \(error)", label: "decode", deliveries: n))
                continue
            }
            if n > configuration.maxDeliveries {
                let last = lastErrors[entry.id] ?? "delivered \(n - 1) times without acknowledgement"
                dead.append(DeadEntry(entry: entry, reason: "max deliveries exceeded: \(last)", label: "max_deliveries", deliveries: n - 1))
                continue
            }
            batch.append(StreamDelivery(id: entry.id, message: message, deliveries: n))
        }

        if !batch.isEmpty {
            switch await handle(batch) {
            case .success(let output):
                try await commit(output, acks: batch.map(\.id).filter { !output.keepPending.contains($0) } + ackOnly, dead: dead, byID: byID)
                await stage.committed()
                processed.increment(by: batch.count)
                dead = []
                ackOnly = []
            case .failure(let error):
                if batch.count == 1 {
                    failedEntry(batch[0], error: error, dead: &dead, byID: byID)
                } else {
                    // Find the poison entries: one at a time, the others succeed and are acknowledged.
                    logger.warning(
                        "stage failed on a batch; retrying its entries one by one",
                        metadata: ["error": "\(error)", "entries": "\(batch.count)"])
                    for delivery in batch {
                        switch await handle([delivery]) {
                        case .success(let output):
                            try await commit(output, acks: output.keepPending.contains(delivery.id) ? [] : [delivery.id], dead: [], byID: byID)
                            await stage.committed()
                            processed.increment()
                        case .failure(let error):
                            failedEntry(delivery, error: error, dead: &dead, byID: byID)
                        }
                    }
                }
            }
        }
        if !dead.isEmpty || !ackOnly.isEmpty {
            try await commit(.none, acks: ackOnly, dead: dead, byID: byID)
        }
        let elapsed = (ContinuousClock.now - start).components
        batchDuration.recordNanoseconds(elapsed.seconds * 1_000_000_000 + elapsed.attoseconds / 1_000_000_000)
    }

    mutating func handle(_ batch: [StreamDelivery<Stage.Input>]) async -> Result<StageOutput, any Error> {
        do {
            return .success(try await stage.handle(batch))
        } catch {
            return .failure(error)
        }
    }

    mutating func failedEntry(
        _ delivery: StreamDelivery<Stage.Input>, error: any Error, dead: inout [DeadEntry], byID: [String: StreamEntry]
    ) {
        failed.increment()
        let reason = "\(error)"
        if delivery.deliveries >= configuration.maxDeliveries, let entry = byID[delivery.id] {
            dead.append(
                DeadEntry(
                    entry: entry, reason: "max deliveries exceeded: \(reason)", label: "max_deliveries",
                    deliveries: delivery.deliveries))
            logger.error(
                "entry failed for the last time; dead-lettering it",
                metadata: ["id": "\(delivery.id)", "deliveries": "\(delivery.deliveries)", "error": "\(reason)"])
            return
        }
        lastErrors[delivery.id] = reason
        logger.warning(
            "entry failed; it stays pending and is retried",
            metadata: ["id": "\(delivery.id)", "deliveries": "\(delivery.deliveries)", "error": "\(reason)"])
        consecutiveFailures += 1
        let retryAt = ContinuousClock.now + backoffDelay()
        pendingRetryAt = min(pendingRetryAt ?? retryAt, retryAt)
    }

    /// Outputs, dead letters and one XACK for everything, in one MULTI/EXEC.
    mutating func commit(_ output: StageOutput, acks: [String], dead: [DeadEntry], byID: [String: StreamEntry]) async throws(RedisError) {
        var commands = output.commands
        var ackIDs = acks
        var dlq: [(label: String, id: String)] = []
        for (id, reason) in output.deadLetters {
            guard let entry = byID[id] else {
                logger.error("stage dead-lettered an id that is not in its batch", metadata: ["id": "\(id)"])
                continue
            }
            commands.append(deadLetterCommand(entry, reason: reason, deliveries: nil))
            dlq.append(("stage", id))
        }
        for d in dead {
            commands.append(deadLetterCommand(d.entry, reason: d.reason, deliveries: d.deliveries))
            ackIDs.append(d.entry.id)
            dlq.append((d.label, d.entry.id))
            logger.warning("entry dead-lettered", metadata: ["id": "\(d.entry.id)", "reason": "\(d.reason)"])
        }
        if !ackIDs.isEmpty { commands.append(.xack(stream, group: group, ids: ackIDs)) }
        if commands.isEmpty { return }
        let replies = try await writer.transaction(commands)
        for (i, reply) in replies.enumerated() {
            if case .error(let message) = reply {
                // Redis ran the rest of the transaction (it has no rollback): the entries are
                // acknowledged, this output is lost. Only a stage bug (wrong key type) gets here.
                failed.increment()
                logger.error(
                    "output command failed inside the transaction",
                    metadata: ["command": "\(commands[i].name)", "error": "\(message)"])
            }
        }
        for (label, _) in dlq {
            Counter(label: "te_stream_dlq_total", dimensions: [("stage", group), ("reason", label)]).increment()
        }
        for id in ackIDs { lastErrors[id] = nil }
    }

    func deadLetterCommand(_ entry: StreamEntry, reason: String, deliveries: Int?) -> RedisCommand {
        let letter = DeadLetter(
            stage: group, reason: reason, payload: JSONText.object(entry.fields), source: stream, sourceId: entry.id,
            deliveries: deliveries, tsNs: Int64(Date().timeIntervalSince1970 * 1e9))
        // Encoding a DeadLetter cannot fail: strings and integers only.
        let fields = (try? StreamFieldEncoder.encode(letter)) ?? [("v", "1"), ("stage", group), ("reason", reason)]
        return .xadd(configuration.deadLetterStream, maxLen: configuration.deadLetterMaxLen, fields: fields)
    }

    /// Takes over entries idle longer than `claimMinIdle` on other consumers; they are then read
    /// from this consumer's pending list (where the delivery limit applies).
    mutating func claimIdleEntries() async throws(RedisError) {
        var total = 0
        var start = "-"
        while !Self.shuttingDown {
            let rows = try await writer.xpending(
                stream, group: group, minIdle: configuration.claimMinIdle, start: start, count: 100)
            let others = rows.filter { $0.consumer != consumer }.map(\.id)
            if !others.isEmpty {
                let taken = try await writer.xclaim(
                    stream, group: group, consumer: consumer, minIdle: configuration.claimMinIdle, ids: others, justID: true)
                total += taken.count
            }
            guard rows.count == 100, let last = rows.last else { break }
            start = "(" + last.id
        }
        if total > 0 {
            claimed.increment(by: total)
            logger.info("claimed entries left pending by other consumers", metadata: ["count": "\(total)"])
            readingPending = true
            pendingCursor = "0"
        }
    }

    func refreshGauges() async {
        do {
            let groups = try await writer.xinfoGroups(stream)
            guard let info = groups.first(where: { $0.name == group }) else { return }
            pendingGauge.record(info.pending)
            if let lag = info.lag { lagGauge.record(lag) }
        } catch {
            logger.debug("lag refresh failed", metadata: ["error": "\(error)"])
        }
    }

    func backoffDelay() -> Duration {
        let base = configuration.retryBackoff * (1 << min(max(consecutiveFailures - 1, 0), 16))
        let capped = min(base, configuration.retryBackoffMax)
        return capped * Double.random(in: 0.8...1.2)
    }

    /// Sleeps the backoff delay; a graceful shutdown cuts it short.
    mutating func backOff() async {
        consecutiveFailures += 1
        let delay = backoffDelay()
        try? await cancelWhenGracefulShutdown { try await Task.sleep(for: delay) }
    }
}
