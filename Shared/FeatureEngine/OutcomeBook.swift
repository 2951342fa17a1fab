import TEModels

/// The live tracker's state (`outcome-tracker`): each symbol's recent quotes and the decisions waiting
/// for their horizon, keyed by their `te:audit` entry id. Pure value type: the service feeds it quotes and
/// decisions and asks it which outcomes are known; it owns no I/O and no clock (the caller passes one).
///
/// A decision's market time t is its `feature_ts_ns` when the gateway used its own features, else its
/// `ts_ns` (DESIGN.md "Model quality"; an AuditRecord carries no request `ts_ns`). It is resolved once its
/// symbol has a quote after t + H (`QuoteHistory.label`), or, after `maxHold` of the caller's clock
/// without that, as unlabelled (its feed stopped, or its symbol never quotes).
public struct OutcomeBook<Instant: Comparable & Sendable>: Sendable {
    public struct Held: Sendable, Equatable {
        public var record: AuditRecord
        public var marketTsNs: Int64
        public var heldSince: Instant
    }

    /// One outcome ready to be written, with the entry it acknowledges.
    public struct Emission: Sendable, Equatable {
        public var entryID: String
        public var outcome: Outcome
        public var record: AuditRecord
    }

    public let rule: OutcomeRule
    /// Quotes older than this (market time, before a symbol's latest) are dropped.
    public let historyNs: Int64
    private(set) var histories: [String: QuoteHistory] = [:]
    private(set) var held: [String: Held] = [:]

    public init(rule: OutcomeRule, historyNs: Int64) {
        self.rule = rule
        self.historyNs = historyNs
    }

    public var heldCount: Int { held.count }

    /// A decision's market time.
    public static func marketTime(_ record: AuditRecord) -> Int64 {
        record.featureTsNs ?? record.tsNs
    }

    /// True for entries of `te:audit` that are not decisions: the rollback markers older gateways wrote.
    public static func isDecision(_ record: AuditRecord) -> Bool {
        !(record.symbol == "*" && record.canary?.mode == "rollback")
    }

    /// Holds a decision (again, after a redelivery: the first hold counts).
    public mutating func admit(entryID: String, record: AuditRecord, now: Instant) {
        if held[entryID] != nil { return }
        held[entryID] = Held(record: record, marketTsNs: Self.marketTime(record), heldSince: now)
    }

    /// Applies one quote of `symbol` (dropped when older than its latest).
    public mutating func apply(symbol: String, quote: LabelQuote) {
        histories[symbol, default: QuoteHistory()].append(quote)
    }

    /// Drops quotes no decision within `historyNs` of each symbol's latest quote needs.
    public mutating func prune() {
        for symbol in histories.keys {
            guard let latest = histories[symbol]?.latestTsNs else { continue }
            histories[symbol]?.prune(keepingFrom: latest &- historyNs)
        }
    }

    /// Replaces the quotes (a rebuild from the stream after a restart).
    public mutating func replaceQuotes(_ rebuilt: [String: QuoteHistory]) {
        histories = rebuilt
    }

    /// The outcomes known now: decisions whose horizon has passed, and those held longer than `maxHold`
    /// (labelled as if no more quotes came). They stay held until `release`.
    public func ready(now: Instant, expiredBefore: Instant) -> [Emission] {
        var out: [Emission] = []
        for (entryID, h) in held {
            let history = histories[h.record.symbol] ?? QuoteHistory()
            var result = history.label(at: h.marketTsNs, rule: rule)
            if case .pending = result {
                guard h.heldSince < expiredBefore else { continue }
                result = history.finalLabel(at: h.marketTsNs, rule: rule)
            }
            out.append(Emission(entryID: entryID, outcome: outcome(h, result), record: h.record))
        }
        // Oldest decisions first, so the outcome stream follows market time.
        return out.sorted { ($0.outcome.resolvedTsNs, $0.entryID) < ($1.outcome.resolvedTsNs, $1.entryID) }
    }

    /// Forgets decisions whose outcome is written.
    public mutating func release<S: Sequence<String>>(_ entryIDs: S) {
        for id in entryIDs { held[id] = nil }
    }

    func outcome(_ h: Held, _ result: LabelResult) -> Outcome {
        let r = h.record
        var o = Outcome(
            decisionId: r.decisionId, symbol: r.symbol, modelVersion: r.modelVersion, score: r.score,
            decision: r.decision, horizonMs: rule.horizonMs, resolvedTsNs: h.marketTsNs &+ rule.horizonNs)
        switch result {
        case .labelled(let label):
            o.midAtDecision = label.midAtDecision
            o.midAtHorizon = label.midAtHorizon
            o.spreadBpsAtDecision = label.spreadBpsAtDecision
            o.returnBps = label.returnBps
            o.eligible = label.eligible
        case .unlabelled(let reason):
            o.reason = reason.rawValue
        case .pending:
            o.reason = UnlabelledReason.horizonUnresolved.rawValue
        }
        return o
    }
}
