import Foundation
import MarketData
import TEModels
import Testing

let dataDirectory = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("shared/data").path

func ticks(_ result: NormalizeResult) -> [Tick] {
    if case .ticks(let t) = result { return t }
    return []
}

func rejection(_ result: NormalizeResult) -> NormalizeRejection? {
    if case .rejected(let r) = result { return r }
    return nil
}

@Suite struct RecordedDataTests {
    @Test func spotBTCQuotesAndTradesMatchTheRecording() throws {
        let path = "\(dataDirectory)/binance/spot_btcusdt_20240808.gz"
        var normalizer = MarketNormalizer()
        var quotes = 0
        var trades = 0
        var withDepth = 0
        var rejected: [String] = []
        var bookTickerLines = 0
        var tradeLines = 0
        let reader = try RecordingReader(path: path)
        var lastTs: Int64 = 0
        while let message = try reader.next() {
            let text = String(decoding: message.payload, as: UTF8.self)
            if text.contains("@bookTicker") { bookTickerLines += 1 }
            if text.contains("@trade") { tradeLines += 1 }
            #expect(message.key == "BTCUSDT")
            #expect(message.tsNs >= lastTs)
            lastTs = message.tsNs
            let result = normalizer.normalize(payload: message.payload, receiveTsNs: message.tsNs, key: message.key)
            if let r = rejection(result) { rejected.append(r.description) }
            for tick in ticks(result) {
                #expect(tick.tsNs == message.tsNs)
                switch tick.kind {
                case .quote:
                    quotes += 1
                    if let bids = tick.bids, let asks = tick.asks {
                        withDepth += 1
                        #expect(bids[0] == [tick.bid!, tick.bidSize!])
                        #expect(asks[0] == [tick.ask!, tick.askSize!])
                        #expect(zip(bids, bids.dropFirst()).allSatisfy { $0[0] > $1[0] })
                        #expect(zip(asks, asks.dropFirst()).allSatisfy { $0[0] < $1[0] })
                        #expect(bids.count <= 10 && asks.count <= 10)
                    }
                case .trade: trades += 1
                }
            }
        }
        #expect(rejected.isEmpty, "\(rejected.prefix(3))")
        #expect(bookTickerLines == 28040)
        #expect(tradeLines == 9757)
        #expect(quotes == bookTickerLines)
        #expect(trades == tradeLines)
        // The snapshot arrives near the start; from then on the book stays in sync.
        #expect(withDepth > quotes * 9 / 10)
        #expect(normalizer.resyncs["BTCUSDT", default: 0] == 0)
    }

    @Test func usdmFuturesIsItsOwnInstrumentAndStaysInSync() throws {
        let path = "\(dataDirectory)/binance/usdm_btcusdt_20240808.gz"
        var normalizer = MarketNormalizer()
        var quotes = 0
        var rejected = 0
        let reader = try RecordingReader(path: path)
        while let message = try reader.next() {
            let result = normalizer.normalize(payload: message.payload, receiveTsNs: message.tsNs, key: message.key)
            if rejection(result) != nil { rejected += 1 }
            for tick in ticks(result) where tick.kind == .quote {
                quotes += 1
                #expect(tick.symbol == "BTCUSDT-PERP")
                #expect(tick.venue == "binance-usdm")
                #expect(tick.exchangeTsNs != nil)
            }
        }
        #expect(rejected == 0)
        #expect(quotes == 66089)
        #expect(normalizer.hasBook("BTCUSDT-PERP"))
    }

    @Test func krakenSampleParses() throws {
        let messages = try RecordingReader.readAll(path: "\(dataDirectory)/cryptofeed/KRAKEN.jsonl.zst")
        var normalizer = MarketNormalizer()
        var quotes = 0
        var trades = 0
        var rejected: [String] = []
        var symbols = Set<String>()
        for message in messages {
            let result = normalizer.normalize(payload: message.payload, receiveTsNs: message.tsNs, key: message.key)
            if let r = rejection(result) { rejected.append(r.description) }
            for tick in ticks(result) {
                symbols.insert(tick.symbol)
                if tick.kind == .quote {
                    quotes += 1
                    #expect(tick.ask! > tick.bid!)
                } else {
                    trades += 1
                }
            }
        }
        #expect(rejected.isEmpty, "\(rejected.prefix(3))")
        // 10 book snapshots + 4268 book updates + 18 tickers; 8 trade messages.
        #expect(quotes == 10 + 2221 + 2047 + 1 + 18)
        #expect(trades >= 8)
        #expect(symbols.contains("XMR/USD"))
    }

