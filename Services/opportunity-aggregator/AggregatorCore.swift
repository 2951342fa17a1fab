import Logging
import Metrics
import ServiceKit
import ServiceLifecycle
import Strategies
import TEModels
import TERedis

/// The aggregator's state and the only code that changes it, shared by the stream worker (`handle`) and the
/// idle closer.
///
/// **Crash safety.** The state (open windows, symbols' event clocks, a `version` counting committed batches)
/// lives in the hash `{prefix}:state`. Each batch's outputs — opportunity entries, the changed state fields,
/// the new version, the `{prefix}:seen:{id}` keys of the batch's signals — are written by the worker in the
/// SAME MULTI/EXEC as the batch's XACK. So at any crash point either all of it happened (the entries are
/// acknowledged and never come again) or none of it did (the entries stay pending, and the restarted process
/// reloads the state as of before them and produces the same outputs again). Nothing is lost or doubled.
///
/// **Out of sync.** The worker may fail to write a batch after `handle` returned (Redis gone), and it then
/// re-reads the pending entries without telling the stage. Each `handle` therefore first compares the
/// `version` in Redis with the version its last output carried; on a mismatch it reloads the state from
/// Redis before applying the batch.
///
/// **Duplicates.** A signal id already in `{prefix}:seen:*` (TTL `SEEN_TTL_SEC`) or already earlier in the
/// same batch is a duplicate: ignored and counted (`te_signals_duplicate_total`). Every other signal —
/// applied, stale or low-confidence — is remembered.
///
/// **Single writer.** The state is one per deployment: run one replica (a second consumer in the group
/// would make the two reload each other's state on every batch, which is correct but slow, and could
/// reorder a symbol's signals).
actor AggregatorCore {
    let settings: AggregatorSettings
    var logger: Logger
    private var aggregator: OpportunityAggregator
    /// The version the last output carried (what Redis holds once that output is committed).
    private var version: Int64 = 0
    private var redis: RedisClient?
    /// When input last arrived (or the idle closer last ran), on the wall clock.
    private var lastInput = ContinuousClock.now

    // An async mutex: handle and idle close both await Redis in the middle of their work.
    private var busy = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    private let emitted: [OpportunityAggregator.EmitReason: Counter]
    private let duplicates = Counter(label: "te_signals_duplicate_total")
    private let stale = Counter(label: "te_signals_stale_total")
    private let lowConfidence = Counter(label: "te_signals_low_confidence_total")
    /// Per shard when sharded: each shard's core reports its own windows (one unlabelled gauge would show
    /// whichever core wrote last).
    private let openWindows: Gauge

    init(settings: AggregatorSettings, logger: Logger) {
        self.settings = settings
        self.logger = logger
        self.aggregator = OpportunityAggregator(configuration: settings.aggregation)
        var emitted: [OpportunityAggregator.EmitReason: Counter] = [:]
        for reason in OpportunityAggregator.EmitReason.allCases {
            emitted[reason] = Counter(
                label: "te_opportunities_emitted_total", dimensions: [("reason", reason.rawValue)])
        }
        self.emitted = emitted
        self.openWindows = Gauge(
            label: "te_opportunities_open_windows",
            dimensions: settings.shardIndex.map { [("shard", String($0))] } ?? [])
    }

    private func lock() async {
        if busy {
            await withCheckedContinuation { waiters.append($0) }
        } else {
            busy = true
        }
    }

    private func unlock() {
        if waiters.isEmpty {
            busy = false
        } else {
            waiters.removeFirst().resume()  // handed over: stays busy
        }
    }

    /// Loads the state from Redis (the worker calls this before its first batch).
    func prepare(redis: RedisClient) async throws {
        await lock()
        defer { unlock() }
        self.redis = redis
        try await reload(redis)
        logger.info(
            "aggregator state loaded",
            metadata: ["version": "\(version)", "open_windows": "\(aggregator.openWindows.count)"])
    }

    private func reload(_ redis: RedisClient) async throws {
        let fields = try await redis.hgetall(settings.stateKey)
        let decoded = try AggregatorStateCoding.decode(fields.map { ($0.key, $0.value) })
        aggregator = OpportunityAggregator(
            configuration: settings.aggregation, openWindows: decoded.openWindows, clocks: decoded.clocks)
        version = decoded.version
        openWindows.record(aggregator.openWindows.count)
    }

    func handle(_ batch: [StreamDelivery<Signal>]) async throws -> StageOutput {
        await lock()
        defer { unlock() }
        guard let redis else { throw AggregatorError.notPrepared }

        // One round trip: the committed version and which of the batch's ids were seen before.
        var query: [RedisCommand] = [RedisCommand("HGET", settings.stateKey, AggregatorStateCoding.versionField)]
        query.append(RedisCommand(["MGET"] + batch.map { settings.seenKey($0.message.id) }))
        let replies = try await redis.pipeline(query)
        let committed = try Self.version(replies[0])
        if committed != version {
            logger.warning(
                "aggregator state out of sync with Redis (a write was lost); reloading",
                metadata: ["expected": "\(version)", "redis": "\(committed)"])
            try await reload(redis)
        }
        guard case .array(let seenReplies) = replies[1], seenReplies.count == batch.count else {
            throw AggregatorError.unexpectedReply("MGET replied \(replies[1])")
        }

        // Work on a copy: if anything below throws, the state stays as it was.
        var next = aggregator
        var output = StageOutput()
        var emissions: [OpportunityAggregator.Emission] = []
        var seenInBatch = Set<String>()
        var remember: [String] = []
        var counts = (duplicate: 0, stale: 0, lowConfidence: 0)
        for (delivery, seen) in zip(batch, seenReplies) {
            let signal = delivery.message
            if let problem = Self.problem(with: signal) {
                output.deadLetter(id: delivery.id, reason: problem)
                continue
            }
            guard seen.isNull, seenInBatch.insert(signal.id).inserted else {
                counts.duplicate += 1
                continue
            }
            remember.append(signal.id)
            let applied = next.apply(signal)
            emissions.append(contentsOf: applied.emissions)
            switch applied.disposition {
            case .opened, .merged, .upgraded: break
            case .duplicate: counts.duplicate += 1
            case .stale: counts.stale += 1
            case .lowConfidence: counts.lowConfidence += 1
            }
        }
        if let latest = next.latestEventTime {
            emissions.append(contentsOf: next.tick(now: latest &- settings.closeGraceNs))
        }

        let newVersion = version + 1
        try append(emissions, changes: next.takeChanges(), version: newVersion, to: &output)
        for id in remember {
            output.append(.set(settings.seenKey(id), "1", expireSeconds: settings.seenTTLSeconds))
        }

        aggregator = next
        version = newVersion
        lastInput = .now
        count(emissions)
        if counts.duplicate > 0 { duplicates.increment(by: counts.duplicate) }
        if counts.stale > 0 { stale.increment(by: counts.stale) }
        if counts.lowConfidence > 0 { lowConfidence.increment(by: counts.lowConfidence) }
        return output
    }

    /// Closes windows once input has been quiet for `IDLE_CLOSE_MS`: event time is taken to have moved on
    /// from the latest event time by the wall time since the last input. Writes directly (its own
    /// MULTI/EXEC), and only when the last batch's output is committed (Redis `version` equals ours);
    /// otherwise it waits for the next round.
    func closeIfIdle() async {
        await lock()
        defer { unlock() }
        guard let redis, let latest = aggregator.latestEventTime, !aggregator.openWindows.isEmpty else { return }
        let idle = ContinuousClock.now - lastInput
        guard idle >= settings.idleCloseAfter else { return }
        var next = aggregator
        let (idleNs, overflow) = latest.addingReportingOverflow(Self.nanoseconds(idle))
        let emissions = next.tick(now: overflow ? .max : idleNs)
        guard !emissions.isEmpty else { return }
        do {
            let committed = try Self.version(
                try await redis.send(RedisCommand("HGET", settings.stateKey, AggregatorStateCoding.versionField)))
            guard committed == version else { return }
            var output = StageOutput()
            try append(emissions, changes: next.takeChanges(), version: version + 1, to: &output)
            _ = try await redis.transaction(output.commands)
            aggregator = next
            version += 1
            count(emissions)
            logger.debug("idle windows closed", metadata: ["count": "\(emissions.count)"])
        } catch {
            // Not written, or written without our knowing: the next batch's version check settles it.
            logger.warning("closing idle windows failed", metadata: ["error": "\(error)"])
        }
    }

    private func append(
        _ emissions: [OpportunityAggregator.Emission], changes: OpportunityAggregator.Changes, version: Int64,
        to output: inout StageOutput
    ) throws {
        for emission in emissions {
            try output.add(emission.opportunity, to: settings.outputStream, maxLen: settings.streamMaxLen)
        }
        let state = try AggregatorStateCoding.encode(changes, version: version)
        output.append(.hset(settings.stateKey, fields: state.set))
        if !state.delete.isEmpty { output.append(RedisCommand(["HDEL", settings.stateKey] + state.delete)) }
    }

    private func count(_ emissions: [OpportunityAggregator.Emission]) {
        for emission in emissions { emitted[emission.reason]?.increment() }
        openWindows.record(aggregator.openWindows.count)
    }

    /// What makes a decoded signal unusable (dead-lettered): the state keys and ids rely on these.
    static func problem(with signal: Signal) -> String? {
        if !Symbol.isValid(signal.symbol) { return "field 'symbol': not a valid symbol: \"\(signal.symbol)\"" }
        if !(0...1).contains(signal.confidence) {
            return "field 'confidence': must be in [0, 1], got \(signal.confidence)"
        }
        if signal.id.isEmpty { return "field 'id': empty" }
        if signal.tsNs <= 0 { return "field 'ts_ns': must be positive" }
        return nil
    }

    static func version(_ reply: RedisReply) throws -> Int64 {
        if reply.isNull { return 0 }
        guard let text = reply.string, let value = Int64(text) else {
            throw AggregatorError.unexpectedReply("state version is \(reply)")
        }
        return value
    }

    static func nanoseconds(_ d: Duration) -> Int64 {
        let c = d.components
        return c.seconds * 1_000_000_000 + c.attoseconds / 1_000_000_000
    }
}

enum AggregatorError: Error, CustomStringConvertible {
    case notPrepared
    case unexpectedReply(String)

    var description: String {
        switch self {
        case .notPrepared: "aggregator state not loaded yet"
        case .unexpectedReply(let text): "unexpected Redis reply: \(text)"
        }
    }
}

/// The worker's view of the core.
struct AggregatorStage: StreamStage {
    typealias Input = Signal

    let stage = "opportunity-aggregator"
    let core: AggregatorCore
    let inputStream: String

    func prepare(redis: RedisClient) async throws {
        try await core.prepare(redis: redis)
    }

    func handle(_ batch: [StreamDelivery<Signal>]) async throws -> StageOutput {
        try await core.handle(batch)
    }
}

/// Closes windows when the input goes quiet (see `AggregatorCore.closeIfIdle`).
struct IdleCloser: Service {
    let core: AggregatorCore
    let interval: Duration

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
            await core.closeIfIdle()
        }
    }
}
