import Foundation
import MarketData
import TEModels
import Testing

/// Markets whose names and formats DESIGN.md ("Tick") fixes: Hyperliquid perpetuals and Binance COIN-M.
@Suite struct VenueFormatTests {
    @Test("Hyperliquid l2Book snapshots are quotes of BTC-PERP with their top levels; trades keep their side")
    func hyperliquidRecording() throws {
        let path = "\(dataDirectory)/hyperliquid/btcusd_20250126.gz"
        var normalizer = MarketNormalizer(depthLevels: 10)
        var quotes = 0
        var trades = 0
        var bookLines = 0
        var tradesInLines = 0
        var rejected: [String] = []
        var sides = Set<Side>()
        let reader = try RecordingReader(path: path)
        while let message = try reader.next() {
            let object = try #require(try JSONSerialization.jsonObject(with: Data(message.payload)) as? [String: Any])
            let result = normalizer.normalize(payload: message.payload, receiveTsNs: message.tsNs, key: message.key)
            if let r = rejection(result) { rejected.append(r.description) }
            let out = ticks(result)
            if object["channel"] as? String == "l2Book" {
                bookLines += 1
                let data = try #require(object["data"] as? [String: Any])
                let levels = try #require(data["levels"] as? [[[String: Any]]])
                let tick = try #require(out.first)
                #expect(out.count == 1)
                #expect(tick.kind == .quote && tick.symbol == "BTC-PERP" && tick.venue == "hyperliquid")
                #expect(tick.tsNs == message.tsNs)
                #expect(tick.exchangeTsNs == (data["time"] as? NSNumber).map { $0.int64Value * 1_000_000 })
                #expect(tick.bid == Double(levels[0][0]["px"] as! String))
                #expect(tick.bidSize == Double(levels[0][0]["sz"] as! String))
                #expect(tick.ask == Double(levels[1][0]["px"] as! String))
                let bids = try #require(tick.bids)
                #expect(bids.count == min(10, levels[0].count))
                #expect(bids.map { $0[0] } == levels[0].prefix(10).map { Double($0["px"] as! String)! })
                #expect(tick.asks?.count == min(10, levels[1].count))
                quotes += 1
            } else if object["channel"] as? String == "trades" {
                let data = try #require(object["data"] as? [[String: Any]])
                tradesInLines += data.count
                #expect(out.count == data.count)
                for (tick, raw) in zip(out, data) {
                    #expect(tick.kind == .trade && tick.symbol == "BTC-PERP" && tick.venue == "hyperliquid")
                    #expect(tick.side == (raw["side"] as? String == "B" ? .buy : .sell))
                    #expect(tick.price == Double(raw["px"] as! String))
                    #expect(tick.size == Double(raw["sz"] as! String))
                    #expect(tick.seq == (raw["tid"] as? NSNumber)?.int64Value)
                    sides.insert(tick.side!)
                }
                trades += out.count
            }
        }
        #expect(rejected.isEmpty, "\(rejected.prefix(3))")
        #expect(bookLines == 46 && quotes == 46)
        #expect(trades == tradesInLines && trades > 9)
    }

    @Test func hyperliquidMalformedMessagesAreRejectedWithAReason() {
        var n = MarketNormalizer()
        func reason(_ payload: String) -> String? {
            rejection(n.normalize(payload: payload, receiveTsNs: 1, key: nil))?.code
        }
        #expect(
            reason(
                #"{"channel":"l2Book","data":{"coin":"BTC","time":1,"levels":[[{"px":"2","sz":"1","n":1}],[{"px":"1","sz":"1","n":1}]]}}"#
            ) == "crossed_book")
        #expect(reason(#"{"channel":"l2Book","data":{"time":1,"levels":[[],[]]}}"#) == "missing_field")
        #expect(
            reason(#"{"channel":"trades","data":[{"coin":"BTC","side":"B","px":"NaN","sz":"1","time":1,"tid":1}]}"#)
                == "non_finite")
        #expect(
            reason(#"{"channel":"trades","data":[{"coin":"BTC","side":"X","px":"1","sz":"1","time":1,"tid":1}]}"#)
                == "invalid_value")
        #expect(reason(#"{"channel":"candle","data":{}}"#) == "unknown_format")
        if case .ignored = n.normalize(
            payload: #"{"channel":"subscriptionResponse","data":{}}"#, receiveTsNs: 1, key: nil)
        {
        } else {
            Issue.record("a subscription response is no market data")
        }
    }

