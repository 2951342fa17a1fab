import FeatureEngine
import Foundation
import Testing

/// The label on hand-made quote sequences; times in ms, H = 1000 ms, cost 4 bps.
@Suite("Outcome label")
struct OutcomeLabelTests {
    let rule = OutcomeRule(horizonMs: 1000, costBps: 4)

    func quote(_ ms: Int64, _ bid: Double, _ ask: Double) -> LabelQuote {
        LabelQuote(tsNs: ms * 1_000_000, bid: bid, ask: ask)
    }

    func ms(_ value: Int64) -> Int64 { value * 1_000_000 }

    func history(_ quotes: [LabelQuote]) -> QuoteHistory {
        var h = QuoteHistory()
        for q in quotes { h.append(q) }
        return h
    }

    func labelled(_ result: LabelResult) throws -> OutcomeLabel {
        guard case .labelled(let label) = result else {
            Issue.record("expected a label, got \(result)")
            throw CancellationError()
        }
        return label
    }

    @Test("mid, spread and return from the latest quotes at or before t and t + H")
    func basic() throws {
        // mid 10000 at t = 0 (spread 1 bp), 10010 at 900 ms, 10020 at 1500 ms (after t + H).
        let h = history([quote(0, 9999.5, 10000.5), quote(900, 10009.5, 10010.5), quote(1500, 10019.5, 10020.5)])
        let label = try labelled(h.label(at: ms(0), rule: rule))
        #expect(label.midAtDecision == 10000)
        #expect(label.midAtHorizon == 10010)
        #expect(label.spreadBpsAtDecision == 1)
        // ln(10010/10000) × 1e4 = 9.995 bps > 1/2 + 4: eligible.
        #expect(abs(label.returnBps - 9.995003331) < 1e-8)
        #expect(label.eligible)
        // A decision at 400 ms: decision quote still the one at 0, horizon (1400) the one at 900.
        #expect(try labelled(h.label(at: ms(400), rule: rule)) == label)
    }

    @Test("a move inside the cost is not eligible, whichever its sign")
    func cost() throws {
        // −3 bps against a threshold of 0.5 + 4 bps.
        let down = history([quote(0, 9999.5, 10000.5), quote(500, 9996.5, 9997.5), quote(2000, 9000, 9001)])
        let label = try labelled(down.label(at: ms(0), rule: rule))
        #expect(label.returnBps < 0)
        #expect(!label.eligible)
        // −10 bps: eligible (a move either way is worth trading).
        let bigDown = history([quote(0, 9999.5, 10000.5), quote(500, 9989.5, 9990.5), quote(2000, 9000, 9001)])
        #expect(try labelled(bigDown.label(at: ms(0), rule: rule)).eligible)
    }

    @Test("the horizon past the last quote: pending live, horizon_unresolved at the recording's end")
    func horizonPastTheEnd() {
        let h = history([quote(0, 99.99, 100.01), quote(800, 100.09, 100.11)])
        #expect(h.label(at: ms(0), rule: rule) == .pending)
        #expect(h.finalLabel(at: ms(0), rule: rule) == .unlabelled(.horizonUnresolved))
    }

    @Test("no quote at or before t: no_quote_at_decision once the horizon has passed")
    func noQuoteBefore() {
        let h = history([quote(100, 99.99, 100.01), quote(1500, 100.09, 100.11)])
        #expect(h.label(at: ms(50), rule: rule) == .unlabelled(.noQuoteAtDecision))
        #expect(QuoteHistory().label(at: ms(50), rule: rule) == .pending)
        #expect(QuoteHistory().finalLabel(at: ms(50), rule: rule) == .unlabelled(.noQuoteAtDecision))
        #expect(history([quote(100, 1, 1.1)]).finalLabel(at: ms(50), rule: rule) == .unlabelled(.noQuoteAtDecision))
    }

    @Test("equal timestamps: the last quote of a timestamp counts, and an older quote is dropped")
    func equalTimestamps() throws {
        var h = history([quote(0, 99.5, 100.5), quote(0, 100.5, 101.5), quote(1000, 101, 102)])
        let olderAccepted = h.append(quote(999, 1, 2))
        #expect(!olderAccepted)
        let equalAccepted = h.append(quote(1000, 101.5, 102.5))
        #expect(equalAccepted)
        #expect(h.label(at: ms(0), rule: rule) == .pending)  // the clock is at t + H, not past it
        h.append(quote(1001, 50, 51))
        let label = try labelled(h.label(at: ms(0), rule: rule))
        #expect(label.midAtDecision == 101)
        #expect(label.midAtHorizon == 102)
    }

    @Test("a quote exactly at t + H is the horizon quote; exactly at t the decision quote")
    func exactlyAtHorizon() throws {
        let h = history([quote(0, 99.5, 100.5), quote(1000, 100, 101), quote(1001, 200, 201)])
        let label = try labelled(h.label(at: ms(0), rule: rule))
        #expect(label.midAtDecision == 100)
        #expect(label.midAtHorizon == 100.5)
        // The last quote exactly at t + H: not resolved, since another at t + H could still come.
        let atEnd = history([quote(0, 99.5, 100.5), quote(1000, 100, 101)])
        #expect(atEnd.label(at: ms(0), rule: rule) == .pending)
        #expect(atEnd.finalLabel(at: ms(0), rule: rule) == .unlabelled(.horizonUnresolved))
    }

    @Test("pruning keeps the latest quote at or before the cut-off, and says so for older decisions")
    func pruning() throws {
        var h = history([quote(0, 1, 1.5), quote(100, 2, 2.5), quote(200, 3, 3.5), quote(5000, 4, 4.5)])
        h.prune(keepingFrom: ms(150))
        #expect(h.count == 3)
        #expect(h.latest(atOrBefore: ms(150))?.bid == 2)
        #expect(h.label(at: ms(50), rule: rule) == .unlabelled(.quoteHistoryPruned))
        #expect(try labelled(h.label(at: ms(150), rule: rule)).midAtDecision == 2.25)
    }

    @Test("the offline pass keeps row order, labels in one pass, and leaves the end empty")
    func offlinePass() {
        var labeler = OfflineLabeler<String>(rule: rule)
        var out: [(String, LabelResult)] = []
        // Two symbols interleaved: A's first row waits for A's quote after 1000; B's rows are behind it.
        let feed: [(String, LabelQuote)] = [
            ("A", quote(0, 99.5, 100.5)), ("B", quote(10, 9.5, 10.5)), ("B", quote(2000, 10.5, 11.5)),
            ("A", quote(1200, 100.5, 101.5)), ("A", quote(1300, 100.5, 101.5))
        ]
        for (i, (symbol, q)) in feed.enumerated() {
            labeler.observe(symbol: symbol, quote: q)
            labeler.enqueue("row\(i)", symbol: symbol, t: q.tsNs)
            out += labeler.ready()
        }
        #expect(out.map(\.0) == ["row0", "row1"])
        out += labeler.finish()
        #expect(out.map(\.0) == ["row0", "row1", "row2", "row3", "row4"])
        #expect(out.map { FeatureCSV.labelCells($0.1) }.suffix(3) == [",,", ",,", ",,"])
        guard case .labelled(let a) = out[0].1, case .labelled(let b) = out[1].1 else {
            Issue.record("rows 0 and 1 should be labelled")
            return
        }
        #expect(a.midAtHorizon == 100)  // A's latest quote ≤ 1000 is the one at 0
        #expect(b.midAtHorizon == 10)
        #expect(FeatureCSV.labelCells(out[0].1) == ",0.0,0")
    }
}
