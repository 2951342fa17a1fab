import TEModels
import Testing

@testable import MarketData

/// A restart that restores the checkpoints of every book at message k must go on exactly like an
/// uninterrupted run: the property ingest relies on for bit-identical te:ticks across kills.
@Suite struct BookCheckpointTests {
    /// The ticks of `messages`, normalized in one run.
    func uninterrupted(_ messages: [RecordedMessage], depthLevels: Int = 10) -> [Tick] {
        var n = MarketNormalizer(depthLevels: depthLevels)
        return messages.flatMap { ticks(n.normalize(payload: $0.payload, receiveTsNs: $0.tsNs, key: $0.key)) }
    }

    /// The ticks of `messages` when the normalizer is replaced after message `k` by a new one holding only
    /// the checkpoints of the books that changed so far (as ingest stores them, through their text).
    func restarted(_ messages: [RecordedMessage], at k: Int, depthLevels: Int = 10) -> [Tick] {
        var n = MarketNormalizer(depthLevels: depthLevels)
        var out: [Tick] = []
        var stored: [String: String] = [:]
        for (i, m) in messages.enumerated() {
            if i == k {
                var fresh = MarketNormalizer(depthLevels: depthLevels)
                for (symbol, text) in stored {
                    let restored = fresh.restoreBook(symbol, checkpoint: Substring(text))
                    #expect(restored)
                }
                n = fresh
            }
            out += ticks(n.normalize(payload: m.payload, receiveTsNs: m.tsNs, key: m.key))
            for symbol in n.takeChangedBooks() { stored[symbol] = n.checkpoint(ofBook: symbol) }
        }
        return out
    }

    func firstMessages(_ path: String, _ limit: Int) throws -> [RecordedMessage] {
        let reader = try RecordingReader(path: path)
        var out: [RecordedMessage] = []
        while out.count < limit, let m = try reader.next() { out.append(m) }
        return out
    }

    @Test("spot: restored at any message (before, at and after the snapshot) = uninterrupted")
    func spotRestartAnywhere() throws {
        let messages = try firstMessages("\(dataDirectory)/binance/spot_btcusdt_20240808.gz", 1500)
        let expected = uninterrupted(messages)
        #expect(expected.contains { $0.bids != nil })
        for k in Array(0...20) + stride(from: 100, to: 1500, by: 350) {
            #expect(restarted(messages, at: k) == expected, "restart at message \(k)")
        }
    }

