import Foundation
import MarketData
import TEModels
import Testing

@Suite("Market-data normalization")
struct NormalizerTests {
    @Test("spot BTCUSDT: one quote per bookTicker, one trade per trade line, depth from a synced book")
    func spotCounts() throws {
        let messages = try Recordings.messages("binance/spot_btcusdt_20240808.gz")
        var bookTickers = 0
        var tradeLines = 0
        for m in messages {
            let text = String(decoding: m.payload.prefix(60), as: UTF8.self)
            if text.contains("@bookTicker") { bookTickers += 1 }
            if text.contains("@trade") { tradeLines += 1 }
        }
        var normalizer = MarketDataNormalizer()
        var quotes = 0
        var trades = 0
        var quotesWithDepth = 0
        var rejections: [String: Int] = [:]
        var lastTs: Int64 = 0
        for m in messages {
            let result = normalizer.normalize(payload: m.payload, receiveTsNs: m.receiveTsNs, key: m.symbol)
            if let r = result.rejection { rejections[r.reason, default: 0] += 1 }
            for tick in result.ticks {
                #expect(tick.symbol == "BTCUSDT")
                #expect(tick.tsNs >= lastTs)
                lastTs = tick.tsNs
                switch tick.kind {
                case .quote:
                    quotes += 1
                    if let bids = tick.bids, let asks = tick.asks, bids.count > 1, asks.count > 1 {
                        quotesWithDepth += 1
                        #expect(bids[0] == [tick.bid!, tick.bidSize!])
                        #expect(zip(bids, bids.dropFirst()).allSatisfy { $0[0] > $1[0] })
                        #expect(zip(asks, asks.dropFirst()).allSatisfy { $0[0] < $1[0] })
                    }
                case .trade: trades += 1
                }
            }
        }
        #expect(bookTickers == 28040)
        #expect(tradeLines == 9757)
        #expect(rejections == [:])
        #expect(quotes == bookTickers)
        #expect(trades == tradeLines)
        #expect(quotesWithDepth > quotes / 2)
    }

