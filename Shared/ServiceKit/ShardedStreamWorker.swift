import Logging
import Metrics
import ServiceLifecycle
import Synchronization
import TERedis

/// The lease one shard's `WorkerLoop` reads, claims and writes under: each of its fenced scripts sends
/// `token`, and the store refuses them once the lease is gone. `allowsRead` only spares refused reads while a
/// renewal is late.
final class ShardFence: Sendable {
    let shard: Int
    let token: Int64
    let leases: ShardLeases
    let fenced: Counter
    let refusedReads: Counter
    private struct State {
        var validUntil: ContinuousClock.Instant
        var revoked = false
        var stopped = false
    }
    private let state: Mutex<State>

    init(
        shard: Int, token: Int64, leases: ShardLeases, validUntil: ContinuousClock.Instant, fenced: Counter,
        refusedReads: Counter
    ) {
        self.shard = shard
        self.token = token
        self.leases = leases
        self.fenced = fenced
        self.refusedReads = refusedReads
        state = Mutex(State(validUntil: validUntil))
    }

    /// A renewal sent at `sentAt` succeeded: Redis set the expiry no earlier than `sentAt + ttl`.
    func extend(to instant: ContinuousClock.Instant) { state.withLock { $0.validUntil = max($0.validUntil, instant) } }
    func revoke() { state.withLock { $0.revoked = true } }
    func markStopped() { state.withLock { $0.stopped = true } }
    var isStopped: Bool { state.withLock { $0.stopped } }

    /// True while the last renewal keeps the lease ours for a round trip more (the store decides; this
    /// only avoids sending reads it would refuse).
    func allowsRead() -> Bool {
        state.withLock { !$0.revoked && ContinuousClock.now + Self.margin < $0.validUntil }
    }

    static let margin = Duration.milliseconds(250)

    /// Why the store refused a `step` (read, claim, commit).
    func refusal(_ step: String, holder: String, token: Int64) -> String {
        "\(step) refused: the lease of shard \(shard) is \(holder.isEmpty ? "free" : holder)'s under token \(token), ours was \(self.token)"
    }
}

/// Runs a `StreamStage` over S shard streams (`STREAM_SHARDS`), each shard by exactly one live replica
/// of the stage at a time: a `WorkerLoop` per shard this replica holds the lease of (`ShardLeases`,
/// decided by `ShardOwnership`), its commits fenced by the lease's token in the same Lua step that
/// writes the outputs and acknowledges the input. Every `lease / 3` the replica heartbeats, reads the
/// leases, renews its own, hands back shards above its share and takes free ones; a shard it gains
/// starts from a fresh stage (`makeStage`), which rebuilds its state from the streams as a restart does,
/// after claiming every entry the previous owner left pending. See docs/sharding.md.
public struct ShardedStreamWorker<Stage: StreamStage>: Service {
    /// `STREAM_SHARDS` and `SHARD_LEASE_MS`, from the environment.
    public struct Settings: Sendable {
        public var shards: Int
        /// Lease time: a dead or paused owner's shards move after at most this (plus one round).
        public var lease: Duration

        public init(shards: Int = 1, lease: Duration = .seconds(3)) {
            self.shards = shards
            self.lease = lease
        }

        public static func fromEnvironment(_ env: Env) throws(ConfigurationError) -> Settings {
            let lease = try env.milliseconds("SHARD_LEASE_MS", default: .seconds(3))
            guard lease >= .milliseconds(600) else {
                throw ConfigurationError(variable: "SHARD_LEASE_MS", problem: "must be at least 600")
            }
            return Settings(shards: try env.stageShards(), lease: lease)
        }
    }

    public let stageName: String
    /// The input's unsharded name (`te:ticks`); shard k reads `StreamKey.sharded(input, k, S)`.
    public let input: String
    public let settings: Settings
    public let makeStage: @Sendable (_ shard: Int) -> Stage
    public let redis: RedisConfiguration
    public let configuration: StreamWorkerConfiguration
    public let readiness: ReadinessChecks?
    public let logger: Logger

    public init(
        stage stageName: String, input: String, settings: Settings, redis: RedisConfiguration,
        configuration: StreamWorkerConfiguration,
        readiness: ReadinessChecks? = nil, logger: Logger, makeStage: @escaping @Sendable (_ shard: Int) -> Stage
    ) {
        self.stageName = stageName
        self.input = input
        self.settings = settings
        self.makeStage = makeStage
        self.redis = redis
        self.configuration = configuration
        self.readiness = readiness
        self.logger = logger
    }

    /// A shard's worker: a child of `run`'s task group. `stop` ends its stop stream (the child then cancels
    /// its loop, which finishes the batch in hand); `done` ends when the child has returned.
    private struct Running {
        var stop: AsyncStream<Void>.Continuation
        var done: AsyncStream<Void>
        var fence: ShardFence
    }

