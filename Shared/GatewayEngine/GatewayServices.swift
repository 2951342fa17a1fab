import Logging
import ServiceKit
import ServiceLifecycle
import Synchronization
import TECore
import TEModels
import TERedis

/// Keeps `FeatureMemory` current from `te:features`: plain `XREAD BLOCK` from the tail (`$`), so every
/// replica sees every snapshot, on a Redis connection of its own (a blocked read holds the connection).
/// A snapshot's write time is its entry id's millisecond part (Redis' clock when the pipeline wrote it).
public struct FeatureFeed: Service {
    let redis: RedisClient
    let memory: FeatureMemory
    let stream: String
    let logger: Logger

    public init(redis: RedisClient, memory: FeatureMemory, stream: String = StreamKey.features, logger: Logger) {
        self.redis = redis
        self.memory = memory
        self.stream = stream
        self.logger = logger
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            var decodeFailures = 0
            await StreamTail.follow(redis: redis, stream: stream, logger: logger) { entries in
                for entry in entries {
                    guard let writtenAtNs = Self.entryTimeNs(entry.id) else { continue }
                    do {
                        let snapshot = try StreamFieldDecoder.decode(FeatureSnapshot.self, from: entry.fields)
                        memory.put(StoredFeatures(snapshot: snapshot, writtenAtNs: writtenAtNs, entryId: entry.id))
                    } catch {
                        decodeFailures += 1
                        if decodeFailures.isPowerOf2 {
                            logger.warning(
                                "undecodable feature snapshot skipped",
                                metadata: ["id": "\(entry.id)", "error": "\(error)", "count": "\(decodeFailures)"])
                        }
                    }
                }
            }
        }
    }

    /// The millisecond time of a stream entry id (`<ms>-<seq>`), in ns.
    static func entryTimeNs(_ id: String) -> Int64? {
        StreamID(id).flatMap { Int64(exactly: $0.milliseconds) }.map { $0 * 1_000_000 }
    }
}

extension Int {
    var isPowerOf2: Bool { self > 0 && (self & (self - 1)) == 0 }
}

/// Cold start of a symbol's features from `te:online:{SYMBOL}` (HGETALL) when memory has none. Misses
/// are remembered for a second so unknown symbols do not cost a Redis round trip each.
public final class OnlineFeatureLoader: Sendable {
    let redis: RedisClient
    let memory: FeatureMemory
    let keyPrefix: String
    let logger: Logger
    private let misses = Mutex<[String: ContinuousClock.Instant]>([:])
    /// The loads and their deadlines; a service of the gateway.
    public let tasks = BackgroundTasks()

    public init(redis: RedisClient, memory: FeatureMemory, keyPrefix: String = "te:online:", logger: Logger) {
        self.redis = redis
        self.memory = memory
        self.keyPrefix = keyPrefix
        self.logger = logger
    }

    /// Loads the symbol's features, waiting at most until `deadline` (the load goes on in the background
    /// and fills memory for the next request).
    public func load(_ symbol: String, deadline: ContinuousClock.Instant) async -> StoredFeatures? {
        let recentMiss = misses.withLock { map -> Bool in
            guard let at = map[symbol] else { return false }
            if ContinuousClock.now - at < .seconds(1) { return true }
            map[symbol] = nil
            return false
        }
        if recentMiss { return nil }
        let slot = OneShot<StoredFeatures?, Never>()
        // Shutting down: no cold load.
        guard tasks.submit({ slot.finish(await self.fetch(symbol)) }) else { return nil }
        tasks.submit {
            try? await Task.sleep(until: deadline, clock: .continuous)
            slot.finish(nil)
        }
        return await slot.wait()
    }

    public func fetch(_ symbol: String) async -> StoredFeatures? {
        do {
            let fields = try await redis.hgetall(keyPrefix + symbol)
            guard !fields.isEmpty else {
                misses.withLock { $0[symbol] = .now }
                return nil
            }
            let snapshot = try StreamFieldDecoder.decode(FeatureSnapshot.self, from: fields)
            // `written_at_ns`, when the pipeline adds it, is when the hash was written; else the event time.
            let writtenAt = fields["written_at_ns"].flatMap { Int64($0) } ?? snapshot.tsNs
            let stored = StoredFeatures(snapshot: snapshot, writtenAtNs: writtenAt)
            memory.put(stored)
            return memory.get(symbol) ?? stored
        } catch {
            logger.warning("cold start of features failed", metadata: ["symbol": "\(symbol)", "error": "\(error)"])
            misses.withLock { $0[symbol] = .now }
            return nil
        }
    }
}

