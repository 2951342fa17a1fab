/// One per decision, on `te:outcomes` (written by `outcome-tracker` once the decision's horizon has passed
/// on the market clock), persisted by `audit-writer` in `outcomes`, keyed on `decision_id`. DESIGN.md
/// "Messages" and "Model quality".
public struct Outcome: StreamMessage, Equatable {
    public static let schemaVersion = 1

    public var decisionId: String
    public var symbol: String
    public var modelVersion: String?
    public var score: Double?
    public var decision: Decision
    public var horizonMs: Int
    public var midAtDecision: Double?
    public var midAtHorizon: Double?
    public var spreadBpsAtDecision: Double?
    /// ln(mid_at_horizon / mid_at_decision) × 1e4.
    public var returnBps: Double?
    /// The label; nil when there is none, and `reason` says why.
    public var eligible: Bool?
    /// The market time t + H at which the outcome was known (receive clock of `te:ticks`).
    public var resolvedTsNs: Int64
    public var reason: String?

    enum CodingKeys: String, CodingKey {
        case symbol, score, decision, eligible, reason
        case decisionId = "decision_id"
        case modelVersion = "model_version"
        case horizonMs = "horizon_ms"
        case midAtDecision = "mid_at_decision"
        case midAtHorizon = "mid_at_horizon"
        case spreadBpsAtDecision = "spread_bps_at_decision"
        case returnBps = "return_bps"
        case resolvedTsNs = "resolved_ts_ns"
    }

    public init(
        decisionId: String, symbol: String, modelVersion: String?, score: Double?, decision: Decision, horizonMs: Int,
        midAtDecision: Double? = nil, midAtHorizon: Double? = nil, spreadBpsAtDecision: Double? = nil,
        returnBps: Double? = nil, eligible: Bool? = nil, resolvedTsNs: Int64, reason: String? = nil
    ) {
        self.decisionId = decisionId
        self.symbol = symbol
        self.modelVersion = modelVersion
        self.score = score
        self.decision = decision
        self.horizonMs = horizonMs
        self.midAtDecision = midAtDecision
        self.midAtHorizon = midAtHorizon
        self.spreadBpsAtDecision = spreadBpsAtDecision
        self.returnBps = returnBps
        self.eligible = eligible
        self.resolvedTsNs = resolvedTsNs
        self.reason = reason
    }
}

/// A rollout step of a model (a canary rolled back, promoted or restored), on `te:rollout`, persisted
/// by `audit-writer` in `rollout_events` keyed on `event_id`. Not a decision: never on `te:audit`.
public struct RolloutEvent: StreamMessage, Equatable {
    public static let schemaVersion = 1

    public enum Kind: String, Codable, Sendable, CaseIterable { case rollback, promotion, restore }

    /// UUID.
    public var eventId: String
    public var tsNs: Int64
    public var kind: Kind
    public var modelName: String
    public var fromVersion: String?
    public var toVersion: String?
    /// What triggered it (`error_rate`, `p99_latency_ms`, `disagreement`, `brier`, …).
    public var metric: String?
    public var value: Double?
    public var limit: Double?
    /// The replica (host name) that acted.
    public var replica: String

    enum CodingKeys: String, CodingKey {
        case kind, metric, value, limit, replica
        case eventId = "event_id"
        case tsNs = "ts_ns"
        case modelName = "model_name"
        case fromVersion = "from_version"
        case toVersion = "to_version"
    }

    public init(
        eventId: String, tsNs: Int64, kind: Kind, modelName: String, fromVersion: String?, toVersion: String?,
        metric: String?, value: Double?, limit: Double?, replica: String
    ) {
        self.eventId = eventId
        self.tsNs = tsNs
        self.kind = kind
        self.modelName = modelName
        self.fromVersion = fromVersion
        self.toVersion = toVersion
        self.metric = metric
        self.value = value
        self.limit = limit
        self.replica = replica
    }
}
