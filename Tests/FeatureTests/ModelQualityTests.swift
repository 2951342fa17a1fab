import FeatureEngine
import TEModels
import Testing

/// Quality math and the tracker's state on small fixtures, every number computed by hand.
@Suite("Model quality")
struct ModelQualityTests {
    func near(_ a: Double?, _ b: Double, _ tolerance: Double = 1e-12) -> Bool {
        guard let a else { return false }
        return abs(a - b) <= tolerance
    }

    @Test("precision, coverage, base rate, Brier and ECE of five outcomes")
    func summary() {
        let s = QualitySummary([
            ScoredOutcome(score: 0.9, traded: true, eligible: true),
            ScoredOutcome(score: 0.8, traded: true, eligible: false),
            ScoredOutcome(score: 0.3, traded: false, eligible: true),
            ScoredOutcome(score: 0.1, traded: false, eligible: false),
            ScoredOutcome(score: nil, traded: false, eligible: false)  // abstain: no score
        ])
        #expect(s.outcomes == 5)
        #expect(near(s.baseRate, 0.4))
        #expect(near(s.coverage, 0.4))
        #expect(near(s.precision, 0.5))
        // (0.1² + 0.8² + 0.7² + 0.1²) / 4 over the scored four.
        #expect(near(s.brier, 0.2875))
        #expect(near(s.constantBrier, 0.24))
        // One outcome per bin (9, 8, 3, 1): (0.1 + 0.8 + 0.7 + 0.1) / 4.
        #expect(near(s.ece, 0.425))
        #expect(s.reliability.map(\.count) == [1, 1, 1, 1])
        #expect(s.reliability.map(\.lower) == [0.1, 0.3, 0.8, 0.9])
    }

    @Test("ECE weighs a bin's gap between mean score and eligible rate; no trade, no precision")
    func eceOneBin() {
        let s = QualitySummary([
            ScoredOutcome(score: 0.2, traded: false, eligible: true),
            ScoredOutcome(score: 0.25, traded: false, eligible: false),
            ScoredOutcome(score: 0.28, traded: false, eligible: false)
        ])
        // mean score 0.73/3, rate 1/3: |0.24333 − 0.33333| = 0.09.
        #expect(near(s.ece, 0.09))
        #expect(s.precision == nil)
        #expect(s.reliability.count == 1)
        #expect(QualitySummary([ScoredOutcome]()).brier == nil)
        // Scores of exactly 1 (and outside [0, 1]) count in the end bins.
        #expect(QualitySummary([ScoredOutcome(score: 1, traded: true, eligible: true)]).reliability.first?.lower == 0.9)
    }

    @Test("a rolling window keeps the last N outcomes")
    func window() {
        var w = QualityWindow(capacity: 2)
        w.add(ScoredOutcome(score: 1, traded: true, eligible: false))
        w.add(ScoredOutcome(score: 1, traded: true, eligible: true))
        w.add(ScoredOutcome(score: 1, traded: true, eligible: true))
        #expect(w.summary.outcomes == 2)
        #expect(w.summary.precision == 1)
        #expect(w.summary.brier == 0)
    }

    @Test("PSI against a reference, with inner or outer edges, and an empty bin floored at 1e-4")
    func psi() {
        let inner = FeatureReference(edges: [0, 1], proportions: [0.25, 0.5, 0.25])
        let outer = FeatureReference(edges: [-10, 0, 1, 10], proportions: [0.25, 0.5, 0.25])
        #expect(inner.bin(-0.0001) == 0 && inner.bin(0) == 1 && inner.bin(1) == 2)
        #expect(outer.bin(-50) == 0 && outer.bin(0) == 1 && outer.bin(50) == 2)
        // Same proportions: 0.
        #expect(near(inner.psi([-1, 0.5, 0.5, 2]), 0))
        // a = [0.5, 0.25, 0.25]: 0.25·ln 2 + (−0.25)·ln 0.5 = 0.5·ln 2.
        #expect(near(inner.psi([-1, -2, 0.5, 2]), 0.34657359027997264))
        // a = [0 → 1e-4, 0.75, 0.25]: (1e-4 − 0.25)·ln(1e-4/0.25) + 0.25·ln 1.5.
        #expect(near(inner.psi([0.5, 0.5, 0.5, 2]), 2.0565953751400285))
        #expect(near(outer.psi([0.5, 0.5, 0.5, 2]), 2.0565953751400285))
        #expect(inner.psi([Double]()) == nil)
        #expect(FeatureReference(edges: [0, 1, 2, 3], proportions: [0.5, 0.5]).isValid == false)
    }

    func record(_ id: String, symbol: String = "BTCUSDT", featureTsNs: Int64?, tsNs: Int64 = 99_000_000_000)
        -> AuditRecord
    {
        AuditRecord(
            decisionId: id, requestId: id, tsNs: tsNs, symbol: symbol, decision: .trade, score: 0.7, source: .model,
            modelName: "trade_eligibility", modelVersion: "1", modelHash: "h", features: nil, featureAgeMs: 1,
            latencyUs: 10, featureTsNs: featureTsNs)
    }

    @Test("the book holds a decision until its symbol's clock passes t + H, then gives its outcome once released")
    func book() {
        var book = OutcomeBook<Int>(rule: OutcomeRule(horizonMs: 1000, costBps: 4), historyNs: 60_000_000_000)
        let ms: Int64 = 1_000_000
        book.apply(symbol: "BTCUSDT", quote: LabelQuote(tsNs: 0, bid: 9999.5, ask: 10000.5))
        book.admit(entryID: "1-0", record: record("a", featureTsNs: 0), now: 0)
        book.admit(entryID: "1-0", record: record("a", featureTsNs: 0), now: 5)  // redelivered: first hold counts
        book.admit(entryID: "2-0", record: record("b", symbol: "ETHUSDT", featureTsNs: 0), now: 0)
        book.apply(symbol: "BTCUSDT", quote: LabelQuote(tsNs: 900 * ms, bid: 10009.5, ask: 10010.5))
        #expect(book.ready(now: 1, expiredBefore: -1).isEmpty)
        book.apply(symbol: "BTCUSDT", quote: LabelQuote(tsNs: 1001 * ms, bid: 1, ask: 2))
        let ready = book.ready(now: 2, expiredBefore: -1)
        #expect(ready.map(\.entryID) == ["1-0"])
        #expect(ready.first?.outcome.eligible == true)
        #expect(ready.first?.outcome.midAtHorizon == 10010)
        #expect(ready.first?.outcome.resolvedTsNs == 1000 * ms)
        book.release(["1-0"])
        #expect(book.heldCount == 1)
        // ETHUSDT never quotes: after the hold limit it is written unlabelled.
        let expired = book.ready(now: 10, expiredBefore: 1)
        #expect(expired.map(\.entryID) == ["2-0"])
        #expect(expired.first?.outcome.eligible == nil)
        #expect(expired.first?.outcome.reason == "no_quote_at_decision")
    }

    @Test("market time: feature_ts_ns, else the decision's ts_ns; rollback markers are not decisions")
    func marketTime() {
        #expect(OutcomeBook<Int>.marketTime(record("a", featureTsNs: 5)) == 5)
        #expect(OutcomeBook<Int>.marketTime(record("a", featureTsNs: nil, tsNs: 7)) == 7)
        var marker = record("r", symbol: "*", featureTsNs: nil)
        #expect(OutcomeBook<Int>.isDecision(marker))
        marker.canary = CanaryResult(version: "2", score: nil, mode: "rollback")
        #expect(!OutcomeBook<Int>.isDecision(marker))
    }
}
