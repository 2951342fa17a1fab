import DequeModule
import TEModels

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// The one definition of a decision's label (DESIGN.md "Model quality"), shared by `te features --label`
/// (offline, what models are trained on) and `outcome-tracker` (live). Pure: no I/O, no clock.
///
/// For a decision on symbol S at market time t with horizon H: `mid_at_decision` is the mid of S's
/// latest quote with `ts_ns` ≤ t, `mid_at_horizon` that of the latest quote ≤ t + H, `return_bps` =
/// ln(mid_at_horizon / mid_at_decision) × 1e4, and `eligible` = |return_bps| > spread_bps_at_decision / 2
/// + cost. A label is known only once S has a quote strictly after t + H: until then another quote at
/// or before t + H (even one with an equal timestamp) could still arrive, so the live tracker and the
/// offline pass, which sees the whole recording, agree on every label they both give.
public struct OutcomeRule: Sendable, Equatable {
    public let horizonNs: Int64
    public let costBps: Double

    /// - Parameters:
    ///   - horizonMs: H, `OUTCOME_HORIZON_MS`. Default: 5000.
    ///   - costBps: `OUTCOME_COST_BPS`. Default: 4.
    public init(horizonMs: Int = 5000, costBps: Double = 4) {
        precondition(horizonMs > 0, "the outcome horizon must be positive")
        self.horizonNs = Int64(horizonMs) * 1_000_000
        self.costBps = costBps
    }

    public var horizonMs: Int { Int(horizonNs / 1_000_000) }

    /// The label from the two quotes that define it.
    public func label(decision: LabelQuote, horizon: LabelQuote) -> OutcomeLabel {
        let md = decision.mid
        let mh = horizon.mid
        let spread = decision.spreadBps
        let returnBps = log(mh / md) * 1e4
        return OutcomeLabel(
            midAtDecision: md, midAtHorizon: mh, spreadBpsAtDecision: spread, returnBps: returnBps,
            eligible: returnBps.magnitude > spread / 2 + costBps)
    }
}

/// What the label needs of a quote.
public struct LabelQuote: Sendable, Equatable {
    public var tsNs: Int64
    public var bid: Double
    public var ask: Double

    public init(tsNs: Int64, bid: Double, ask: Double) {
        self.tsNs = tsNs
        self.bid = bid
        self.ask = ask
    }

    /// The quote part of a tick; nil for trades and quotes without a usable bid and ask.
    public init?(_ tick: Tick) {
        guard tick.kind == .quote, let bid = tick.bid, let ask = tick.ask, bid > 0, ask > 0, bid.isFinite, ask.isFinite
        else { return nil }
        self.init(tsNs: tick.tsNs, bid: bid, ask: ask)
    }

    public var mid: Double { (bid + ask) / 2 }
    public var spreadBps: Double { (ask - bid) / mid * 1e4 }
}

public struct OutcomeLabel: Sendable, Equatable {
    public var midAtDecision: Double
    public var midAtHorizon: Double
    public var spreadBpsAtDecision: Double
    public var returnBps: Double
    public var eligible: Bool
}

/// Why a decision has no label (`reason` of an Outcome whose `eligible` is null).
public enum UnlabelledReason: String, Sendable, Equatable {
    /// The symbol had no quote at or before the decision's market time.
    case noQuoteAtDecision = "no_quote_at_decision"
    /// No quote after t + H was seen (the recording ended, or the live feed stopped).
    case horizonUnresolved = "horizon_unresolved"
    /// The decision is older than the quotes kept for its symbol (live tracker only).
    case quoteHistoryPruned = "quote_history_pruned"
}

public enum LabelResult: Sendable, Equatable {
    case labelled(OutcomeLabel)
    case unlabelled(UnlabelledReason)
    /// Not yet known: the symbol's market clock has not passed t + H.
    case pending
}

/// One symbol's quotes in receive order, enough of them to label decisions: quotes older than the
/// latest one at or before a cut-off are dropped (`prune`), so the latest quote ≤ t stays exact for
/// every t at or after the cut-off. A quote older than the latest is dropped, not reordered (the rule of
/// the feature engine); equal timestamps are kept in arrival order and the last of them counts.
public struct QuoteHistory: Sendable {
    private var quotes: Deque<LabelQuote> = []
    /// Quotes were dropped from the front: a t before the first kept quote cannot be answered.
    public private(set) var pruned = false

    public init() {}

    public var latestTsNs: Int64? { quotes.last?.tsNs }
    public var count: Int { quotes.count }

    /// Appends `quote`; false (and nothing changes) when it is older than the latest.
    @discardableResult
    public mutating func append(_ quote: LabelQuote) -> Bool {
        if let last = quotes.last, quote.tsNs < last.tsNs { return false }
        quotes.append(quote)
        return true
    }

