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
///    ONE MULTI/EXEC: an entry is acknowledged only together with its output.
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

/// Performs the actions of a `StreamWorkerCore` (which decides everything) and reports their outcomes;
/// lives inside one `run()` call.
struct WorkerLoop<Stage: StreamStage> {
    var stage: Stage
    let reader: RedisClient
    let writer: RedisClient
    let configuration: StreamWorkerConfiguration
    var logger: Logger
    let group: String
    let stream: String
    let consumer: String
    var core: StreamWorkerCore<Stage.Input>
    /// Set when the worker runs one shard under a lease (`ShardedStreamWorker`): commits are fenced and
    /// reads wait while the lease is not confirmed for long enough.
    let fence: ShardFence?

    let processed: Counter
    let failed: Counter
    let claimed: Counter
    let batchDuration: Metrics.Timer
    let lagGauge: Gauge
    let pendingGauge: Gauge
    let deadLettered: [String: Counter]

    init(
        stage: Stage, reader: RedisClient, writer: RedisClient, configuration: StreamWorkerConfiguration,
        fence: ShardFence? = nil, logger: Logger
    ) {
        self.stage = stage
        self.fence = fence
        self.reader = reader
        self.writer = writer
        self.configuration = configuration
        self.group = stage.stage
        self.stream = stage.inputStream
        self.consumer = configuration.consumerName
        self.core = StreamWorkerCore(configuration: configuration, now: .now, callsIdle: stage.callsIdle)
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
        var counters: [String: Counter] = [:]
        for reason in ["decode", "max_deliveries", "stage"] {
            counters[reason] = Counter(
                label: "te_stream_dlq_total", dimensions: [("stage", stage.stage), ("reason", reason)])
        }
        deadLettered = counters
    }

    static var shuttingDown: Bool { Task.isShuttingDownGracefully || Task.isCancelled }

    mutating func run() async throws {
        logger.info("stream worker starting", metadata: ["stream": "\(stream)", "batch": "\(configuration.batchSize)"])
        // The one child task: a read-ahead, from the `.handle` that starts it to the `.awaitReadAhead` that
        // reports it (or to the end of the run).
        try await withThrowingTaskGroup(of: StreamWorkerCore<Stage.Input>.Event.self) { readAhead in
            try await run(readAhead: &readAhead)
        }
    }