    @Test("first ticks of the spot recording, by hand")
    func firstTicks() throws {
        var n = MarketDataNormalizer()
        let quote = n.normalize(
            payload: Array(#"{"stream":"btcusdt@bookTicker","data":{"u":50093239212,"s":"BTCUSDT","b":"61837.63000000","B":"3.78826000","a":"61837.64000000","A":"1.54698000"}}"#.utf8),
            receiveTsNs: 1_723_161_254_087_891_268, key: "BTCUSDT")
        #expect(quote.ticks == [
            Tick(symbol: "BTCUSDT", tsNs: 1_723_161_254_087_891_268, kind: .quote, bid: 61837.63, bidSize: 3.78826,
                 ask: 61837.64, askSize: 1.54698, venue: "binance", seq: 50_093_239_212)
        ])
        let trade = n.normalize(
            payload: Array(#"{"stream":"btcusdt@trade","data":{"e":"trade","E":1723161255343,"s":"BTCUSDT","t":3735683259,"p":"61837.63000000","q":"0.02000000","T":1723161255342,"m":true,"M":true}}"#.utf8),
            receiveTsNs: 1_723_161_254_087_896_568, key: "BTCUSDT")
        #expect(trade.ticks == [
            Tick(symbol: "BTCUSDT", tsNs: 1_723_161_254_087_896_568, kind: .trade, price: 61837.63, size: 0.02, side: .sell,
                 venue: "binance", seq: 3_735_683_259, exchangeTsNs: 1_723_161_255_342_000_000)
        ])
    }

    static func diff(_ first: Int64, _ last: Int64, bids: String = "[]", asks: String = "[]", pu: Int64? = nil) -> [UInt8] {
        let puText = pu.map { #","pu":\#($0)"# } ?? ""
        return Array(#"{"stream":"xyzusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"XYZUSDT","U":\#(first),"u":\#(last)\#(puText),"b":\#(bids),"a":\#(asks)}}"#.utf8)
    }
    static let ticker = Array(#"{"stream":"xyzusdt@bookTicker","data":{"u":1,"s":"XYZUSDT","b":"100","B":"1","a":"101","A":"2"}}"#.utf8)
    static let snapshot = Array(#"{"lastUpdateId":100,"bids":[["100","1"],["99","5"],["98","7"]],"asks":[["101","2"],["102","3"]]}"#.utf8)

    @Test("spot sync: stale diffs dropped, straddling diff applied, a gap drops depth until a new snapshot")
    func depthGapResyncs() {
        var n = MarketDataNormalizer()
        // Before any snapshot: diffs are buffered, quotes carry no depth.
        #expect(n.normalize(payload: Self.diff(95, 99, bids: #"[["97","9"]]"#), receiveTsNs: 1, key: nil).absorbed)
        #expect(n.normalize(payload: Self.diff(100, 102, bids: #"[["99","6"]]"#), receiveTsNs: 2, key: nil).absorbed)
        #expect(n.normalize(payload: Self.ticker, receiveTsNs: 3, key: nil).ticks.first?.bids == nil)
        // The snapshot (lastUpdateId 100): 95–99 is contained in it, 100–102 straddles 101 and is applied.
        #expect(n.normalize(payload: Self.snapshot, receiveTsNs: 4, key: "XYZUSDT").resyncSymbol == nil)
        #expect(n.binanceBookState("XYZUSDT") == .synced(lastUpdateID: 102, applied: true))
        var q = n.normalize(payload: Self.ticker, receiveTsNs: 5, key: nil).ticks[0]
        #expect(q.bids == [[100, 1], [99, 6], [98, 7]])
        #expect(q.asks == [[101, 2], [102, 3]])
        // 103–104 follows; then 106 skips 105: a gap.
        _ = n.normalize(payload: Self.diff(103, 104, asks: #"[["102","0"]]"#), receiveTsNs: 6, key: nil)
        q = n.normalize(payload: Self.ticker, receiveTsNs: 7, key: nil).ticks[0]
        #expect(q.asks == [[101, 2]])
        let gap = n.normalize(payload: Self.diff(106, 107, bids: #"[["99","0"]]"#), receiveTsNs: 8, key: nil)
        #expect(gap.resyncSymbol == "XYZUSDT")
        #expect(n.binanceBookState("XYZUSDT") == .awaitingSnapshot)
        // No wrong book: the quote still comes, without depth.
        q = n.normalize(payload: Self.ticker, receiveTsNs: 9, key: nil).ticks[0]
        #expect(q.bids == nil && q.asks == nil && q.bid == 100)
        // A new snapshot at 106 resyncs; the buffered 106–107 straddles 107 and is applied.
        let resnap = Array(#"{"lastUpdateId":106,"bids":[["100","1"],["99","4"]],"asks":[["101","2"]]}"#.utf8)
        _ = n.normalize(payload: resnap, receiveTsNs: 10, key: "XYZUSDT")
        q = n.normalize(payload: Self.ticker, receiveTsNs: 11, key: nil).ticks[0]
        #expect(q.bids == [[100, 1]])
    }

    @Test("futures sync uses pu == previous u")
    func futuresChain() {
        var n = MarketDataNormalizer()
        _ = n.normalize(payload: Self.snapshot, receiveTsNs: 1, key: "XYZUSDT")
        #expect(n.normalize(payload: Self.diff(90, 105, bids: #"[["99","2"]]"#, pu: 89), receiveTsNs: 2, key: nil).resyncSymbol == nil)
        #expect(n.normalize(payload: Self.diff(110, 120, pu: 105), receiveTsNs: 3, key: nil).resyncSymbol == nil)
        #expect(n.binanceBookState("XYZUSDT") == .synced(lastUpdateID: 120, applied: true))
        #expect(n.normalize(payload: Self.diff(130, 140, pu: 125), receiveTsNs: 4, key: nil).resyncSymbol == "XYZUSDT")
    }

    @Test("unusable payloads are rejected with their reason")
    func rejections() {
        var n = MarketDataNormalizer()
        func reason(_ text: String, key: String? = "BTCUSDT") -> String? {
            n.normalize(payload: Array(text.utf8), receiveTsNs: 1_000, key: key).rejection?.reason
        }
        #expect(reason("{not json") == "bad_json")
        #expect(reason(#"{"hello":"world"}"#) == "unknown_format")
        #expect(reason(#"{"stream":"btcusdt@bookTicker","data":{"s":"BTCUSDT","B":"1","a":"2","A":"1"}}"#) == "missing_field:bid")
        #expect(reason(#"{"stream":"btcusdt@bookTicker","data":{"s":"BTCUSDT","b":"NaN","B":"1","a":"2","A":"1"}}"#) == "non_finite")
        #expect(reason(#"{"stream":"btcusdt@bookTicker","data":{"s":"BTCUSDT","b":"3","B":"1","a":"2","A":"1"}}"#) == "crossed_book")
        #expect(reason(#"{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","p":"-5","q":"1","m":false}}"#) == "negative_price")
        #expect(reason(#"{"symbol":"BTCUSDT","ts_ns":5,"kind":"quote","bid":1,"bid_size":1,"ask":2}"#) == "missing_field:ask_size")
        #expect(reason(#"{"lastUpdateId":1,"bids":[],"asks":[]}"#, key: nil) == "missing_field:symbol")
        #expect(n.normalize(payload: Array(#"{"event":"heartbeat"}"#.utf8), receiveTsNs: 1, key: nil).absorbed)
    }

    @Test("normalized Tick JSON passes through with its own ts_ns")
    func tickJSON() {
        var n = MarketDataNormalizer()
        let text = #"{"symbol":"BTCUSDT","ts_ns":1723161254087891268,"kind":"quote","bid":61837.63,"bid_size":3.78826,"ask":61837.64,"ask_size":1.54698,"venue":"binance"}"#
        let r = n.normalize(payload: Array(text.utf8), receiveTsNs: 7, key: "BTCUSDT")
        #expect(r.ticks == [.quote(symbol: "BTCUSDT", tsNs: 1_723_161_254_087_891_268, bid: 61837.63, bidSize: 3.78826,
                                   ask: 61837.64, askSize: 1.54698, venue: "binance")])
    }

    @Test("the Kraken sample parses: book quotes with depth, trades, nothing rejected")
    func krakenSample() throws {
        let messages = try Recordings.messages("cryptofeed/KRAKEN.jsonl.zst")
        #expect(messages.count == 4430)
        var n = MarketDataNormalizer()
        var quotes = 0
        var trades = 0
        var bookQuotes = 0
        var rejections: [String: Int] = [:]
        var symbols = Set<String>()
        for m in messages {
            let r = n.normalize(payload: m.payload, receiveTsNs: m.receiveTsNs, key: m.symbol)
            if let rej = r.rejection { rejections[rej.reason, default: 0] += 1 }
            for t in r.ticks {
                symbols.insert(t.symbol)
                if t.kind == .quote {
                    quotes += 1
                    // Book quotes carry their levels; ticker quotes carry only the top.
                    if let bids = t.bids {
                        bookQuotes += 1
                        #expect(bids.first == [t.bid!, t.bidSize!])
                    }
                } else {
                    trades += 1
                }
            }
        }
        #expect(rejections.isEmpty, "\(rejections)")
        #expect(quotes > 1000)
        #expect(bookQuotes > 1000 && bookQuotes < quotes)
        #expect(trades > 0)
        #expect(symbols.contains("XBT/CHF"))
        // By hand: two XMR/USD trades in one message, side s = aggressor sell.
        let text = #"[993,[["354.04000000","0.28245396","1618678150.826417","s","m",""],["353.81000000","1.71754604","1618678150.827816","s","m",""]],"trade","XMR/USD"]"#
        let r = n.normalize(payload: Array(text.utf8), receiveTsNs: 9, key: nil)
        #expect(r.ticks.map(\.price) == [354.04, 353.81])
        #expect(r.ticks.map(\.side) == [.sell, .sell])
    }
}