    public func run() async throws {
        let control = RedisClient(configuration: redis, name: "\(stageName)-leases", logger: logger)
        defer { control.close() }
        readiness?.add("redis") { try await control.ping() }
        let ttlMs = Int(
            settings.lease.components.seconds * 1000 + settings.lease.components.attoseconds / 1_000_000_000_000_000)
        let leases = ShardLeases(
            stage: stageName, input: input, shards: settings.shards, me: configuration.consumerName, ttlMs: ttlMs)
        var driver = Driver(
            worker: self, control: control, leases: leases,
            ownership: ShardOwnership(shards: settings.shards, me: leases.me))
        driver.logger.info(
            "sharded stream worker starting", metadata: ["shards": "\(settings.shards)", "lease_ms": "\(ttlMs)"])
        // Every shard's worker is a child of this group: none outlives `run`, and each is stopped on its own.
        await withDiscardingTaskGroup { group in
            while !WorkerLoop<Stage>.shuttingDown {
                let roundStart = ContinuousClock.now
                do {
                    try await driver.round(&group)
                } catch {
                    driver.logger.warning("lease round failed", metadata: ["error": "\(error)"])
                }
                try? await cancelWhenGracefulShutdown {
                    try await Task.sleep(until: roundStart + settings.lease / 3, clock: .continuous)
                }
            }
            await driver.stopAll()
        }
        driver.logger.info("sharded stream worker stopped")
    }

    /// The I/O around `ShardOwnership`; lives inside one `run()`.
    private struct Driver {
        let worker: ShardedStreamWorker
        let control: RedisClient
        let leases: ShardLeases
        var ownership: ShardOwnership
        var running: [Int: Running] = [:]
        var logger: Logger
        let owned: Gauge
        let fenced: Counter
        let refusedReads: Counter
        let changes: [String: Counter]

        init(worker: ShardedStreamWorker, control: RedisClient, leases: ShardLeases, ownership: ShardOwnership) {
            self.worker = worker
            self.control = control
            self.leases = leases
            self.ownership = ownership
            var logger = worker.logger
            logger[metadataKey: "stage"] = "\(worker.stageName)"
            logger[metadataKey: "consumer"] = "\(leases.me)"
            self.logger = logger
            let dims = [("stage", worker.stageName)]
            owned = Gauge(label: "te_shards_owned", dimensions: dims)
            fenced = Counter(label: "te_stream_fenced_writes_total", dimensions: dims)
            refusedReads = Counter(label: "te_stream_fenced_reads_total", dimensions: dims)
            var changes: [String: Counter] = [:]
            for change in ["acquired", "released", "lost"] {
                changes[change] = Counter(label: "te_shard_changes_total", dimensions: dims + [("change", change)])
            }
            self.changes = changes
            owned.record(0)
        }

        mutating func round(_ group: inout DiscardingTaskGroup) async throws {
            var actions: [ShardOwnership.Action] = []
            for (k, r) in running where r.fence.isStopped {
                running[k] = nil
                actions += ownership.event(.fenced(shard: k))
            }
            let replies = try await control.pipeline([leases.heartbeat()] + (0..<leases.shards).map(leases.read))
            guard let members = try replies[0].throwingError().array?.compactMap(\.string) else {
                throw RedisError(.unexpectedReply, "heartbeat replied \(replies[0])")
            }
            var views: [ShardOwnership.Lease] = []
            for reply in replies.dropFirst() { views.append(try ShardLeases.parseLease(reply)) }
            actions += ownership.event(.observed(members: members, leases: views))
            try await perform(actions, &group)
            owned.record(ownership.owned.count)
        }