    private mutating func run(
        readAhead: inout ThrowingTaskGroup<StreamWorkerCore<Stage.Input>.Event, any Error>
    ) async throws {
        var action = core.event(.started, now: .now)
        while true {
            report()
            if Self.shuttingDown { core.shutdownRequested() }
            let event: StreamWorkerCore<Stage.Input>.Event
            switch action {
            case .stop:
                logger.info("stream worker stopped")
                return
            case .prepare:
                do {
                    try await writer.xgroupCreate(stream: stream, group: group, startID: configuration.groupStartID)
                    try await stage.prepare(redis: writer)
                    event = .prepared
                } catch {
                    event = .prepareFailed("\(error)")
                }
            case .claim where fence?.allowsRead() == false:
                // A lease not confirmed by a renewal: wait for the round rather than be refused by the store.
                event = .claimed(0)
            case .read where fence?.allowsRead() == false:
                try? await Task.sleep(for: .milliseconds(20))
                event = .backedOff
            case .claim:
                do {
                    if let fence {
                        event = try await fencedClaim(fence)
                    } else {
                        event = .claimed(try await claimIdleEntries())
                    }
                } catch {
                    event = .claimFailed("\(error)")
                }
            case .refreshGauges:
                await refreshGauges()
                event = .gaugesRefreshed
            case .read(let request):
                event = await Self.read(
                    request, reader: reader, group: group, consumer: consumer, stream: stream, fence: fence)
            case .lookUpDeliveries(let start, let end, let count):
                do {
                    let rows = try await writer.xpending(
                        stream, group: group, start: start, end: end, count: count, consumer: consumer)
                    var deliveries: [String: Int] = [:]
                    for row in rows { deliveries[row.id] = row.deliveries }
                    event = .deliveries(deliveries)
                } catch {
                    event = Self.failure(error)
                }
            case .handle(let batch, let next):
                if let next {
                    // The next batch is read while the stage handles this one.
                    let (reader, group, consumer, stream, fence) = (reader, group, consumer, stream, fence)
                    let readable = fence?.allowsRead() ?? true
                    readAhead.addTask {
                        guard readable else { return .read([]) }
                        return await Self.read(
                            next, reader: reader, group: group, consumer: consumer, stream: stream, fence: fence)
                    }
                }
                do {
                    event = .handled(.success(try await stage.handle(batch)))
                } catch {
                    event = .handled(.failure(error))
                }
            case .commit(let commit):
                event = await self.commit(commit)
                if case .committed = event { await stage.committed() }
            case .idle:
                do {
                    event = .idled(.success(try await stage.idle()))
                } catch {
                    event = .idled(.failure(error))
                }
            case .awaitReadAhead:
                event = try await readAhead.next() ?? .read([])
            case .backOff(let delay):
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: delay) }
                event = .backedOff
            }
            action = core.event(event, now: .now)
        }
    }

    static func failure(_ error: RedisError) -> StreamWorkerCore<Stage.Input>.Event {
        .redisFailed("\(error)", noGroup: error.code == .server && error.isServerError("NOGROUP"))
    }

    static func read(
        _ request: StreamWorkerCore<Stage.Input>.ReadRequest, reader: RedisClient, group: String, consumer: String,
        stream: String, fence: ShardFence?
    ) async -> StreamWorkerCore<Stage.Input>.Event {
        if let fence {
            return await fencedRead(
                request, reader: reader, group: group, consumer: consumer, stream: stream, fence: fence)
        }
        do {
            let reads = try await reader.xreadgroup(
                group: group, consumer: consumer, streams: [(stream, request.cursor)], count: request.count,
                block: request.block)
            return .read(reads.first?.entries ?? [])
        } catch {
            return Self.failure(error)
        }
    }

    /// A shard's read: XREADGROUP inside the lease's script, so a replica that lost the lease (even one paused
    /// between deciding to read and sending) gets no entry delivered. Waiting for new entries is a plain
    /// XREAD BLOCK from the stream's last entry, which delivers nothing; then the fenced read again.
    static func fencedRead(
        _ request: StreamWorkerCore<Stage.Input>.ReadRequest, reader: RedisClient, group: String, consumer: String,
        stream: String, fence: ShardFence
    ) async -> StreamWorkerCore<Stage.Input>.Event {
        let command = fence.leases.readGroup(
            fence.shard, token: fence.token, stream: stream, group: group, consumer: consumer, count: request.count,
            cursor: request.cursor)
        do {
            var waited = false
            while true {
                switch try ShardLeases.parseReadGroup(try await reader.send(command)) {
                case .entries(let entries):
                    return .read(entries)
                case .fenced(let holder, let token):
                    fence.refusedReads.increment()
                    return .fenced(fence.refusal("read", holder: holder, token: token))
                case .caughtUp(let last):
                    guard let block = request.block, !waited else { return .read([]) }
                    waited = true
                    let woke = try await reader.xread(streams: [(stream, last)], count: 1, block: block)
                    if woke.allSatisfy(\.entries.isEmpty) { return .read([]) }
                }
            }
        } catch {
            return Self.failure(error)
        }
    }

    /// `claimIdleEntries` inside the lease's script: a replica that lost the lease takes nothing.
    func fencedClaim(_ fence: ShardFence) async throws(RedisError) -> StreamWorkerCore<Stage.Input>.Event {
        let c = configuration.claimMinIdle.components
        let command = fence.leases.claim(
            fence.shard, token: fence.token, stream: stream, group: group, consumer: consumer,
            minIdleMs: Int(c.seconds * 1000 + c.attoseconds / 1_000_000_000_000_000))
        switch try ShardLeases.parseClaim(try await writer.send(command)) {
        case .claimed(let count):
            return .claimed(count)
        case .fenced(let holder, let token):
            fence.refusedReads.increment()
            return .fenced(fence.refusal("claim", holder: holder, token: token))
        }
    }

    /// One MULTI/EXEC; under a lease, the outside writes and then one fenced step.
    func commit(_ commit: StreamWorkerCore<Stage.Input>.Commit) async -> StreamWorkerCore<Stage.Input>.Event {
        let tsNs = Int64(Date().timeIntervalSince1970 * 1e9)
        if let fence { return await fencedCommit(commit, fence: fence, tsNs: tsNs) }
        let commands = commit.commands(stream: stream, group: group, configuration: configuration, tsNs: tsNs)
        if commands.isEmpty { return .committed(failedCommands: 0) }
        do {
            return .committed(failedCommands: failedCommands(try await writer.transaction(commands), of: commands))
        } catch {
            return Self.failure(error)
        }
    }

    func fencedCommit(_ commit: StreamWorkerCore<Stage.Input>.Commit, fence: ShardFence, tsNs: Int64) async
        -> StreamWorkerCore<Stage.Input>.Event
    {
        let steps = commit.fencedSteps(stream: stream, group: group, configuration: configuration, tsNs: tsNs)
        do {
            if !steps.before.isEmpty {
                let replies = try await writer.pipeline(steps.before, replicated: true)
                if let error = replies.first(where: { if case .error = $0 { true } else { false } }) {
                    return .redisFailed("write before the shard's step failed: \(error)", noGroup: false)
                }
            }
            if steps.atomic.isEmpty { return .committed(failedCommands: 0) }
            // Replicated: once acknowledged the entries are not read again, so on a cluster the step must be on
            // the replicas before a failover could take it back (output lost, entries pending out of order).
            let reply = try await writer.send(
                fence.leases.commit(fence.shard, token: fence.token, commands: steps.atomic), replicated: true)
            switch try ShardLeases.parseCommit(reply) {
            case .written(let failed):
                if failed > 0 {
                    logger.error("output commands failed inside the fenced step", metadata: ["failed": "\(failed)"])
                }
                return .committed(failedCommands: failed)
            case .fenced(let holder, let token):
                fence.fenced.increment()
                return .fenced(fence.refusal("commit", holder: holder, token: token))
            }
        } catch {
            return Self.failure(error)
        }
    }

    /// Counts (and logs) the error replies inside a transaction: Redis ran the rest of it (it has no
    /// rollback), so the entries are acknowledged and this output is lost. Only a stage bug (wrong key
    /// type) gets here.
    func failedCommands(_ replies: [RedisReply], of commands: [RedisCommand]) -> Int {
        var failed = 0
        for (i, reply) in replies.enumerated() {
            if case .error(let message) = reply {
                failed += 1
                logger.error(
                    "output command failed inside the transaction",
                    metadata: ["command": "\(commands[i].name)", "error": "\(message)"])
            }
        }
        return failed
    }

    /// Logs and counts what the core noted.
    mutating func report() {
        for note in core.takeNotes() {
            switch note {
            case .setupFailed(let error):
                logger.error("stream worker setup failed", metadata: ["error": "\(error)"])
            case .claimFailed(let error):
                logger.warning("claiming idle entries failed", metadata: ["error": "\(error)"])
            case .claimed(let count):
                claimed.increment(by: count)
                logger.info("claimed entries left pending by other consumers", metadata: ["count": "\(count)"])
            case .batchFailed(let error):
                logger.error("stream batch failed", metadata: ["error": "\(error)"])
            case .retryingOneByOne(let error, let entries):
                logger.warning(
                    "stage failed on a batch; retrying its entries one by one",
                    metadata: ["error": "\(error)", "entries": "\(entries)"])
            case .entryFailed(let id, let deliveries, let error, let final):
                failed.increment()
                let metadata: Logger.Metadata = ["id": "\(id)", "deliveries": "\(deliveries)", "error": "\(error)"]
                if final {
                    logger.error("entry failed for the last time; dead-lettering it", metadata: metadata)
                } else {
                    logger.warning("entry failed; it stays pending and is retried", metadata: metadata)
                }
            case .deadLettered(let id, let reason, let label):
                deadLettered[label]?.increment()
                if label != "stage" {
                    logger.warning("entry dead-lettered", metadata: ["id": "\(id)", "reason": "\(reason)"])
                }
            case .unknownDeadLetterID(let id):
                logger.error("stage dead-lettered an id that is not in its batch", metadata: ["id": "\(id)"])
            case .processed(let count):
                processed.increment(by: count)
            case .failedCommands(let count):
                failed.increment(by: count)
            case .fenced(let reason):
                logger.warning(
                    "refused by the store: the shard's lease is gone; dropping the shard",
                    metadata: ["reason": "\(reason)"])
            case .batchFinished(let elapsed):
                let c = elapsed.components
                batchDuration.recordNanoseconds(c.seconds * 1_000_000_000 + c.attoseconds / 1_000_000_000)
            }
        }
    }

    /// Takes over entries idle longer than `claimMinIdle` on other consumers; they are then read
    /// from this consumer's pending list (where the delivery limit applies). Returns how many.
    func claimIdleEntries() async throws(RedisError) -> Int {
        var total = 0
        var start = "-"
        while !Self.shuttingDown {
            let rows = try await writer.xpending(
                stream, group: group, minIdle: configuration.claimMinIdle, start: start, count: 100)
            let others = rows.filter { $0.consumer != consumer }.map(\.id)
            if !others.isEmpty {
                let taken = try await writer.xclaim(
                    stream, group: group, consumer: consumer, minIdle: configuration.claimMinIdle, ids: others,
                    justID: true)
                total += taken.count
            }
            guard rows.count == 100, let last = rows.last else { break }
            start = "(" + last.id
        }
        return total
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
}
