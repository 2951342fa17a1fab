/// Per-endpoint circuit breaker as a value-type state machine: `closed` counts consecutive failures and
/// opens at the threshold; `open` rejects until its time is up, then lets exactly one probe through
/// (`halfOpen`); the probe's success closes it, its failure opens it again.
public struct CircuitBreaker: Sendable, Equatable {
    public enum State: Sendable, Equatable {
        case closed(consecutiveFailures: Int)
        case open(until: ContinuousClock.Instant)
        case halfOpen(probeInFlight: Bool)
    }

    public enum Permission: Sendable, Equatable {
        /// Closed: call normally.
        case allowed
        /// Half-open: this call is the probe; its outcome decides the state.
        case probe
        /// Open (or a probe is already out): skip this endpoint.
        case rejected
    }

    public let failureThreshold: Int
    public let openDuration: Duration
    public private(set) var state: State = .closed(consecutiveFailures: 0)

    public init(failureThreshold: Int, openDuration: Duration) {
        self.failureThreshold = max(1, failureThreshold)
        self.openDuration = openDuration
    }

    /// 0 closed, 1 half-open, 2 open: the value of `te_gateway_breaker_state`.
    public var gaugeValue: Int {
        switch state {
        case .closed: 0
        case .halfOpen: 1
        case .open: 2
        }
    }

    public mutating func acquire(now: ContinuousClock.Instant) -> Permission {
        switch state {
        case .closed:
            return .allowed
        case .open(let until):
            guard now >= until else { return .rejected }
            state = .halfOpen(probeInFlight: true)
            return .probe
        case .halfOpen(let probeInFlight):
            guard !probeInFlight else { return .rejected }
            state = .halfOpen(probeInFlight: true)
            return .probe
        }
    }

    public mutating func recordSuccess() {
        state = .closed(consecutiveFailures: 0)
    }

    public mutating func recordFailure(now: ContinuousClock.Instant) {
        switch state {
        case .closed(let failures):
            state =
                failures + 1 >= failureThreshold
                ? .open(until: now + openDuration) : .closed(consecutiveFailures: failures + 1)
        case .halfOpen:
            state = .open(until: now + openDuration)
        case .open:
            // A call admitted before the breaker opened reports late: keep the later reopening time.
            state = .open(until: now + openDuration)
        }
    }

    /// The call ended without a verdict (cancelled because another attempt answered first): a probe
    /// that did not finish lets the next call probe.
    public mutating func recordAbandoned(permission: Permission) {
        if permission == .probe, case .halfOpen = state { state = .halfOpen(probeInFlight: false) }
    }
}
