/// Which master serves each of the 16384 slots, read from CLUSTER SHARDS (Redis ≥ 7) or CLUSTER SLOTS.
public struct RedisClusterSlotMap: Sendable, Equatable {
    /// Distinct masters, in the order the map first names them.
    public private(set) var masters: [RedisNodeAddress] = []
    /// Per slot, an index into `masters`; `unassigned` when no master serves it.
    private var owners: [UInt16]
    /// Per master, how many of its replicas the map names as online: what a write must reach before it
    /// survives a failover (`RedisClient.pipeline(_:replicated:)` waits for them with WAIT).
    public private(set) var onlineReplicas: [RedisNodeAddress: Int] = [:]
    private static let unassigned = UInt16.max

    public init() {
        owners = Array(repeating: Self.unassigned, count: RedisClusterSlot.count)
    }

    public init(ranges: [(slots: ClosedRange<Int>, master: RedisNodeAddress)]) {
        self.init()
        for (slots, master) in ranges { assign(slots, to: master) }
    }

    public var isEmpty: Bool { masters.isEmpty }

    /// True when every slot has a master.
    public var coversAllSlots: Bool { !owners.contains(Self.unassigned) }

    public func master(forSlot slot: Int) -> RedisNodeAddress? {
        let owner = owners[slot]
        return owner == Self.unassigned ? nil : masters[Int(owner)]
    }

    /// The online replicas of `master` (0 when the map names none, or does not know the node).
    public func replicas(of master: RedisNodeAddress) -> Int { onlineReplicas[master] ?? 0 }

    public mutating func setReplicas(_ count: Int, of master: RedisNodeAddress) { onlineReplicas[master] = count }

    public mutating func assign(_ slots: ClosedRange<Int>, to master: RedisNodeAddress) {
        let index: Int
        if let known = masters.firstIndex(of: master) {
            index = known
        } else {
            index = masters.count
            masters.append(master)
        }
        let clamped = max(slots.lowerBound, 0)...min(slots.upperBound, RedisClusterSlot.count - 1)
        for slot in clamped { owners[slot] = UInt16(index) }
        dropMastersWithoutSlots()
    }

    private mutating func dropMastersWithoutSlots() {
        var used = Array(repeating: false, count: masters.count)
        for owner in owners where owner != Self.unassigned { used[Int(owner)] = true }
        guard used.contains(false) else { return }
        var remap = Array(repeating: Self.unassigned, count: masters.count)
        var kept: [RedisNodeAddress] = []
        for (i, master) in masters.enumerated() where used[i] {
            remap[i] = UInt16(kept.count)
            kept.append(master)
        }
        masters = kept
        onlineReplicas = onlineReplicas.filter { kept.contains($0.key) }
        for slot in owners.indices where owners[slot] != Self.unassigned { owners[slot] = remap[Int(owners[slot])] }
    }

    // MARK: Parsing the cluster's replies

    /// CLUSTER SHARDS: `[[ "slots", [start, end, …], "nodes", [{id, port, ip, endpoint, role, health, …}, …] ], …]`.
    /// Each shard's master (role `master`) serves its slot ranges; `endpoint` is preferred over `ip`
    /// unless it is `?` (unknown) or empty. `replied` fills an empty host, as the spec asks.
    public static func fromShards(_ reply: RedisReply, repliedBy replied: RedisNodeAddress) throws(RedisError)
        -> RedisClusterSlotMap
    {
        guard let shards = reply.array else { throw RedisError(.unexpectedReply, "CLUSTER SHARDS replied \(reply)") }
        var map = RedisClusterSlotMap()
        for shard in shards {
            let fields = pairs(shard)
            guard let slots = fields["slots"]?.array, let nodes = fields["nodes"]?.array else {
                throw RedisError(.unexpectedReply, "CLUSTER SHARDS entry \(shard)")
            }
            // A failed master stays listed until its replica takes over; prefer the live one.
            let masters = nodes.map(pairs).filter { $0["role"]?.string == "master" }
            let master = masters.first { $0["health"]?.string == "online" } ?? masters.first
            guard let master, let port = master["port"]?.int else { continue }
            var host = master["endpoint"]?.string ?? ""
            if host.isEmpty || host == "?" { host = master["ip"]?.string ?? "" }
            if host.isEmpty { host = replied.host }
            let replicas = nodes.map(pairs).filter {
                $0["role"]?.string == "replica" && $0["health"]?.string == "online"
            }
            var i = 0
            while i + 1 < slots.count {
                guard let start = slots[i].int, let end = slots[i + 1].int, start <= end else {
                    throw RedisError(.unexpectedReply, "CLUSTER SHARDS slot range \(slots[i]) \(slots[i + 1])")
                }
                map.assign(Int(start)...Int(end), to: RedisNodeAddress(host: host, port: Int(port)))
                i += 2
            }
            if !slots.isEmpty { map.setReplicas(replicas.count, of: RedisNodeAddress(host: host, port: Int(port))) }
        }
        return map
    }

    /// CLUSTER SLOTS: `[[start, end, [host, port, id, …], replica…], …]`.
    public static func fromSlots(_ reply: RedisReply, repliedBy replied: RedisNodeAddress) throws(RedisError)
        -> RedisClusterSlotMap
    {
        guard let ranges = reply.array else { throw RedisError(.unexpectedReply, "CLUSTER SLOTS replied \(reply)") }
        var map = RedisClusterSlotMap()
        for range in ranges {
            guard let parts = range.array, parts.count >= 3, let start = parts[0].int, let end = parts[1].int,
                start <= end, let node = parts[2].array, node.count >= 2, let port = node[1].int
            else { throw RedisError(.unexpectedReply, "CLUSTER SLOTS entry \(range)") }
            var host = node[0].string ?? ""
            if host.isEmpty || host == "?" { host = replied.host }
            let master = RedisNodeAddress(host: host, port: Int(port))
            map.assign(Int(start)...Int(end), to: master)
            // The nodes after the master are its replicas (Redis leaves out the ones it holds failed).
            map.setReplicas(parts.count - 3, of: master)
        }
        return map
    }

    private static func pairs(_ reply: RedisReply) -> [String: RedisReply] { RedisClient.map(reply) }
}