    @Test("USD-M futures (pu chains): restored = uninterrupted")
    func futuresRestart() throws {
        let messages = try firstMessages("\(dataDirectory)/binance/usdm_btcusdt_20240718.gz", 1500)
        let expected = uninterrupted(messages)
        for k in [1, 5, 9, 40, 700, 1400] { #expect(restarted(messages, at: k) == expected, "restart at message \(k)") }
    }

    @Test("Kraken books: restored = uninterrupted")
    func krakenRestart() throws {
        let messages = Array(
            try RecordingReader.readAll(path: "\(dataDirectory)/cryptofeed/KRAKEN.jsonl.zst").prefix(2000))
        let expected = uninterrupted(messages)
        for k in [3, 50, 1000, 1999] { #expect(restarted(messages, at: k) == expected, "restart at message \(k)") }
    }

    @Test("a checkpoint round-trips every state, buffered diffs and exact doubles")
    func roundTrip() {
        var book = BinanceOrderBook(snapshotTimeoutNs: 5)
        let diff = BinanceOrderBook.Diff(
            firstU: 7, lastU: 9, previousU: nil, tsNs: 3, bids: [.init(price: 0.1 + 0.2, size: 0)],
            asks: [.init(price: 1e-8, size: 123_456_789.000_000_1)])
        _ = book.apply(diff)
        var futures = diff
        futures.previousU = 6
        _ = book.apply(futures)
        for state in [book, synced(), outOfSync()] {
            let text = BookCheckpoint.encode(state)
            guard
                case .binance(let decoded) = BookCheckpoint.decode(
                    Substring(text), snapshotTimeoutNs: state.snapshotTimeoutNs)
            else {
                Issue.record("not decoded: \(text)")
                continue
            }
            #expect(decoded == state)
            #expect(BookCheckpoint.encode(decoded) == text)
        }
    }

    @Test(
        "damaged or unknown checkpoints are refused, not half-restored",
        arguments: [
            "", "binance 2 awaiting 0 0 0 0", "binance 1 synced x 0 0 0 0", "binance 1 awaiting 0 2 10 1 11 1 0 0",
            "binance 1 awaiting 0 1 10 0 0 0", "binance 1 awaiting 0 0 0 0 extra", "kraken 1 1 5 1", "kraken 1 0 0 0"
        ])
    func refused(text: String) {
        var n = MarketNormalizer()
        let restored = n.restoreBook("ABCUSDT", checkpoint: Substring(text))
        #expect(!restored)
        #expect(!n.hasBook("ABCUSDT"))
        #expect(n.checkpoint(ofBook: "ABCUSDT") == nil)
    }

    func synced() -> BinanceOrderBook {
        var book = BinanceOrderBook()
        _ = book.applySnapshot(
            lastUpdateId: 100, tsNs: 1, bids: [.init(price: 10, size: 1), .init(price: 9.9, size: 2)],
            asks: [.init(price: 10.1, size: 0.3)])
        _ = book.apply(
            .init(firstU: 99, lastU: 103, previousU: nil, tsNs: 2, bids: [.init(price: 9.95, size: 4)], asks: []))
        return book
    }

    func outOfSync() -> BinanceOrderBook {
        var book = synced()
        _ = book.apply(.init(firstU: 110, lastU: 111, previousU: nil, tsNs: 3, bids: [], asks: []))
        return book
    }
}

/// The sync state machine when a gap is not followed by a snapshot: it says so (events for the metrics and
/// the log) and quotes carry no depth, rather than serving a stale book.
@Suite struct BookGapTests {
    func diff(_ U: Int64, _ u: Int64, ts: Int64) -> BinanceOrderBook.Diff {
        .init(firstU: U, lastU: u, previousU: nil, tsNs: ts, bids: [.init(price: 9.9, size: 1)], asks: [])
    }

    @Test("gap → out of sync; no snapshot for the timeout → overdue once; snapshot → resynced")
    func gapWithoutSnapshot() {
        let second: Int64 = 1_000_000_000
        var book = BinanceOrderBook(snapshotTimeoutNs: 10 * second)
        #expect(
            book.applySnapshot(
                lastUpdateId: 100, tsNs: 0, bids: [.init(price: 10, size: 1)], asks: [.init(price: 11, size: 1)])
                == .synced)
        #expect(book.apply(diff(101, 102, ts: 1 * second)) == .applied)
        #expect(book.isSynced)
        #expect(book.apply(diff(105, 106, ts: 2 * second)) == .gap(expectedAfter: 102))
        #expect(book.state == .outOfSync(sinceNs: 2 * second, overdue: false))
        #expect(!book.isSynced && book.bids.isEmpty && book.asks.isEmpty)
        #expect(book.apply(diff(107, 108, ts: 11 * second)) == .buffered)
        #expect(book.apply(diff(109, 110, ts: 12 * second)) == .snapshotOverdue(waitedNs: 10 * second))
        #expect(book.apply(diff(111, 112, ts: 30 * second)) == .buffered, "reported once per gap")
        #expect(book.state == .outOfSync(sinceNs: 2 * second, overdue: true))
        #expect(
            book.applySnapshot(
                lastUpdateId: 108, tsNs: 31 * second, bids: [.init(price: 10, size: 2)],
                asks: [.init(price: 11, size: 2)])
                == .resynced(waitedNs: 29 * second))
        #expect(book.state == .synced(lastU: 112))
        #expect(book.resyncs == 1)
    }

    @Test("a snapshot whose buffered diffs do not connect is a gap again")
    func snapshotThatDoesNotConnect() {
        var book = BinanceOrderBook()
        #expect(book.apply(diff(200, 210, ts: 1)) == .buffered)
        #expect(book.applySnapshot(lastUpdateId: 100, tsNs: 2, bids: [], asks: []) == .gap(expectedAfter: 100))
        #expect(!book.isSynced)
    }

