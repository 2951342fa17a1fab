import Synchronization
import TEModels

/// Canary and shadow routing, following the shared rollout state. Canary requests are chosen sticky per
/// request id: FNV-1a of the id (the client's `X-Request-Id`, else a generated UUID) mapped to [0, 1)
/// below `CANARY_FRACTION` — a retried request with the same id lands on the same version, and the
/// share of requests is exact in expectation whatever the mix of symbols.
///
/// Every replica serves what the shared `RolloutState` says (polled by `RolloutFollower`): configured,
/// rolled back (no canary or shadow traffic) or promoted (the canary version answers as primary). A
/// breach this replica sees stops its own canary traffic at once (the safe direction) while its
/// compare-and-set on the shared state is under way; the next state applied decides from then on.
final class CanaryController: Sendable {
    let primaryVersion: String
    let version: String
    let canaryEnabled: Bool
    let shadowEnabled: Bool
    let fraction: Double

    private struct State {
        var monitor: CanaryMonitor
        /// The last breach this replica saw, and the generation it was judged under.
        var breach: CanaryMonitor.Breach?
        var breachPending: Int64?
        var followed = RolloutState()
    }

    private let state: Mutex<State>

    init(
        primaryVersion: String = "1", version: String, canaryEnabled: Bool, shadowEnabled: Bool, fraction: Double,
        limits: CanaryMonitor.Limits
    ) {
        self.primaryVersion = primaryVersion
        self.version = version
        self.canaryEnabled = canaryEnabled
        self.shadowEnabled = shadowEnabled
        self.fraction = fraction
        state = Mutex(State(monitor: CanaryMonitor(limits: limits)))
    }

    /// The last breach this replica's own observations caused (nil when the canary was never breached here).
    var rollback: CanaryMonitor.Breach? { state.withLock { $0.breach } }

    /// What this replica serves now.
    var status: RolloutState.Status {
        state.withLock { Self.status($0, primary: primaryVersion, canary: version) }
    }

    /// The shared state last applied.
    var followed: RolloutState { state.withLock { $0.followed } }

    private static func status(_ s: State, primary: String, canary: String) -> RolloutState.Status {
        s.breachPending != nil ? .rolledBack : s.followed.status(primary: primary, canary: canary)
    }

    var active: Bool { status == .configured }

    /// The version answering as primary: the configured one, or the canary once promoted.
    var servingPrimary: String { RolloutState.servingPrimary(status, primary: primaryVersion, canary: version) }

    /// Whether this request is answered by the canary.
    func routesToCanary(requestID: String) -> Bool {
        guard canaryEnabled, fraction > 0, active else { return false }
        return Self.unitHash(requestID) < fraction
    }

    var shadowing: Bool { shadowEnabled && active }

    /// Records one canary observation; on the transition to a breach returns it with the generation it was
    /// judged under (the expected generation of the shared rollback).
    func record(_ observation: CanaryMonitor.Observation) -> (CanaryMonitor.Breach, generation: Int64)? {
        state.withLock { s in
            guard Self.status(s, primary: primaryVersion, canary: version) == .configured else { return nil }
            guard let breach = s.monitor.record(observation) else { return nil }
            s.breach = breach
            s.breachPending = s.followed.generation
            return (breach, s.followed.generation)
        }
    }

    /// Applies the shared state (a newer generation replaces the older, and any local breach judged under
    /// an older one: the shared state now says what happened). Returns the served status before and after,
    /// nil when the state is not newer than the one followed.
    func apply(_ shared: RolloutState) -> (from: RolloutState.Status, to: RolloutState.Status)? {
        state.withLock { s in
            // Generations only grow (the hash is changed by compare-and-set, never deleted): an older or
            // equal one is what this replica already follows.
            guard shared.generation > s.followed.generation else { return nil }
            let before = Self.status(s, primary: primaryVersion, canary: version)
            s.monitor = CanaryMonitor(limits: s.monitor.limits)
            s.followed = shared
            s.breachPending = nil
            return (before, Self.status(s, primary: primaryVersion, canary: version))
        }
    }

    /// FNV-1a 64 of the bytes, as a number in [0, 1).
    static func unitHash(_ s: String) -> Double {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in s.utf8 {
            h ^= UInt64(b)
            h &*= 0x100_0000_01b3
        }
        // Final avalanche (splitmix64) so ids differing in one late character spread over [0, 1).
        h ^= h >> 30
        h &*= 0xbf58_476d_1ce4_e5b9
        h ^= h >> 27
        h &*= 0x94d0_49bb_1331_11eb
        h ^= h >> 31
        return Double(h >> 11) / Double(1 << 53)
    }
}