    @Test func cryptofeedBinanceSnapshotsAreKeyedFromTheURL() throws {
        let messages = try RecordingReader.readAll(path: "\(dataDirectory)/cryptofeed/BINANCE.jsonl.zst")
        #expect(
            messages.contains {
                $0.key == "NKNUSDT" && String(decoding: $0.payload, as: UTF8.self).hasPrefix("{\"lastUpdateId\"")
            })
        var normalizer = MarketNormalizer()
        var rejected = 0
        for message in messages {
            if rejection(normalizer.normalize(payload: message.payload, receiveTsNs: message.tsNs, key: message.key))
                != nil
            {
                rejected += 1
            }
        }
        #expect(rejected == 0)
        #expect(normalizer.hasBook("NKNUSDT"))
    }
}

@Suite struct OrderBookSyncTests {
    func depth(_ U: Int, _ u: Int, bids: [(String, String)] = [], asks: [(String, String)] = []) -> String {
        let b = bids.map { "[\"\($0.0)\",\"\($0.1)\"]" }.joined(separator: ",")
        let a = asks.map { "[\"\($0.0)\",\"\($0.1)\"]" }.joined(separator: ",")
        return
            #"{"stream":"abcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"ABCUSDT","U":\#(U),"u":\#(u),"b":[\#(b)],"a":[\#(a)]}}"#
    }
    let snapshot =
        #"{"lastUpdateId":100,"bids":[["10.0","1"],["9.9","2"],["9.8","3"]],"asks":[["10.1","1"],["10.2","2"]]}"#
    func quote(_ bid: String, _ ask: String) -> String {
        #"{"stream":"abcusdt@bookTicker","data":{"u":1,"s":"ABCUSDT","b":"\#(bid)","B":"1","a":"\#(ask)","A":"1"}}"#
    }

    @Test func buffersDiffsDropsStaleOnesAndAppliesTheStraddlingOne() {
        var n = MarketNormalizer(depthLevels: 3)
        // stale: u <= 100
        _ = n.normalize(payload: depth(90, 95, bids: [("9.7", "9")]), receiveTsNs: 1, key: "ABCUSDT")
        _ = n.normalize(payload: depth(99, 103, bids: [("9.9", "5")]), receiveTsNs: 2, key: "ABCUSDT")  // straddles 101
        #expect(!n.hasBook("ABCUSDT"))
        _ = n.normalize(payload: snapshot, receiveTsNs: 3, key: "ABCUSDT")
        #expect(n.hasBook("ABCUSDT"))
        let t = ticks(n.normalize(payload: quote("10.0", "10.1"), receiveTsNs: 4, key: nil))
        #expect(t.first?.bids == [[10.0, 1], [9.9, 5], [9.8, 3]])
        #expect(t.first?.asks == [[10.1, 1], [10.2, 2]])
    }

    @Test func aGapDropsTheBookUntilTheNextSnapshot() {
        var n = MarketNormalizer(depthLevels: 3)
        _ = n.normalize(payload: snapshot, receiveTsNs: 1, key: "ABCUSDT")
        _ = n.normalize(payload: depth(101, 104, asks: [("10.2", "0")]), receiveTsNs: 2, key: nil)
        var t = ticks(n.normalize(payload: quote("10.0", "10.1"), receiveTsNs: 3, key: nil))
        #expect(t.first?.asks == [[10.1, 1]])
        // 105 is missing: U = 106 is a gap.
        _ = n.normalize(payload: depth(106, 108, bids: [("9.95", "7")]), receiveTsNs: 4, key: nil)
        #expect(!n.hasBook("ABCUSDT"))
        #expect(n.resyncs["ABCUSDT"] == 1)
        t = ticks(n.normalize(payload: quote("10.0", "10.1"), receiveTsNs: 5, key: nil))
        #expect(t.first?.bids == nil, "no depth rather than a wrong book")
        #expect(t.first?.bid == 10.0)
        _ = n.normalize(
            payload: #"{"lastUpdateId":110,"bids":[["10.0","4"],["9.5","1"]],"asks":[["10.1","2"]]}"#, receiveTsNs: 6,
            key: "ABCUSDT")
        t = ticks(n.normalize(payload: quote("10.0", "10.1"), receiveTsNs: 7, key: nil))
        #expect(t.first?.bids == [[10.0, 1], [9.5, 1]])
    }