    @Test("through the normalizer: events in order, and quotes without bids/asks while out of sync")
    func normalizerEventsAndQuotes() {
        let second: Int64 = 1_000_000_000
        var n = MarketNormalizer(depthLevels: 3, snapshotTimeoutNs: 5 * second)
        func depth(_ U: Int, _ u: Int) -> String {
            #"{"stream":"abcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"ABCUSDT","U":\#(U),"u":\#(u),"b":[["9.9","2"]],"a":[]}}"#
        }
        let quote =
            #"{"stream":"abcusdt@bookTicker","data":{"u":1,"s":"ABCUSDT","b":"10.0","B":"1","a":"10.1","A":"1"}}"#
        let snapshot = #"{"lastUpdateId":100,"bids":[["10.0","1"],["9.8","3"]],"asks":[["10.1","1"],["10.2","2"]]}"#
        _ = n.normalize(payload: snapshot, receiveTsNs: 1, key: "ABCUSDT")
        _ = n.normalize(payload: depth(101, 102), receiveTsNs: 2, key: nil)
        #expect(
            ticks(n.normalize(payload: quote, receiveTsNs: 3, key: nil)).first?.bids == [[10.0, 1], [9.9, 2], [9.8, 3]])
        #expect(n.takeBookEvents().isEmpty)
        _ = n.normalize(payload: depth(110, 111), receiveTsNs: 4, key: nil)
        let gap = ticks(n.normalize(payload: quote, receiveTsNs: 5, key: nil)).first
        #expect(gap?.bids == nil && gap?.asks == nil && gap?.bid == 10.0, "no depth, L1 only")
        _ = n.normalize(payload: depth(112, 113), receiveTsNs: 4 + 6 * second, key: nil)
        #expect(
            n.takeBookEvents() == [
                BookEvent(symbol: "ABCUSDT", kind: .gap(expectedAfter: 102, firstU: 110, lastU: 111, previousU: nil)),
                BookEvent(symbol: "ABCUSDT", kind: .snapshotOverdue(waitedNs: 6 * second))
            ])
        _ = n.normalize(
            payload: #"{"lastUpdateId":111,"bids":[["10.0","1"]],"asks":[["10.1","1"]]}"#, receiveTsNs: 4 + 7 * second,
            key: "ABCUSDT")
        #expect(n.takeBookEvents() == [BookEvent(symbol: "ABCUSDT", kind: .resynced(waitedNs: 7 * second))])
        #expect(
            ticks(n.normalize(payload: quote, receiveTsNs: 5 + 7 * second, key: nil)).first?.bids == [
                [10.0, 1], [9.9, 2]
            ])
    }
}

@Suite struct DepthLevelsAndReasonTests {
    @Test("INGEST_DEPTH_LEVELS=0: quotes carry no bids/asks (Binance and Kraken)")
    func zeroLevels() throws {
        let spot = try BookCheckpointTests().firstMessages("\(dataDirectory)/binance/spot_btcusdt_20240808.gz", 400)
        let kraken = Array(
            try RecordingReader.readAll(path: "\(dataDirectory)/cryptofeed/KRAKEN.jsonl.zst").prefix(300))
        let quotes = BookCheckpointTests().uninterrupted(spot + kraken, depthLevels: 0).filter { $0.kind == .quote }
        #expect(quotes.contains { $0.venue == "kraken" } && quotes.contains { $0.venue == "binance" })
        #expect(quotes.allSatisfy { $0.bids == nil && $0.asks == nil })
        let one = BookCheckpointTests().uninterrupted(spot, depthLevels: 1).filter { $0.bids != nil }
        #expect(!one.isEmpty && one.allSatisfy { $0.bids!.count == 1 && $0.asks!.count == 1 })
    }

    @Test(
        "a zero or negative size is not a negative price",
        arguments: [
            (#"{"stream":"btcusdt@trade","data":{"s":"BTCUSDT","p":"10","q":"0","m":true}}"#, "non_positive_size"),
            (#"{"stream":"btcusdt@trade","data":{"s":"BTCUSDT","p":"10","q":"-1","m":true}}"#, "non_positive_size"),
            (
                #"{"stream":"btcusdt@bookTicker","data":{"s":"BTCUSDT","b":"1","B":"-1","a":"2","A":"1"}}"#,
                "negative_size"
            ),
            (#"{"stream":"btcusdt@trade","data":{"s":"BTCUSDT","p":"0","q":"1","m":true}}"#, "negative_price"),
            (#"{"stream":"btcusdt@trade","data":{"s":"BTCUSDT","p":"-5","q":"1","m":true}}"#, "negative_price"),
            (
                #"{"symbol":"BTCUSDT","ts_ns":5,"kind":"quote","bid":0,"bid_size":1,"ask":2,"ask_size":1}"#,
                "negative_price"
            )
        ])
    func sizeReasons(payload: String, code: String) {
        var n = MarketNormalizer()
        let r = rejection(n.normalize(payload: payload, receiveTsNs: 1, key: "BTCUSDT"))
        #expect(r?.code == code, "\(String(describing: r))")
        #expect(NormalizeRejection.codes.contains(code))
    }
}