/// Writes buffered audit records to `te:audit`: batches of pipelined XADDs on a connection of its own.
/// A failed write leaves the batch in the buffer and is retried with backoff (audit-writer inserts
/// idempotently on decision_id, so a batch written twice adds nothing). On shutdown it drains the buffer
/// for up to `drainTimeout`.
///
/// Before its first write (and after Redis failed, which may have lost it) it creates the consumer
/// group `group` from the stream's start if missing, so entries written before audit-writer ever ran
/// are neither skipped nor trimmed. With `maxLen`, it trims the stream at most once per `trimInterval`
/// with `StreamTrim` (never past any group's unacknowledged entries) instead of XADD MAXLEN.
///
/// Sync durability: no linger (a request is waiting for the write), and a second loop answers the
/// waiters whose wait expired (`AuditBuffer.expireWaiters`) even while a write hangs.
public struct AuditStreamWriter: Service {
    let redis: RedisClient
    let buffer: AuditBuffer
    let stream: String
    let group: String?
    let batchMax: Int
    let maxLen: Int?
    let durability: AuditDurability
    let syncWait: Duration
    let drainTimeout: Duration
    let trimInterval: Duration
    /// Pause after a partial batch (async mode), so low-rate traffic is written a few records at a time.
    let linger: Duration
    let logger: Logger

    public init(
        redis: RedisClient, buffer: AuditBuffer, stream: String = StreamKey.audit, group: String? = "audit-writer",
        batchMax: Int, maxLen: Int?, durability: AuditDurability = .async, syncWait: Duration = .milliseconds(20),
        drainTimeout: Duration = .seconds(3), trimInterval: Duration = .seconds(1), linger: Duration = .milliseconds(2),
        logger: Logger
    ) {
        self.linger = durability == .sync ? .zero : linger
        self.redis = redis
        self.buffer = buffer
        self.stream = stream
        self.group = group
        self.batchMax = batchMax
        self.maxLen = maxLen
        self.durability = durability
        self.syncWait = syncWait
        self.drainTimeout = drainTimeout
        self.trimInterval = trimInterval
        self.logger = logger
    }

    public func run() async throws {
        await withTaskGroup(of: Void.self) { tasks in
            if durability == .sync {
                tasks.addTask { await expireLoop() }
            }
            tasks.addTask {
                var state = await cancelWhenGracefulShutdown {
                    var state = WriterState()
                    await writeLoop(until: nil, state: &state)
                    return state
                }
                // Drain what the last requests left.
                await writeLoop(until: .now + drainTimeout, state: &state)
            }
            await tasks.next()
            tasks.cancelAll()
        }
    }

    /// Answers expired sync waiters; sleeps until the next deadline (or one wait, when none waits: a
    /// new waiter's deadline is at least that far away).
    func expireLoop() async {
        while !Task.isCancelled {
            let next = buffer.expireWaiters(now: .now) ?? (.now + syncWait)
            try? await Task.sleep(until: next, clock: .continuous)
        }
        buffer.close()
    }

    struct WriterState {
        var needsGroup = true
        var nextTrim = ContinuousClock.now
    }

    /// The pause after a failed write: 20 ms doubling to 1 s, jittered.
    static let retry = RetryPolicy(initial: .milliseconds(20), maximum: .seconds(1))

