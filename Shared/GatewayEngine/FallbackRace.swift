/// The model stage of the fallback chain as a pure state machine: the primary endpoint first; the
/// secondary once — immediately when the primary fails or is skipped by its breaker, or as a hedge when
/// the primary is still pending at the hedge time; the first success answers; at the model deadline
/// (or when both legs failed) the chain moves on to cache, rules, abstain. `reasons` says why the
/// earlier legs did not answer (`primary_timeout`, `primary_breaker_open`, `secondary_unavailable`, …).
struct FallbackRace: Sendable, Equatable {
    enum Leg: String, Sendable { case primary, secondary }

    enum LegState: Sendable, Equatable {
        case idle
        case running
        case failed
        case succeeded
    }

    enum Event: Sendable, Equatable {
        /// The leg's breaker refused the call.
        case skipped(Leg)
        case succeeded(Leg)
        case failed(Leg, reason: String)
        case hedgeDue
        case deadline
    }

    enum Action: Sendable, Equatable {
        case wait
        case start(Leg)
        case answer(Leg)
        case giveUp
    }

    private(set) var primary: LegState = .idle
    private(set) var secondary: LegState
    private(set) var reasons: [String] = []
    private(set) var finished = false

    /// `hasSecondary`: a secondary endpoint is configured.
    init(hasSecondary: Bool) {
        secondary = hasSecondary ? .idle : .failed
    }

    mutating func start() -> Action {
        primary = .running
        return .start(.primary)
    }

    mutating func on(_ event: Event) -> Action {
        guard !finished else { return .wait }
        switch event {
        case .skipped(let leg):
            reasons.append("\(leg.rawValue)_breaker_open")
            set(leg, .failed)
            return afterFailure(of: leg)
        case .failed(let leg, let reason):
            guard state(leg) == .running else { return .wait }
            reasons.append("\(leg.rawValue)_\(reason)")
            set(leg, .failed)
            return afterFailure(of: leg)
        case .succeeded(let leg):
            guard state(leg) == .running else { return .wait }
            set(leg, .succeeded)
            if leg == .secondary, primary == .running { reasons.append("primary_slow") }
            finished = true
            return .answer(leg)
        case .hedgeDue:
            guard primary == .running, secondary == .idle else { return .wait }
            secondary = .running
            return .start(.secondary)
        case .deadline:
            for leg in [Leg.primary, .secondary] where state(leg) == .running {
                reasons.append("\(leg.rawValue)_timeout")
                set(leg, .failed)
            }
            finished = true
            return .giveUp
        }
    }

    private mutating func afterFailure(of leg: Leg) -> Action {
        switch (primary, secondary) {
        case (.failed, .idle):
            secondary = .running
            return .start(.secondary)
        case (.failed, .failed):
            finished = true
            return .giveUp
        default:
            return .wait
        }
    }

    private func state(_ leg: Leg) -> LegState { leg == .primary ? primary : secondary }

    private mutating func set(_ leg: Leg, _ value: LegState) {
        if leg == .primary { primary = value } else { secondary = value }
    }
}