    @Test("Binance COIN-M keeps its own names (ETHUSD_PERP, venue binance-coinm), sizes in contracts, its own book")
    func coinMRecording() throws {
        let path = "\(dataDirectory)/binance/cm_ethusd_perp_20240808.gz"
        var normalizer = MarketNormalizer()
        var quotes = 0
        var trades = 0
        var withDepth = 0
        var rejected: [String] = []
        var first: Tick?
        let reader = try RecordingReader(path: path)
        while let message = try reader.next() {
            let result = normalizer.normalize(payload: message.payload, receiveTsNs: message.tsNs, key: message.key)
            if let r = rejection(result) { rejected.append(r.description) }
            for tick in ticks(result) {
                #expect(tick.symbol == "ETHUSD_PERP")
                #expect(tick.venue == "binance-coinm")
                #expect(tick.exchangeTsNs != nil)
                if first == nil { first = tick }
                if tick.kind == .quote {
                    quotes += 1
                    // Contracts: whole numbers.
                    #expect(tick.bidSize!.rounded() == tick.bidSize! && tick.askSize!.rounded() == tick.askSize!)
                    if tick.bids != nil { withDepth += 1 }
                } else {
                    trades += 1
                }
            }
        }
        #expect(rejected.isEmpty, "\(rejected.prefix(3))")
        #expect(quotes == 15812)
        #expect(trades == 1732)
        #expect(withDepth > quotes * 9 / 10)
        #expect(normalizer.hasBook("ETHUSD_PERP"))
        #expect(normalizer.resyncs["ETHUSD_PERP", default: 0] == 0)
        // The recording's first line: {"u":1007198631825,…,"b":"2682.17","B":"159","a":"2682.18","A":"3794",…}
        #expect(
            first?.bid == 2682.17 && first?.bidSize == 159 && first?.askSize == 3794 && first?.seq == 1_007_198_631_825)
    }

    @Test func coinMAndUsdMAndSpotNeverShareABook() {
        var n = MarketNormalizer(depthLevels: 2)
        let spot = #"{"lastUpdateId":100,"bids":[["10.0","1"],["9.0","1"]],"asks":[["11.0","1"]]}"#
        let usdm = #"{"lastUpdateId":100,"E":1,"T":1,"bids":[["20.0","1"],["19.0","1"]],"asks":[["21.0","1"]]}"#
        let coinm =
            #"{"lastUpdateId":100,"E":1,"T":1,"symbol":"BTCUSD_PERP","pair":"BTCUSD","bids":[["30.0","1"],["29.0","1"]],"asks":[["31.0","1"]]}"#
        _ = n.normalize(payload: spot, receiveTsNs: 1, key: "BTCUSDT")
        _ = n.normalize(payload: usdm, receiveTsNs: 1, key: "BTCUSDT")
        _ = n.normalize(payload: coinm, receiveTsNs: 1, key: "BTCUSD_PERP")
        #expect(n.hasBook("BTCUSDT") && n.hasBook("BTCUSDT-PERP") && n.hasBook("BTCUSD_PERP"))
        let quote =
            #"{"stream":"btcusd_perp@bookTicker","data":{"u":101,"e":"bookTicker","s":"BTCUSD_PERP","ps":"BTCUSD","b":"30.0","B":"5","a":"31.0","A":"7","T":1,"E":1}}"#
        let t = ticks(n.normalize(payload: quote, receiveTsNs: 2, key: nil))
        #expect(t.first?.symbol == "BTCUSD_PERP" && t.first?.venue == "binance-coinm")
        #expect(t.first?.bids == [[30.0, 5], [29.0, 1]])
    }
}
