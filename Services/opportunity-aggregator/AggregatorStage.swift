import Logging
import Metrics
import ServiceKit
import Strategies
import TEModels
import TERedis

/// The aggregator over one signal shard, run by the `ShardedStreamWorker` of the replica holding the shard's
/// lease: one worker handles the shard's batches and idle closes in turn, so the state needs no lock.
///
/// **Crash safety.** The state (open windows, symbols' event clocks, a `version` counting committed outputs)
/// lives in the hash `{prefix}:state`. Each output — the opportunities into the shard's outbox
/// (`{prefix}:outbox`), the changed state fields, the new version, the `{prefix}:seen:{id}` keys of the batch's
/// signals — is written in the SAME fenced step as the batch's XACK, in the shard's slot. So at any crash point
/// either all of it happened (the entries are acknowledged and never come again) or none of it did (the
/// entries stay pending, and whoever handles them next reloads the state as of before them and produces the
/// same outputs again). A replica that lost the shard has its step refused: nothing of it is written.
///
/// **Outbox.** `te:opportunities` is one stream in another slot, so opportunities reach it after the step:
/// `ShardOutbox` relays the committed outbox entries, each exactly once (see docs/sharding.md).
///
/// **Out of sync.** The worker may fail to write an output after `handle` returned (Redis gone), and it then
/// re-reads the pending entries without telling the stage. Each `handle` therefore first compares the
/// `version` in Redis with the version its last output carried; on a mismatch it reloads the state from
/// Redis before applying the batch.
///
/// **Duplicates.** A signal id already in `{prefix}:seen:*` (TTL `SEEN_TTL_SEC`) or already earlier in the
/// same batch is a duplicate: ignored and counted (`te_signals_duplicate_total`). Every other signal —
/// applied, stale or low-confidence — is remembered.
struct AggregatorStage: StreamStage {
    typealias Input = Signal

    let stage = "opportunity-aggregator"
    let settings: AggregatorSettings
    var inputStream: String { settings.inputStream }
    var callsIdle: Bool { true }
    var logger: Logger
    private var aggregator: OpportunityAggregator
    /// The version the last output carried (what Redis holds once that output is committed).
    private var version: Int64 = 0
    private var redis: RedisClient?
    /// When input last arrived (or windows were last closed on idleness), on the wall clock.
    private var lastInput = ContinuousClock.now
    private let outbox: ShardOutbox
    /// The outbox may hold entries not relayed yet: at start, after a reload, after an output with
    /// opportunities, after a failed relay.
    private var relayDue = true
    /// The last outbox entry known relayed (nil: unknown, read the whole outbox).
    private var relayedThrough: String?
    /// Relayed outbox entries up to this id are trimmed in the next output.
    private var trimThrough: String?

    private let emitted: [OpportunityAggregator.EmitReason: Counter]
    private let duplicates = Counter(label: "te_signals_duplicate_total")
    private let stale = Counter(label: "te_signals_stale_total")
    private let lowConfidence = Counter(label: "te_signals_low_confidence_total")
    private let relayFailures = Counter(label: "te_opportunities_relay_failures_total")
    /// Per shard when sharded: each shard reports its own windows (one unlabelled gauge would show whichever
    /// shard wrote last).
    private let openWindows: Gauge