    @Test func futuresDiffsChainOnPreviousU() {
        var n = MarketNormalizer(depthLevels: 2)
        let snap = #"{"lastUpdateId":100,"E":1,"T":1,"bids":[["10.0","1"]],"asks":[["10.1","1"]]}"#
        func fdepth(_ U: Int, _ u: Int, _ pu: Int) -> String {
            #"{"stream":"abcusdt@depth@0ms","data":{"e":"depthUpdate","E":1,"T":1,"s":"ABCUSDT","U":\#(U),"u":\#(u),"pu":\#(pu),"b":[["9.9","3"]],"a":[]}}"#
        }
        _ = n.normalize(payload: snap, receiveTsNs: 1, key: "ABCUSDT")
        _ = n.normalize(payload: fdepth(95, 110, 94), receiveTsNs: 2, key: nil)
        _ = n.normalize(payload: fdepth(111, 120, 110), receiveTsNs: 3, key: nil)
        #expect(n.hasBook("ABCUSDT-PERP"))
        _ = n.normalize(payload: fdepth(125, 130, 121), receiveTsNs: 4, key: nil)
        #expect(!n.hasBook("ABCUSDT-PERP"))
    }
}

@Suite struct BadInputTests {
    @Test func everyKindOfGarbageIsRejectedWithAReason() {
        var n = MarketNormalizer()
        func reason(_ payload: String) -> String? {
            rejection(n.normalize(payload: payload, receiveTsNs: 1, key: "BTCUSDT"))?.code
        }
        #expect(reason("{not json") == "bad_json")
        #expect(reason(#"{"hello":"world"}"#) == "unknown_format")
        #expect(
            reason(#"{"stream":"btcusdt@bookTicker","data":{"s":"BTCUSDT","b":"2","B":"1","a":"1","A":"1"}}"#)
                == "crossed_book")
        #expect(
            reason(#"{"stream":"btcusdt@bookTicker","data":{"s":"BTCUSDT","b":"NaN","B":"1","a":"1","A":"1"}}"#)
                == "non_finite")
        #expect(
            reason(#"{"stream":"btcusdt@bookTicker","data":{"s":"BTCUSDT","B":"1","a":"1","A":"1"}}"#)
                == "missing_field")
        #expect(
            reason(#"{"stream":"btcusdt@trade","data":{"s":"BTCUSDT","p":"-5","q":"1","m":true}}"#) == "negative_price")
        #expect(reason(#"{"symbol":"BTCUSDT","ts_ns":5,"kind":"quote","bid":1}"#) == "missing_field")
        #expect(
            reason(#"{"lastUpdateId":1,"bids":[["x","1"]],"asks":[]}"#) == "missing_field"
                || reason(#"{"lastUpdateId":1,"bids":[["x","1"]],"asks":[]}"#) == "invalid_value")
        #expect(reason("[1,2]") == "unknown_format")
    }

    @Test func normalizedTickJSONPassesThrough() {
        var n = MarketNormalizer()
        let json =
            #"{"symbol":"BTCUSDT","ts_ns":1723161254087891268,"kind":"quote","bid":61837.63,"bid_size":3.78826,"ask":61837.64,"ask_size":1.54698,"venue":"binance"}"#
        let t = ticks(n.normalize(payload: json, receiveTsNs: 99, key: "BTCUSDT"))
        #expect(
            t == [
                Tick.quote(
                    symbol: "BTCUSDT", tsNs: 1_723_161_254_087_891_268, bid: 61837.63, bidSize: 3.78826, ask: 61837.64,
                    askSize: 1.54698, venue: "binance")
            ])
    }

    @Test func tradeSideIsTheAggressor() {
        var n = MarketNormalizer()
        let sell = ticks(
            n.normalize(
                payload:
                    #"{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":1,"p":"10","q":"2","T":1723161255342,"m":true}}"#,
                receiveTsNs: 5, key: nil))
        #expect(sell.first?.side == .sell)
        #expect(sell.first?.exchangeTsNs == 1_723_161_255_342_000_000)
        let buy = ticks(
            n.normalize(
                payload:
                    #"{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":2,"p":"10","q":"2","m":false}}"#,
                receiveTsNs: 6, key: nil))
        #expect(buy.first?.side == .buy)
    }
}
