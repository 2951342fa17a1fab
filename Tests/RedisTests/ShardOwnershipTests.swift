import Testing

@testable import ServiceKit

/// The ownership decisions of a sharded stage, round by round, without a server.
@Suite("ShardOwnership (no I/O)")
struct ShardOwnershipTests {
    typealias Lease = ShardOwnership.Lease

    static func held(_ holder: String, _ token: Int64, live: Bool = true) -> Lease {
        Lease(holder: holder, token: token, live: live)
    }

    static func acquires(_ actions: [ShardOwnership.Action]) -> [Int] {
        actions.compactMap { if case .acquire(let k) = $0 { k } else { nil } }
    }

    @Test func aLoneReplicaTakesEveryFreeShardAndStartsEachUnderItsToken() {
        var o = ShardOwnership(shards: 4, me: "a")
        let actions = o.event(.observed(members: ["a"], leases: Array(repeating: .free, count: 4)))
        #expect(Set(Self.acquires(actions)) == [0, 1, 2, 3])
        #expect(actions.count == 4)
        #expect(o.event(.acquired(shard: 2, token: 7)) == [.start(shard: 2, token: 7)])
        #expect(o.event(.refused(shard: 1)) == [])
        #expect(o.owned == [2: 7])
    }

    @Test func theShareIsTheCeilingOfShardsOverLiveReplicas() {
        let o = ShardOwnership(shards: 4, me: "a")
        #expect(o.target(replicas: 1) == 4)
        #expect(o.target(replicas: 2) == 2)
        #expect(o.target(replicas: 3) == 2)
        #expect(o.target(replicas: 5) == 1)
        #expect(o.target(replicas: 0) == 4)
    }

    @Test func aNewReplicaMakesTheHolderHandBackItsLeastPreferredShards() {
        var o = ShardOwnership(shards: 4, me: "a")
        for k in 0..<4 { _ = o.event(.acquired(shard: k, token: Int64(10 + k))) }
        let leases = (0..<4).map { Self.held("a", Int64(10 + $0)) }
        let actions = o.event(.observed(members: ["a", "b"], leases: leases))
        let released = actions.compactMap { if case .release(let k, let t) = $0 { (k, t) } else { nil } }
        let renewed = actions.compactMap { if case .renew(let k, _) = $0 { k } else { nil } }
        #expect(released.count == 2 && renewed.count == 2)
        // It keeps the two it ranks highest and releases each with its own token.
        let kept = (0..<4).sorted { (o.rank($0), $0) > (o.rank($1), $1) }.prefix(2)
        #expect(Set(renewed) == Set(kept))
        #expect(released.allSatisfy { $0.1 == Int64(10 + $0.0) })
        #expect(Set(o.owned.keys) == Set(kept))
        #expect(Self.acquires(actions).isEmpty)
    }

    @Test func aLiveLeaseOfAnotherReplicaIsNeverTakenAnExpiredOneIs() {
        var o = ShardOwnership(shards: 2, me: "b")
        let actions = o.event(
            .observed(members: ["b"], leases: [Self.held("a", 3), Self.held("a", 4, live: false)]))
        // "a" is not among the live replicas, but its lease of shard 0 has not expired: only shard 1.
        #expect(Self.acquires(actions) == [1])
    }

    @Test func aLeaseNowSomeoneElsesIsDroppedAtOnce() {
        var o = ShardOwnership(shards: 2, me: "a")
        _ = o.event(.acquired(shard: 0, token: 5))
        _ = o.event(.acquired(shard: 1, token: 6))
        // Paused past its lease: shard 0 went to "b" under a newer token.
        let actions = o.event(.observed(members: ["a", "b"], leases: [Self.held("b", 7), Self.held("a", 6)]))
        #expect(actions.first == .drop(shard: 0))
        #expect(actions.contains(.renew(shard: 1, token: 6)))
        #expect(!actions.contains(.acquire(shard: 0)))
        #expect(o.owned == [1: 6])
    }

    @Test func ourNameUnderANewerTokenIsARestartOfOursAndLost() {
        var o = ShardOwnership(shards: 1, me: "a")
        _ = o.event(.acquired(shard: 0, token: 5))
        let actions = o.event(.observed(members: ["a"], leases: [Self.held("a", 6)]))
        #expect(actions == [.drop(shard: 0)])
        #expect(o.owned.isEmpty)
    }

    @Test func anEarlierRunsLeaseUnderOurNameIsTakenOverWithoutWaiting() {
        var o = ShardOwnership(shards: 1, me: "a")
        // Restarted after a SIGKILL: its old lease is still live, under its own name.
        #expect(o.event(.observed(members: ["a"], leases: [Self.held("a", 9)])) == [.acquire(shard: 0)])
    }

    @Test func aFailedRenewalOrAFencedWriteDropsTheShard() {
        var o = ShardOwnership(shards: 2, me: "a")
        _ = o.event(.acquired(shard: 0, token: 1))
        _ = o.event(.acquired(shard: 1, token: 1))
        #expect(o.event(.renewed(shard: 0, held: true)) == [])
        #expect(o.event(.renewed(shard: 0, held: false)) == [.drop(shard: 0)])
        #expect(o.event(.fenced(shard: 1)) == [.drop(shard: 1)])
        #expect(o.event(.fenced(shard: 1)) == [])
        #expect(o.owned.isEmpty)
    }

    @Test func replicasRankShardsDifferently() {
        // Rendezvous ranking: with 8 shards two replicas do not prefer the same first four.
        let a = ShardOwnership(shards: 8, me: "replica-a")
        let b = ShardOwnership(shards: 8, me: "replica-b")
        let topA = Set((0..<8).sorted { a.rank($0) > a.rank($1) }.prefix(4))
        let topB = Set((0..<8).sorted { b.rank($0) > b.rank($1) }.prefix(4))
        #expect(topA != topB)
    }

    @Test func afterADeathTheSurvivorTakesUpToItsNewShare() {
        var o = ShardOwnership(shards: 4, me: "a")
        _ = o.event(.acquired(shard: 0, token: 1))
        _ = o.event(.acquired(shard: 1, token: 1))
        // "b" (shards 2, 3) stopped renewing: its heartbeat and leases expired.
        let leases = [
            Self.held("a", 1), Self.held("a", 1), Self.held("b", 1, live: false), Self.held("b", 1, live: false)
        ]
        let actions = o.event(.observed(members: ["a"], leases: leases))
        #expect(Set(Self.acquires(actions)) == [2, 3])
        #expect(actions.filter { if case .renew = $0 { true } else { false } }.count == 2)
    }
}