    init(settings: AggregatorSettings, logger: Logger) {
        self.settings = settings
        var logger = logger
        logger[metadataKey: "state"] = "\(settings.stateKey)"
        self.logger = logger
        self.aggregator = OpportunityAggregator(configuration: settings.aggregation)
        self.outbox = ShardOutbox(
            outbox: settings.outboxKey, target: settings.outputStream, relayed: settings.relayedKey,
            maxLen: settings.streamMaxLen)
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

    /// Loads the state from Redis (before the first batch of this owner).
    mutating func prepare(redis: RedisClient) async throws {
        self.redis = redis
        try await reload(redis)
        logger.info(
            "aggregator state loaded",
            metadata: ["version": "\(version)", "open_windows": "\(aggregator.openWindows.count)"])
    }

    private mutating func reload(_ redis: RedisClient) async throws {
        let fields = try await redis.hgetall(settings.stateKey)
        let decoded = try AggregatorStateCoding.decode(fields.map { ($0.key, $0.value) })
        aggregator = OpportunityAggregator(
            configuration: settings.aggregation, openWindows: decoded.openWindows, clocks: decoded.clocks)
        version = decoded.version
        relayDue = true
        relayedThrough = nil
        openWindows.record(aggregator.openWindows.count)
    }

    mutating func handle(_ batch: [StreamDelivery<Signal>]) async throws -> StageOutput {
        guard let redis else { throw AggregatorError.notPrepared }

        // One round trip: the committed version and which of the batch's ids were seen before.
        var query: [RedisCommand] = [RedisCommand("HGET", settings.stateKey, AggregatorStateCoding.versionField)]
        query.append(RedisCommand(["MGET"] + batch.map { settings.seenKey($0.message.id) }))
        let replies = try await redis.pipeline(query)
        try await sync(committed: try Self.version(replies[0]), redis)
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
        let entries = try append(emissions, changes: next.takeChanges(), version: newVersion, to: &output)
        for id in remember {
            output.append(.set(settings.seenKey(id), "1", expireSeconds: settings.seenTTLSeconds))
        }

        aggregator = next
        version = newVersion
        if entries > 0 { relayDue = true }
        lastInput = .now
        count(emissions)
        if counts.duplicate > 0 { duplicates.increment(by: counts.duplicate) }
        if counts.stale > 0 { stale.increment(by: counts.stale) }
        if counts.lowConfidence > 0 { lowConfidence.increment(by: counts.lowConfidence) }
        return output
    }

    /// The output is committed: relay what the outbox holds past the last relayed entry. Read back from the
    /// outbox, not from memory: only committed entries are there. A failed relay is retried with the next
    /// output or idle round; nothing is lost, the entries wait in the outbox.
    mutating func committed() async {
        guard let redis, relayDue else { return }
        do {
            if let last = try await outbox.relayAll(on: redis, after: relayedThrough) {
                relayedThrough = last
                trimThrough = last
            }
            relayDue = false
        } catch {
            relayFailures.increment()
            logger.warning("relaying opportunities failed; retried next round", metadata: ["error": "\(error)"])
        }
    }

    /// The input is quiet: relay a backlog, and close windows once input has been quiet for `IDLE_CLOSE_MS`
    /// (event time is taken to have moved on from the latest event time by the wall time since the last
    /// input). The output is written like a batch's, fenced; with nothing to close, relayed outbox entries
    /// are trimmed, so the outbox is empty at rest.
    mutating func idle() async throws -> StageOutput {
        if relayDue { await committed() }
        guard let redis, let latest = aggregator.latestEventTime, !aggregator.openWindows.isEmpty else {
            return trimOnly()
        }
        let idle = ContinuousClock.now - lastInput
        guard idle >= settings.idleCloseAfter else { return trimOnly() }
        try await sync(
            committed: Self.version(
                try await redis.send(RedisCommand("HGET", settings.stateKey, AggregatorStateCoding.versionField))),
            redis)
        var next = aggregator
        let (idleNs, overflow) = latest.addingReportingOverflow(Self.nanoseconds(idle))
        let emissions = next.tick(now: overflow ? .max : idleNs)
        guard !emissions.isEmpty else { return trimOnly() }
        var output = StageOutput()
        let entries = try append(emissions, changes: next.takeChanges(), version: version + 1, to: &output)
        aggregator = next
        version += 1
        if entries > 0 { relayDue = true }
        lastInput = .now
        count(emissions)
        logger.debug("idle windows closed", metadata: ["count": "\(emissions.count)"])
        return output
    }

    private mutating func trimOnly() -> StageOutput {
        guard let through = trimThrough else { return .none }
        trimThrough = nil
        var output = StageOutput()
        output.append(outbox.trim(through: through))
        return output
    }

    /// Reloads the state when Redis holds another version than our last output (that output was not
    /// written, or written without our knowing).
    private mutating func sync(committed: Int64, _ redis: RedisClient) async throws {
        guard committed != version else { return }
        logger.warning(
            "aggregator state out of sync with Redis (a write was lost); reloading",
            metadata: ["expected": "\(version)", "redis": "\(committed)"])
        try await reload(redis)
    }

    /// Appends the opportunities (into the outbox), the state changes and the trim of relayed outbox entries;
    /// returns how many opportunities.
    private mutating func append(
        _ emissions: [OpportunityAggregator.Emission], changes: OpportunityAggregator.Changes, version: Int64,
        to output: inout StageOutput
    ) throws -> Int {
        for (i, emission) in emissions.enumerated() {
            let fields = try StreamFieldWriter(encoding: emission.opportunity)
            output.append(outbox.add(ShardOutbox.Entry(id: ShardOutbox.id(version: version, index: i), fields: fields)))
        }
        let state = try AggregatorStateCoding.encode(changes, version: version)
        output.append(.hset(settings.stateKey, fields: state.set))
        if !state.delete.isEmpty { output.append(RedisCommand(["HDEL", settings.stateKey] + state.delete)) }
        if let through = trimThrough {
            output.append(outbox.trim(through: through))
            trimThrough = nil
        }
        return emissions.count
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
