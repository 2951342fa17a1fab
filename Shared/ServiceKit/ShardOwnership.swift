import TEModels

/// Which shards of a stage this replica owns, decided without I/O (see docs/sharding.md). Ownership is a
/// lease per (stage, shard) in Redis (`ShardLeases`); this type only decides, each round, from the live
/// replicas and the leases as read: which owned shards to renew, which were lost (drop at once: their
/// writes are fenced anyway), which to hand back so the replicas balance, and which free shards to try.
///
/// Balance: a replica aims for ceil(S / live replicas) shards. It keeps the shards it ranks highest
/// (rendezvous hashing of replica and shard, so replicas prefer different shards and a rebalance moves
/// few) and acquires free or expired ones in the same order. A live lease of another replica is never
/// taken: it moves only when its holder releases it or stops renewing it.
public struct ShardOwnership: Sendable {
    /// A lease as read from Redis.
    public struct Lease: Equatable, Sendable {
        /// nil: never held, or released.
        public var holder: String?
        /// The fencing token of the current (or last) holder.
        public var token: Int64
        /// Unexpired (Redis's own clock).
        public var live: Bool

        public init(holder: String?, token: Int64, live: Bool) {
            self.holder = holder
            self.token = token
            self.live = live
        }

        public static let free = Lease(holder: nil, token: 0, live: false)
    }

    public enum Action: Equatable, Sendable {
        /// Extend the lease held with `token`.
        case renew(shard: Int, token: Int64)
        /// Try to take the free or expired lease; report `.acquired` or `.refused`.
        case acquire(shard: Int)
        /// Stop the shard's worker (finish the batch in hand), then release the lease.
        case release(shard: Int, token: Int64)
        /// The lease is gone: stop the shard's worker now and drop its state.
        case drop(shard: Int)
        /// Run the shard's worker under `token` (its state rebuilt from the streams).
        case start(shard: Int, token: Int64)
    }

    public enum Event: Sendable {
        /// One round's view: the live replicas (heartbeats, this one included or not) and every shard's lease.
        case observed(members: [String], leases: [Lease])
        case acquired(shard: Int, token: Int64)
        case refused(shard: Int)
        /// A renewal's answer: false when the lease is no longer this replica's under its token.
        case renewed(shard: Int, held: Bool)
        /// The shard's worker had a write refused by the store: the lease is gone.
        case fenced(shard: Int)
    }

    public let shards: Int
    public let me: String
    /// Owned shards and their fencing tokens.
    public private(set) var owned: [Int: Int64] = [:]

    public init(shards: Int, me: String) {
        precondition(shards >= 1, "at least one shard")
        self.shards = shards
        self.me = me
    }

    /// ceil(S / replicas).
    public func target(replicas: Int) -> Int {
        let n = max(1, replicas)
        return (shards + n - 1) / n
    }

    /// This replica's preference for shard `k` (rendezvous hashing).
    public func rank(_ k: Int) -> UInt32 { StreamKey.fnv1a32("\(me)#\(k)") }

    public mutating func event(_ event: Event) -> [Action] {
        switch event {
        case .observed(let members, let leases):
            return observed(members: members, leases: leases)
        case .acquired(let k, let token):
            owned[k] = token
            return [.start(shard: k, token: token)]
        case .refused:
            return []
        case .renewed(let k, let held):
            if held { return [] }
            return owned.removeValue(forKey: k) == nil ? [] : [.drop(shard: k)]
        case .fenced(let k):
            return owned.removeValue(forKey: k) == nil ? [] : [.drop(shard: k)]
        }
    }

    private mutating func observed(members: [String], leases: [Lease]) -> [Action] {
        precondition(leases.count == shards, "one lease per shard")
        var actions: [Action] = []
        // Lost: another holder, or our name under another token (a restart of ours took it over).
        for (k, token) in owned.sorted(by: { $0.key < $1.key }) where leases[k].holder != me || leases[k].token != token
        {
            owned[k] = nil
            actions.append(.drop(shard: k))
        }
        let target = target(replicas: Set(members + [me]).count)
        let byPreference = owned.keys.sorted { (rank($0), $0) > (rank($1), $1) }
        for k in byPreference.dropFirst(target) {
            actions.append(.release(shard: k, token: owned.removeValue(forKey: k)!))
        }
        for k in owned.keys.sorted() { actions.append(.renew(shard: k, token: owned[k]!)) }
        if owned.count < target {
            // Free, expired, or ours from an earlier run of this replica (same name, older token).
            let candidates = (0..<shards).filter { k in
                owned[k] == nil && !actions.contains(.drop(shard: k))
                    && (leases[k].holder == nil || !leases[k].live || leases[k].holder == me)
            }
            for k in candidates.sorted(by: { (rank($0), $0) > (rank($1), $1) }).prefix(target - owned.count) {
                actions.append(.acquire(shard: k))
            }
        }
        return actions
    }
}