    func writeLoop(until deadline: ContinuousClock.Instant?, state: inout WriterState) async {
        var backoff = RetryBackoff(Self.retry)
        while true {
            if let deadline {
                if buffer.depth == 0 || ContinuousClock.now >= deadline { return }
            } else if Task.isCancelled {
                return
            }
            let (batch, entries) = await buffer.nextBatch(max: batchMax)
            if entries == 0 { continue }
            do {
                if state.needsGroup, let group {
                    try await redis.xgroupCreate(stream: stream, group: group, startID: "0")
                    state.needsGroup = false
                }
                if !batch.isEmpty { try await write(batch) }
                buffer.commit(entries: entries, written: batch.count)
                if let maxLen, ContinuousClock.now >= state.nextTrim {
                    state.nextTrim = .now + trimInterval
                    do {
                        try await StreamTrim.trim(redis, stream: stream, maxLen: maxLen)
                    } catch {
                        logger.warning("trimming te:audit failed", metadata: ["error": "\(error)"])
                    }
                }
                // A partial batch means the writer is keeping up record by record: linger so the next
                // write carries several. At one connection this halves the audit path's thread wake-ups
                // (writer task, Redis thread, reply) that compete with requests for the 2 cores.
                if deadline == nil, batchMax > batch.count, linger > .zero { try? await Task.sleep(for: linger) }
                if backoff.failures > 0 {
                    logger.info(
                        "audit writes recovered",
                        metadata: ["failed_attempts": "\(backoff.failures)", "depth": "\(buffer.depth)"])
                }
                backoff.succeeded()
            } catch {
                state.needsGroup = true
                buffer.markFailed()
                let delay = backoff.failed()
                if backoff.failures.isPowerOf2 {
                    logger.error(
                        "writing te:audit failed; records kept in the buffer",
                        metadata: ["error": "\(error)", "depth": "\(buffer.depth)", "dropped": "\(buffer.dropped)"])
                }
                try? await Task.sleep(for: delay)
            }
        }
    }

    func write(_ batch: [AuditRecord]) async throws {
        var commands: [RedisCommand] = []
        commands.reserveCapacity(batch.count)
        for record in batch {
            commands.append(.xadd(stream, maxLen: nil, fields: try record.streamFields()))
        }
        let replies = try await redis.pipeline(commands)
        for reply in replies {
            if case .error(let message) = reply { throw RedisError(.server, "XADD \(stream): \(message)") }
        }
    }
}

/// Re-reads model identity (name, version, artefact hash) from Triton periodically.
public struct IdentityRefresher: Service {
    let endpoints: [any InferenceEndpoint]
    let versions: [String]
    let store: ModelIdentityStore
    let interval: Duration
    let logger: Logger

    public init(
        endpoints: [any InferenceEndpoint], versions: [String], store: ModelIdentityStore, interval: Duration,
        logger: Logger
    ) {
        self.endpoints = endpoints
        self.versions = versions
        self.store = store
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await warmUp()
            while !Task.isCancelled {
                await refresh()
                // Until every version is known, retry sooner.
                let complete = versions.allSatisfy { store.known(version: $0) }
                try? await Task.sleep(for: complete ? interval : min(interval, .milliseconds(500)))
            }
        }
    }

    /// A few inferences per endpoint and version at start, so the first requests do not pay for
    /// connection set-up and the backend's first call.
    func warmUp() async {
        let rows = [Float](repeating: 0, count: FeatureVector.count * 4)
        for endpoint in endpoints {
            versions: for version in versions {
                for _ in 0..<3 {
                    if Task.isCancelled { return }
                    do throws(InferenceFailure) {
                        _ = try await endpoint.infer(
                            version: version, rows: rows, rowCount: 4, deadline: .now + .milliseconds(500))
                    } catch {
                        continue versions  // unreachable or unknown version: do not insist
                    }
                }
            }
        }
    }

    public func refresh() async {
        for version in versions {
            for endpoint in endpoints {
                do throws(InferenceFailure) {
                    let identity = try await endpoint.identity(version: version)
                    let previous = store.known(version: version) ? store.identity(version: version) : nil
                    store.set(identity)
                    if previous != identity {
                        logger.info(
                            "model identity",
                            metadata: [
                                "name": "\(identity.name)", "version": "\(identity.version)", "hash": "\(identity.hash)"
                            ])
                    }
                    break
                } catch {
                    continue
                }
            }
        }
    }
}

/// Closes the Redis clients last, after the other services (the service group stops in reverse order).
public struct RedisClientsCloser: Service {
    let clients: [RedisClient]

    public init(clients: [RedisClient]) { self.clients = clients }

    public func run() async throws {
        try? await gracefulShutdown()
        for client in clients { client.close() }
    }
}
