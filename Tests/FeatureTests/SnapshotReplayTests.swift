import FeatureEngine
import TEModels
import TestSupport
import Testing

/// `te explain`'s rebuild of one snapshot from the ticks before it equals, bit for bit, the snapshot the
/// streaming engine made with the whole history: on random ticks (equal timestamps, gaps longer than W), on a
/// recording, and with a late tick just before the window.
@Suite("SnapshotReplay")
struct SnapshotReplayTests {
    /// For every `every`-th snapshot of `ticks`, the ticks up to its quote fed backwards.
    static func check(_ ticks: [Tick], windowNs: Int64, every: Int) -> (checked: Int, failures: [String]) {
        var engine = FeatureEngine(windowNs: windowNs)
        var failures: [String] = []
        var checked = 0
        var n = 0
        for (i, tick) in ticks.enumerated() {
            guard case .snapshot(let streamed) = engine.apply(tick) else { continue }
            n += 1
            guard n % every == 0 else { continue }
            var replay = SnapshotReplay<Int>(symbol: tick.symbol, tsNs: streamed.tsNs, windowNs: windowNs)
            for j in stride(from: i, through: 0, by: -1) where !replay.complete {
                replay.feedBackwards(.init(tick: ticks[j], origin: j))
            }
            let result = replay.result(recorded: streamed.features)
            checked += 1
            guard let rebuilt = result.snapshot else {
                failures.append("tick \(i): no snapshot")
                continue
            }
            let sameBits = zip(rebuilt.features.values, streamed.features.values).allSatisfy {
                $0.bitPattern == $1.bitPattern
            }
            if !sameBits || !FeatureBits.equal(rebuilt.features, streamed.features) {
                failures.append("tick \(i): \(rebuilt.features.values) vs \(streamed.features.values)")
            }
            // The window it shows is the one the snapshot counted (its last quote is the snapshot's own).
            if result.quotes.count != streamed.nQuotes || result.trades.count != streamed.nTrades {
                failures.append(
                    "tick \(i): \(result.quotes.count)/\(result.trades.count) vs \(streamed.nQuotes)/\(streamed.nTrades)"
                )
            }
            if result.quotes.last?.origin != i && result.quotesAtT == 1 {
                failures.append("tick \(i): last quote \(String(describing: result.quotes.last?.origin))")
            }
        }
        return (checked, failures)
    }

    /// In receive order, as `ingest` writes them (late ticks: `lateQuoteIsNotTakenForThePreviousOne`).
    @Test func randomTicksWithEqualTimestampsAndGaps() {
        let windowNs: Int64 = 1_000_000_000
        let ticks = randomTicks(count: 6000, windowNs: windowNs, seed: 19, outOfOrder: false)
        let (checked, failures) = Self.check(ticks, windowNs: windowNs, every: 7)
        #expect(checked > 300)
        #expect(failures.isEmpty, "\(failures.prefix(5))")
    }

    @Test func recording() throws {
        let ticks = try NormalizedRecording.ticks(try RecordedData.file("binance/usdm_btcusdt_20240718.gz"))
        let (checked, failures) = Self.check(ticks, windowNs: 5_000_000_000, every: 97)
        #expect(checked > 50)
        #expect(failures.isEmpty, "\(failures.prefix(5))")
    }

    @Test func lateQuoteIsNotTakenForThePreviousOne() {
        // W = 1 s, t = 3 s. The quote at 1.8 s is the one the window's first quote pairs with; right after it
        // comes a late quote at 0.5 s, which the service dropped (older than 1.8 s) although it is the first
        // quote a backwards scan meets at or before t − W.
        func quote(_ ms: Int64, _ bid: Double) -> Tick {
            Tick(symbol: "X", tsNs: ms * 1_000_000, kind: .quote, bid: bid, bidSize: bid - 99, ask: bid + 1, askSize: 2)
        }
        let ticks = [quote(0, 100), quote(1800, 103), quote(500, 99), quote(2500, 101), quote(3000, 102)]
        var engine = FeatureEngine(windowNs: 1_000_000_000)
        var streamed: FeatureSnapshot?
        for t in ticks { if case .snapshot(let s) = engine.apply(t) { streamed = s } }
        var replay = SnapshotReplay<Int>(symbol: "X", tsNs: 3_000_000_000, windowNs: 1_000_000_000)
        for (i, t) in ticks.enumerated().reversed() where !replay.complete {
            replay.feedBackwards(.init(tick: t, origin: i))
        }
        let result = replay.result()
        #expect(result.previousQuote?.origin == 1)
        #expect(result.snapshot == streamed)
    }

    @Test func previousQuoteIsTheOnePairedWith() {
        // Quotes at 0, 1 s, 2.5 s, 3 s with W = 1 s: the window of the last holds 2.5 s and 3 s, and 1 s is
        // the quote its first term pairs with; the quote at 0 lies W before that one and ends the scan.
        func quote(_ ms: Int64, _ bid: Double) -> Tick {
            Tick(symbol: "X", tsNs: ms * 1_000_000, kind: .quote, bid: bid, bidSize: 1, ask: bid + 1, askSize: 2)
        }
        let ticks = [quote(0, 100), quote(1000, 101), quote(2500, 102), quote(3000, 103)]
        var replay = SnapshotReplay<Int>(symbol: "X", tsNs: 3_000_000_000, windowNs: 1_000_000_000)
        for (i, t) in ticks.enumerated().reversed() { replay.feedBackwards(.init(tick: t, origin: i)) }
        #expect(replay.complete)
        let result = replay.result()
        #expect(result.previousQuote?.origin == 1)
        #expect(result.quotes.map(\.origin) == [2, 3])
        #expect(result.snapshot?.nQuotes == 2)
    }
}