        /// Drops first (at once), then renewals (so a slow release cannot let a lease lapse), releases and
        /// acquisitions.
        mutating func perform(_ actions: [ShardOwnership.Action], _ group: inout DiscardingTaskGroup) async throws {
            var renewals: [(Int, Int64)] = []
            var releases: [(Int, Int64)] = []
            var acquisitions: [Int] = []
            for action in actions {
                switch action {
                case .drop(let k):
                    // Its writes are refused by the store already; stop it reading too.
                    running[k]?.fence.revoke()
                    running[k]?.stop.finish()
                    running[k] = nil
                    changes["lost"]?.increment()
                    logger.warning("shard lost: its lease is gone or another replica's", metadata: ["shard": "\(k)"])
                case .release(let k, let token):
                    releases.append((k, token))
                case .renew(let k, let token):
                    renewals.append((k, token))
                case .acquire(let k):
                    acquisitions.append(k)
                case .start(let k, let token):
                    start(k, token: token, validUntil: .now + worker.settings.lease, in: &group)
                }
            }
            if !renewals.isEmpty {
                let sentAt = ContinuousClock.now
                let replies = try await control.pipeline(
                    renewals.map { leases.acquire($0.0, token: $0.1, renew: true) })
                var more: [ShardOwnership.Action] = []
                for ((k, _), reply) in zip(renewals, replies) {
                    let (held, _) = try ShardLeases.parseAcquire(reply)
                    if held { running[k]?.fence.extend(to: sentAt + worker.settings.lease) }
                    more += ownership.event(.renewed(shard: k, held: held))
                }
                try await perform(more, &group)
            }
            for (k, token) in releases {
                await stop(k)
                _ = try await control.send(leases.release(k, token: token))
                changes["released"]?.increment()
                logger.info("shard released for balance", metadata: ["shard": "\(k)", "token": "\(token)"])
            }
            if !acquisitions.isEmpty {
                let sentAt = ContinuousClock.now
                let replies = try await control.pipeline(acquisitions.map { leases.acquire($0) })
                for (k, reply) in zip(acquisitions, replies) {
                    let (held, token) = try ShardLeases.parseAcquire(reply)
                    guard held else {
                        _ = ownership.event(.refused(shard: k))
                        continue
                    }
                    // A worker of an earlier lease of this shard is stopped first (its writes are fenced).
                    await stop(k)
                    _ = ownership.event(.acquired(shard: k, token: token))
                    changes["acquired"]?.increment()
                    logger.info("shard acquired", metadata: ["shard": "\(k)", "token": "\(token)"])
                    start(k, token: token, validUntil: sentAt + worker.settings.lease, in: &group)
                }
            }
        }

        mutating func start(
            _ k: Int, token: Int64, validUntil: ContinuousClock.Instant, in group: inout DiscardingTaskGroup
        ) {
            let fence = ShardFence(
                shard: k, token: token, leases: leases, validUntil: validUntil, fenced: fenced,
                refusedReads: refusedReads)
            var shardConfiguration = worker.configuration
            // The shard is this replica's alone now: whatever the previous owner left pending is claimed
            // at once (before any new entry), so the shard's entries are handled in order.
            shardConfiguration.claimMinIdle = .zero
            let configuration = shardConfiguration
            let stage = worker.makeStage(k)
            let (redis, name) = (worker.redis, "\(worker.stageName)-\(k)")
            var logger = logger
            logger[metadataKey: "shard"] = "\(k)"
            logger[metadataKey: "token"] = "\(token)"
            let shardLogger = logger
            let (stops, stop) = AsyncStream<Void>.makeStream()
            let (done, finished) = AsyncStream<Void>.makeStream()
            group.addTask {
                defer { finished.finish() }
                // Whichever ends first cancels the other: the stop stream ending (the worker then finishes
                // its batch in hand), or the worker returning by itself (its lease lost).
                await withTaskGroup(of: Void.self) { shard in
                    shard.addTask { for await _ in stops {} }
                    shard.addTask {
                        await Self.work(
                            stage: stage, redis: redis, name: name, configuration: configuration, fence: fence,
                            logger: shardLogger)
                    }
                    await shard.next()
                    shard.cancelAll()
                }
            }
            running[k] = Running(stop: stop, done: done, fence: fence)
        }

        /// One shard's worker, until it is cancelled or its lease is lost.
        static func work(
            stage: Stage, redis: RedisConfiguration, name: String, configuration: StreamWorkerConfiguration,
            fence: ShardFence, logger shardLogger: Logger
        ) async {
            let reader = RedisClient(configuration: redis, name: "\(name)-read", logger: shardLogger)
            let writer = RedisClient(configuration: redis, name: "\(name)-write", logger: shardLogger)
            defer {
                reader.close()
                writer.close()
                fence.markStopped()
            }
            var loop = WorkerLoop(
                stage: stage, reader: reader, writer: writer, configuration: configuration, fence: fence,
                logger: shardLogger)
            do {
                try await loop.run()
            } catch {
                shardLogger.error("shard worker failed", metadata: ["error": "\(error)"])
            }
        }

        /// Stops shard `k`'s worker gracefully (it finishes the batch in hand) and waits for it.
        mutating func stop(_ k: Int) async {
            guard let r = running.removeValue(forKey: k) else { return }
            r.stop.finish()
            for await _ in r.done {}
        }

        /// Graceful shutdown: every worker finishes its batch, then the leases and the heartbeat are
        /// handed back so the other replicas take the shards at once.
        mutating func stopAll() async {
            for k in running.keys.sorted() { await stop(k) }
            var commands = ownership.owned.sorted { $0.key < $1.key }.map { leases.release($0.key, token: $0.value) }
            commands.append(leases.heartbeat(leaving: true))
            do {
                _ = try await control.pipeline(commands)
            } catch {
                logger.warning("handing back the leases failed; they expire", metadata: ["error": "\(error)"])
            }
            owned.record(0)
        }
    }
}
