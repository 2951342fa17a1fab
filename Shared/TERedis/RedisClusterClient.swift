import Foundation
import Logging
import Synchronization
import TECore

/// The I/O side of a `RedisClient` on a Redis Cluster: one `RedisIOThread` (one connection) per node,
/// the slot map re-read whenever it is known to be stale, and redirections followed as
/// `RedisClusterRouting` decides. A command that was not sent (connection refused) or was refused
/// by the cluster (TRYAGAIN, CLUSTERDOWN) is resent within `RedisClusterSettings.retryWindow`; a
/// connection that broke after a command was written throws the retriable error to the caller, as
/// on a single node, because the command may have run.
final class RedisClusterClient: Sendable {
    private let configuration: RedisConfiguration
    private let settings: RedisClusterSettings
    private let name: String
    private let logger: Logger

    private struct State {
        var routing = RedisClusterRouting()
        var nodes: [RedisNodeAddress: RedisIOThread] = [:]
        var closed = false
    }

    private let state = Mutex(State())

    init(configuration: RedisConfiguration, settings: RedisClusterSettings, name: String, logger: Logger) {
        self.configuration = configuration
        self.settings = settings
        self.name = name
        self.logger = logger
    }

    deinit { close() }

    func close() {
        let threads = state.withLock { s in
            s.closed = true
            return Array(s.nodes.values)
        }
        for thread in threads { thread.close() }
    }

    /// The current routing (tests and tools look at the slot map through it).
    var routing: RedisClusterRouting { state.withLock { $0.routing } }

    // MARK: Commands

    /// A pipeline: one write per node holding its share, replies in the caller's order, error replies
    /// (also CROSSSLOT of one command) in place. Keyspace-wide commands (`allMasters`) run first.
    /// `replicated`: each node's share is followed by `WAIT n` for that master's n online replicas (from
    /// the slot map), so what returns has reached them and survives a failover; a shortfall throws the
    /// retriable error (the writes may be on the master only: the caller resends idempotent writes).
    func pipeline(
        _ commands: [RedisCommand], extraTimeout: Duration? = nil, replicated: Bool = false
    ) async throws(RedisError) -> [RedisReply] {
        var replies = [RedisReply?](repeating: nil, count: commands.count)
        var units: [Unit] = []
        var commandOfUnit: [Int] = []
        for (i, command) in commands.enumerated() {
            let target: RedisClusterTarget
            do {
                target = try RedisClusterRouting.target(of: command)
            } catch {
                replies[i] = .error(error.message)
                continue
            }
            if target == .allMasters {
                replies[i] = try await broadcast(command)
            } else {
                units.append(Unit(commands: [command], target: target))
                commandOfUnit.append(i)
            }
        }
        let unitReplies = try await execute(units, extraTimeout: extraTimeout, replicated: replicated)
        for (unit, unitReply) in unitReplies.enumerated() { replies[commandOfUnit[unit]] = unitReply[0] }
        return replies.map { $0 ?? .null }
    }

    /// MULTI, `commands`, EXEC on the master of their one slot; returns the replies of all of them
    /// (MULTI's, each QUEUED, EXEC's). Keys in more than one slot throw CROSSSLOT before anything is sent.
    func transaction(_ commands: [RedisCommand]) async throws(RedisError) -> [RedisReply] {
        let slot = try RedisClusterRouting.transactionSlot(of: commands)
        let unit = Unit(
            commands: [RedisCommand("MULTI")] + commands + [RedisCommand("EXEC")],
            target: slot.map { .slot($0) } ?? .anyNode)
        return try await execute([unit], extraTimeout: nil, replicated: false)[0]
    }

    /// The masters of the current slot map (re-read first when stale).
    func masters() async throws(RedisError) -> [RedisNodeAddress] {
        try await refreshIfNeeded()
        return state.withLock { $0.routing.map.masters }
    }

    /// One command on one node, no redirections followed (SCAN's per-node cursors, broadcasts).
    func send(_ command: RedisCommand, to node: RedisNodeAddress) async throws(RedisError) -> RedisReply {
        switch await run([command], on: node, extraTimeout: nil) {
        case .replies(let replies): return replies[0]
        case .notSent(let error), .failed(let error):
            markStale()
            throw error
        }
    }

    /// Runs a keyspace-wide command on every master and merges the replies: the first error, else
    /// arrays concatenated, integers summed, or the first master's reply.
    private func broadcast(_ command: RedisCommand) async throws(RedisError) -> RedisReply {
        var replies: [RedisReply] = []
        for master in try await masters() { replies.append(try await send(command, to: master)) }
        if let error = replies.first(where: { if case .error = $0 { true } else { false } }) { return error }
        if replies.allSatisfy({ $0.array != nil }) { return .array(replies.flatMap { $0.array ?? [] }) }
        if replies.allSatisfy({ if case .integer = $0 { true } else { false } }) {
            return .integer(replies.reduce(0) { $0 + ($1.int ?? 0) })
        }
        return replies.first ?? .null
    }