    /// The latest quote with `ts_ns` ≤ t (the last of equal timestamps), nil when there is none.
    public func latest(atOrBefore t: Int64) -> LabelQuote? {
        // Binary search for the first quote after t.
        var low = 0
        var high = quotes.count
        while low < high {
            let mid = (low + high) / 2
            if quotes[mid].tsNs <= t { low = mid + 1 } else { high = mid }
        }
        return low == 0 ? nil : quotes[low - 1]
    }

    /// The decision's label at market time t, or `.pending` while no quote after t + H has been seen.
    public func label(at t: Int64, rule: OutcomeRule) -> LabelResult {
        let horizonTs = t &+ rule.horizonNs
        guard let latest = latestTsNs, latest > horizonTs else { return .pending }
        return resolvedLabel(at: t, rule: rule)
    }

    /// The label as if no more quotes will come: what the offline pass gives at a recording's end.
    public func finalLabel(at t: Int64, rule: OutcomeRule) -> LabelResult {
        switch label(at: t, rule: rule) {
        case .pending:
            if case .unlabelled(let reason) = resolvedLabel(at: t, rule: rule) { return .unlabelled(reason) }
            return .unlabelled(.horizonUnresolved)
        case let result: return result
        }
    }

    private func resolvedLabel(at t: Int64, rule: OutcomeRule) -> LabelResult {
        guard let decision = latest(atOrBefore: t) else {
            return .unlabelled(pruned ? .quoteHistoryPruned : .noQuoteAtDecision)
        }
        // A decision quote exists, so one ≤ t + H does too.
        let horizon = latest(atOrBefore: t &+ rule.horizonNs) ?? decision
        return .labelled(rule.label(decision: decision, horizon: horizon))
    }

    /// Marks the history as not reaching back to the symbol's first quote (rebuilt from a stream that did
    /// not go back far enough): a t before its first quote is `quote_history_pruned`.
    public mutating func markTruncated() {
        pruned = true
    }

    /// Drops the quotes no decision at or after `t` needs: all before the latest quote ≤ t.
    public mutating func prune(keepingFrom t: Int64) {
        while quotes.count >= 2, quotes[1].tsNs <= t {
            quotes.removeFirst()
            pruned = true
        }
    }
}

/// The offline label pass of `te features --label`: rows (any payload) wait, in their original order,
/// until their symbol's quotes pass their horizon; one pass, each symbol's quotes kept only from its
/// oldest waiting row on. Feed every accepted quote with `observe` BEFORE the rows made at its time.
public struct OfflineLabeler<Row> {
    public let rule: OutcomeRule
    private var histories: [String: QuoteHistory] = [:]
    private var waiting: Deque<(row: Row, symbol: String, t: Int64)> = []
    /// Waiting rows per symbol, and the market time of each symbol's oldest one.
    private var waitingPerSymbol: [String: Deque<Int64>] = [:]

    public init(rule: OutcomeRule) {
        self.rule = rule
    }

    public mutating func observe(symbol: String, quote: LabelQuote) {
        histories[symbol, default: QuoteHistory()].append(quote)
    }

    public mutating func enqueue(_ row: Row, symbol: String, t: Int64) {
        waiting.append((row, symbol, t))
        waitingPerSymbol[symbol, default: []].append(t)
    }

    /// Rows whose label is known, in their original order (a row waits for the rows before it).
    public mutating func ready() -> [(Row, LabelResult)] {
        var out: [(Row, LabelResult)] = []
        while let head = waiting.first {
            let history = histories[head.symbol] ?? QuoteHistory()
            let result = history.label(at: head.t, rule: rule)
            if case .pending = result { break }
            out.append((head.row, result))
            dequeue(head.symbol)
        }
        return out
    }

    /// Every remaining row, labelled as the recording ended.
    public mutating func finish() -> [(Row, LabelResult)] {
        var out: [(Row, LabelResult)] = []
        while let head = waiting.first {
            out.append((head.row, (histories[head.symbol] ?? QuoteHistory()).finalLabel(at: head.t, rule: rule)))
            dequeue(head.symbol)
        }
        return out
    }

    private mutating func dequeue(_ symbol: String) {
        waiting.removeFirst()
        waitingPerSymbol[symbol]?.removeFirst()
        if let next = waitingPerSymbol[symbol]?.first {
            histories[symbol]?.prune(keepingFrom: next)
        } else if let latest = histories[symbol]?.latestTsNs {
            // Rows still to come are made at or after the latest quote.
            histories[symbol]?.prune(keepingFrom: latest)
        }
    }
}
