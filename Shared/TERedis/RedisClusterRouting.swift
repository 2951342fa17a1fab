import TECore

/// Where a command goes on a cluster.
public enum RedisClusterTarget: Sendable, Equatable {
    /// The master serving this slot: the slot of all the command's keys.
    case slot(Int)
    /// No key: any node answers it (PING, CLUSTER …, SCRIPT with no keys, EVAL with 0 keys).
    case anyNode
    /// Keyspace-wide: every master runs it and the replies are merged (FLUSHALL, FLUSHDB, KEYS, DBSIZE,
    /// SCRIPT LOAD/FLUSH).
    case allMasters
}

/// A redirection or transient refusal in a cluster node's error reply.
public enum RedisClusterRedirect: Sendable, Equatable {
    /// `MOVED slot host:port`: the slot lives there now.
    case moved(slot: Int, to: RedisNodeAddress)
    /// `ASK slot host:port`: this one key is being migrated; ask there once, after ASKING.
    case ask(slot: Int, to: RedisNodeAddress)
    /// TRYAGAIN (a multi-key command during a migration), CLUSTERDOWN, MASTERDOWN, LOADING: the node
    /// cannot serve the slot right now; wait, re-read the slot map, send again.
    case tryLater

    /// Parses an error reply; an empty host (`MOVED 1 :7001`) is the host of the node that replied.
    public init?(errorMessage message: String, repliedBy node: RedisNodeAddress) {
        for prefix in ["TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "LOADING"] where message.hasPrefix(prefix) {
            self = .tryLater
            return
        }
        let parts = message.split(separator: " ")
        guard parts.count == 3, parts[0] == "MOVED" || parts[0] == "ASK", let slot = Int(parts[1]),
            (0..<RedisClusterSlot.count).contains(slot)
        else { return nil }
        let endpoint = parts[2].hasPrefix(":") ? "\(node.host)\(parts[2])" : String(parts[2])
        guard let address = RedisNodeAddress(endpoint) else { return nil }
        self = parts[0] == "MOVED" ? .moved(slot: slot, to: address) : .ask(slot: slot, to: address)
    }
}

/// The routing decisions of a cluster client without I/O: which node a command goes to, how a
/// pipeline splits into per-node batches, and what a redirection in a reply changes.
public struct RedisClusterRouting: Sendable {
    public private(set) var map: RedisClusterSlotMap
    /// Set when the map is known to be stale (a MOVED, a failed node): re-read it before the next send.
    public var needsRefresh: Bool

    public init(map: RedisClusterSlotMap = RedisClusterSlotMap()) {
        self.map = map
        self.needsRefresh = map.isEmpty
    }

    public mutating func replaceMap(_ map: RedisClusterSlotMap) {
        self.map = map
        needsRefresh = !map.coversAllSlots
    }

    // MARK: Commands → targets

    /// The target of one command; a command whose keys lie in different slots is refused with a
    /// CROSSSLOT error (Redis would refuse it the same way).
    public static func target(of command: RedisCommand) throws(RedisError) -> RedisClusterTarget {
        switch command.clusterKeys {
        case .none: return .anyNode
        case .allMasters: return .allMasters
        case .keys(let keys):
            guard let first = keys.first else { return .anyNode }
            let slot = RedisClusterSlot.slot(of: first)
            for key in keys.dropFirst() where RedisClusterSlot.slot(of: key) != slot {
                throw crossSlot("\(command.name) names keys in more than one slot", keys)
            }
            return .slot(slot)
        }
    }

    /// The one slot of a MULTI/EXEC transaction's (or a script's) commands: all their keys must share
    /// it. Keyless commands go along; a transaction with no key at all runs on any node (nil).
    public static func transactionSlot(of commands: [RedisCommand]) throws(RedisError) -> Int? {
        var slot: Int?
        var keys: [[UInt8]] = []
        for command in commands {
            switch try target(of: command) {
            case .anyNode: continue
            case .allMasters:
                throw RedisError(
                    .server, "CROSSSLOT \(command.name) runs on every master and cannot be part of a transaction")
            case .slot(let s):
                if case .keys(let k) = command.clusterKeys { keys.append(contentsOf: k) }
                if let slot, slot != s { throw crossSlot("a transaction's keys must all be in one slot", keys) }
                slot = s
            }
        }
        return slot
    }

    private static func crossSlot(_ what: String, _ keys: [[UInt8]]) -> RedisError {
        let shown = keys.prefix(4).map { key -> String in
            "\(String(decoding: key.prefix(64), as: UTF8.self)) → slot \(RedisClusterSlot.slot(of: key))"
        }
        return RedisError(
            .server,
            "CROSSSLOT \(what) (\(shown.joined(separator: ", "))); give keys that must change together one hash tag {…}"
        )
    }

    /// The master for `target`; nil when the slot has no known master (re-read the map first).
    public func node(for target: RedisClusterTarget) -> RedisNodeAddress? {
        switch target {
        case .slot(let slot): return map.master(forSlot: slot)
        case .anyNode, .allMasters: return map.masters.first
        }
    }

    // MARK: Pipelines → per-node batches

    /// One node's share of a pipeline: the indices of the units it runs, in the caller's order.
    public struct Batch: Sendable, Equatable {
        public var node: RedisNodeAddress
        public var units: [Int]
        /// Units that follow an ASK redirection: each is sent after ASKING.
        public var asking: Set<Int>
    }

    /// Groups `units` (index, node, asking) by node, nodes in order of first appearance and each
    /// node's units in the caller's order, so one write per node carries its whole share.
    public static func batches(_ units: [(unit: Int, node: RedisNodeAddress, asking: Bool)]) -> [Batch] {
        var batches: [Batch] = []
        var position: [RedisNodeAddress: Int] = [:]
        for (unit, node, asking) in units {
            let i: Int
            if let known = position[node] {
                i = known
            } else {
                i = batches.count
                position[node] = i
                batches.append(Batch(node: node, units: [], asking: []))
            }
            batches[i].units.append(unit)
            if asking { batches[i].asking.insert(unit) }
        }
        return batches
    }

    // MARK: Replies → what to do next

    /// The first redirection among one unit's replies (a transaction's queued commands each reply),
    /// after applying it to the map: MOVED moves the slot and marks the map for a re-read (a
    /// resharding or failover rarely moves one slot only); TRYAGAIN/CLUSTERDOWN mark it too.
    public mutating func redirect(in replies: [RedisReply], from node: RedisNodeAddress) -> RedisClusterRedirect? {
        for reply in replies {
            guard case .error(let message) = reply,
                let redirect = RedisClusterRedirect(errorMessage: message, repliedBy: node)
            else { continue }
            switch redirect {
            case .moved(let slot, let to):
                map.assign(slot...slot, to: to)
                needsRefresh = true
            case .tryLater:
                needsRefresh = true
            case .ask:
                break
            }
            return redirect
        }
        return nil
    }

    /// The wait before resending after a transient refusal (TRYAGAIN, CLUSTERDOWN, a node down): 25 ms
    /// doubling to 800 ms, jittered so clients do not retry in lockstep.
    public static let resend = RetryPolicy(initial: .milliseconds(25), maximum: .milliseconds(800))
}