    // MARK: Routing loop

    /// Commands sent together to one node: one command of a pipeline, or a whole MULTI … EXEC.
    private struct Unit {
        var commands: [RedisCommand]
        var target: RedisClusterTarget
    }

    private func execute(
        _ units: [Unit], extraTimeout: Duration?, replicated: Bool
    ) async throws(RedisError) -> [[RedisReply]] {
        var results = [[RedisReply]?](repeating: nil, count: units.count)
        var pending = Array(units.indices)
        var askingAt: [Int: RedisNodeAddress] = [:]
        var redirects = [Int](repeating: 0, count: units.count)
        let deadline = ContinuousClock.now + settings.retryWindow
        var attempt = 0
        while !pending.isEmpty {
            try await refreshIfNeeded()
            let routing = state.withLock { $0.routing }
            var placed: [(unit: Int, node: RedisNodeAddress, asking: Bool)] = []
            var retry: [Int] = []
            var lastError: RedisError?
            for unit in pending {
                if let node = askingAt[unit] {
                    placed.append((unit, node, true))
                } else if let node = routing.node(for: units[unit].target) {
                    placed.append((unit, node, false))
                } else {
                    retry.append(unit)
                    lastError = RedisError(.connection, "no master serves \(units[unit].target) in the slot map")
                }
            }
            askingAt = [:]
            let batches = RedisClusterRouting.batches(placed)
            let waits = batches.map { replicated ? routing.map.replicas(of: $0.node) : 0 }
            let outcomes = await run(batches, units, waits: waits, extraTimeout: extraTimeout)
            var mustWait = !retry.isEmpty
            for (b, (batch, outcome)) in zip(batches, outcomes).enumerated() {
                var outcome = outcome
                if waits[b] > 0, case .replies(var flat) = outcome {
                    let waited = flat.removeLast()
                    if case .error(let message) = waited {
                        throw RedisError(.server, "WAIT after the writes on \(batch.node) refused: \(message)")
                    }
                    let acknowledged = waited.int ?? 0
                    if acknowledged < Int64(waits[b]) {
                        markStale()
                        throw RedisError(
                            .connection,
                            "written on \(batch.node) but acknowledged by \(acknowledged) of its \(waits[b]) replicas within \(settings.replicaWait): not yet failover-safe"
                        )
                    }
                    outcome = .replies(flat)
                }
                switch outcome {
                case .notSent(let error):
                    lastError = error
                    retry.append(contentsOf: batch.units)
                    mustWait = true
                case .failed(let error):
                    markStale()
                    throw error
                case .replies(let flat):
                    var offset = 0
                    for unit in batch.units {
                        if batch.asking.contains(unit) { offset += 1 }  // ASKING's +OK
                        let count = units[unit].commands.count
                        let replies = Array(flat[offset..<offset + count])
                        offset += count
                        let redirect = state.withLock { $0.routing.redirect(in: replies, from: batch.node) }
                        switch redirect {
                        case nil:
                            results[unit] = replies
                        case .moved, .ask:
                            redirects[unit] += 1
                            if redirects[unit] > settings.maxRedirects {
                                results[unit] = replies
                            } else {
                                if case .ask(_, let to) = redirect { askingAt[unit] = to }
                                retry.append(unit)
                            }
                        case .tryLater:
                            // Kept in case the window closes: then the refusal is the reply.
                            results[unit] = replies
                            retry.append(unit)
                            mustWait = true
                        }
                    }
                }
            }
            if retry.isEmpty { break }
            if mustWait {
                if ContinuousClock.now >= deadline {
                    if let lastError, retry.contains(where: { results[$0] == nil }) { throw lastError }
                    break
                }
                logger.debug(
                    "redis cluster: waiting to resend",
                    metadata: [
                        "redis": "\(name)", "attempt": "\(attempt)",
                        "error": "\(lastError.map { "\($0)" } ?? "TRYAGAIN/CLUSTERDOWN")"
                    ])
                try? await Task.sleep(for: RedisClusterRouting.resend.delay(attempt: attempt + 1))
                attempt += 1
                markStale()
            }
            pending = retry.sorted()
        }
        return results.map { $0 ?? [] }
    }

    // MARK: Node I/O

    private enum Outcome {
        case replies([RedisReply])
        /// Nothing was written: the node could not be reached. Safe to send again.
        case notSent(RedisError)
        /// The connection broke or timed out after the commands were written: they may have run.
        case failed(RedisError)
    }

