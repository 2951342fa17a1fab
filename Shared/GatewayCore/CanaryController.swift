import Synchronization

/// Canary and shadow routing plus the automatic rollback. Canary requests are chosen sticky per
/// request id: FNV-1a of the id (the client's `X-Request-Id`, else a generated UUID) mapped to [0, 1)
/// below `CANARY_FRACTION` — a retried request with the same id lands on the same version, and the
/// share of requests is exact in expectation whatever the mix of symbols.
public final class CanaryController: Sendable {
    public let version: String
    public let canaryEnabled: Bool
    public let shadowEnabled: Bool
    public let fraction: Double

    private struct State {
        var monitor: CanaryMonitor
        var rollback: CanaryMonitor.Breach?
    }

    private let state: Mutex<State>

    public init(version: String, canaryEnabled: Bool, shadowEnabled: Bool, fraction: Double, limits: CanaryMonitor.Limits) {
        self.version = version
        self.canaryEnabled = canaryEnabled
        self.shadowEnabled = shadowEnabled
        self.fraction = fraction
        state = Mutex(State(monitor: CanaryMonitor(limits: limits), rollback: nil))
    }

    /// Rolled back: neither canary nor shadow traffic any more (until restart).
    public var rollback: CanaryMonitor.Breach? { state.withLock { $0.rollback } }
    var active: Bool { rollback == nil }

    /// Whether this request is answered by the canary.
    public func routesToCanary(requestID: String) -> Bool {
        guard canaryEnabled, fraction > 0, active else { return false }
        return Self.unitHash(requestID) < fraction
    }

    public var shadowing: Bool { shadowEnabled && active }

    /// Records one canary observation; returns the breach only on the transition to rolled back.
    func record(_ observation: CanaryMonitor.Observation) -> CanaryMonitor.Breach? {
        state.withLock { s in
            guard s.rollback == nil else { return nil }
            guard let breach = s.monitor.record(observation) else { return nil }
            s.rollback = breach
            return breach
        }
    }

    /// FNV-1a 64 of the bytes, as a number in [0, 1).
    public static func unitHash(_ s: String) -> Double {
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