    /// Runs each batch on its node; `waits[i]` > 0 appends `WAIT waits[i] replicaWait` to batch i (its reply last).
    private func run(
        _ batches: [RedisClusterRouting.Batch], _ units: [Unit], waits: [Int], extraTimeout: Duration?
    ) async -> [Outcome] {
        let waitMs =
            Int(settings.replicaWait.components.seconds * 1000)
            + Int(settings.replicaWait.components.attoseconds / 1_000_000_000_000_000)
        func commands(of b: Int) -> [RedisCommand] {
            let batch = batches[b]
            var out: [RedisCommand] = []
            for unit in batch.units {
                if batch.asking.contains(unit) { out.append(RedisCommand("ASKING")) }
                out.append(contentsOf: units[unit].commands)
            }
            if waits[b] > 0 { out.append(RedisCommand("WAIT", String(waits[b]), String(waitMs))) }
            return out
        }
        let extraTimeout = waits.contains { $0 > 0 } ? (extraTimeout ?? .zero) + settings.replicaWait : extraTimeout
        if batches.count == 1 {
            return [await run(commands(of: 0), on: batches[0].node, extraTimeout: extraTimeout)]
        }
        let work = batches.indices.map { (node: batches[$0].node, commands: commands(of: $0)) }
        return await withTaskGroup(of: (Int, Outcome).self) { group in
            for (i, batch) in work.enumerated() {
                group.addTask { (i, await self.run(batch.commands, on: batch.node, extraTimeout: extraTimeout)) }
            }
            var outcomes = [Outcome](repeating: .replies([]), count: work.count)
            for await (i, outcome) in group { outcomes[i] = outcome }
            return outcomes
        }
    }

    private func run(_ commands: [RedisCommand], on node: RedisNodeAddress, extraTimeout: Duration?) async -> Outcome {
        guard let thread = thread(for: node) else { return .failed(RedisError(.closed, "client \(name) is closed")) }
        return await withCheckedContinuation { continuation in
            let accepted = thread.submit { connection in
                do throws(RedisError) {
                    try connection.connectIfNeeded()
                } catch {
                    continuation.resume(returning: .notSent(error))
                    return
                }
                do throws(RedisError) {
                    continuation.resume(
                        returning: .replies(try connection.execute(commands, extraTimeout: extraTimeout)))
                } catch {
                    continuation.resume(returning: .failed(error))
                }
            }
            if !accepted { continuation.resume(returning: .failed(RedisError(.closed, "client \(name) is closed"))) }
        }
    }

    private func thread(for node: RedisNodeAddress) -> RedisIOThread? {
        state.withLock { s in
            if s.closed { return nil }
            if let thread = s.nodes[node] { return thread }
            let thread = RedisIOThread(
                name: "\(name)-\(node.port)", configuration: configuration.node(node), logger: logger)
            s.nodes[node] = thread
            return thread
        }
    }

    // MARK: Slot map

    private func markStale() { state.withLock { $0.routing.needsRefresh = true } }

    private func refreshIfNeeded() async throws(RedisError) {
        guard state.withLock({ $0.routing.needsRefresh }) else { return }
        try await refreshMap()
    }

    /// Asks the known masters, then the seeds, for CLUSTER SHARDS (CLUSTER SLOTS on a server without
    /// it) and takes the first complete map; a partial one only when no node has a complete one.
    private func refreshMap() async throws(RedisError) {
        var candidates = state.withLock { $0.routing.map.masters }
        for seed in settings.seeds where !candidates.contains(seed) { candidates.append(seed) }
        var partial: RedisClusterSlotMap?
        var lastError = RedisError(.connection, "no cluster node answered")
        for node in candidates {
            do {
                var reply = try await send(RedisCommand("CLUSTER", "SHARDS"), to: node)
                var map: RedisClusterSlotMap
                if case .error = reply {
                    reply = try await send(RedisCommand("CLUSTER", "SLOTS"), to: node)
                    map = try RedisClusterSlotMap.fromSlots(try reply.throwingError(), repliedBy: node)
                } else {
                    map = try RedisClusterSlotMap.fromShards(reply, repliedBy: node)
                }
                if map.coversAllSlots {
                    install(map, from: node)
                    return
                }
                if partial == nil, !map.isEmpty { partial = map }
            } catch {
                lastError = error
            }
        }
        guard let partial else { throw lastError }
        install(partial, from: nil)
    }

    private func install(_ map: RedisClusterSlotMap, from node: RedisNodeAddress?) {
        let changed = state.withLock { s -> Bool in
            let changed = s.routing.map != map
            s.routing.replaceMap(map)
            return changed
        }
        if changed {
            logger.info(
                "redis cluster slot map read",
                metadata: [
                    "redis": "\(name)", "from": "\(node.map(\.description) ?? "several nodes")",
                    "masters": "\(map.masters.map(\.description).joined(separator: ","))",
                    "complete": "\(map.coversAllSlots)"
                ])
        }
    }
}
