import TECore
import TEModels
import Testing

/// Every Double of a tick, as bits (Equatable would take -0 for 0).
func bits(_ t: Tick) -> [UInt64?] {
    [t.bid, t.bidSize, t.ask, t.askSize, t.price, t.size].map { $0?.bitPattern }
        + (t.bids ?? []).flatMap { $0.map(\.bitPattern) } + (t.asks ?? []).flatMap { $0.map(\.bitPattern) }
}

func bits(_ s: FeatureSnapshot) -> [UInt64?] {
    ([s.tradeVolume, s.lastPrice] + s.features.values).map(\.bitPattern)
}

/// The fast reader must agree with the Codable decoder: where the Codable decoder throws, the fast reader
/// declines (so the error is the Codable one, field and reason); where it decodes, the fast reader gives the
/// same value to the bit, or declines. Returns whether the fast reader took the entry.
@discardableResult
func agree<M: StreamFieldDecodable & Equatable>(
    _ type: M.Type, _ fields: [(String, String)], bits: (M) -> [UInt64?],
    sourceLocation: SourceLocation = #_sourceLocation
) -> Bool {
    let fast = M.decodeFast(fields)
    let codable = Result { () throws(MessageDecodingError) -> M in
        try StreamFieldDecoder.decodeCodable(M.self, from: fields)
    }
    switch codable {
    case .failure(let error):
        #expect(
            fast == nil, "fast reader took an entry the Codable decoder rejects (\(error)): \(fields)",
            sourceLocation: sourceLocation)
        // The public entry point reports the Codable decoder's error.
        #expect(throws: error, sourceLocation: sourceLocation) { try StreamFieldDecoder.decode(M.self, from: fields) }
    case .success(let value):
        if let fast {
            #expect(fast == value && bits(fast) == bits(value), "\(fields)", sourceLocation: sourceLocation)
        }
        #expect((try? StreamFieldDecoder.decode(M.self, from: fields)) == value, sourceLocation: sourceLocation)
    }
    return fast != nil
}

/// `fields` with `name` set to `text` (nil: removed), in place.
func with(_ fields: [(String, String)], _ name: String, _ text: String?) -> [(String, String)] {
    var out = fields.filter { $0.0 != name }
    if let text {
        if let i = fields.firstIndex(where: { $0.0 == name }) {
            out.insert((name, text), at: min(i, out.count))
        } else {
            out.append((name, text))
        }
    }
    return out
}

@Suite struct FastDecoderTests {
    static let quote = Tick.quote(
        symbol: "BTCUSDT", tsNs: 1_723_161_254_087_891_268, bid: 61837.63, bidSize: 3.78826, ask: 61837.64,
        askSize: 1.54698, bids: [[61837.63, 3.78826], [61837.5, 0.1], [61837, 1e-8]], asks: [[61837.64, 1.54698]],
        venue: "binance")
    static let trade = Tick(
        symbol: "ETHUSDT", tsNs: 5, kind: .trade, price: 2500.5, size: 0.25, side: .sell, venue: "binance", seq: 42,
        exchangeTsNs: 4)
    static let snapshot = FeatureSnapshot(
        symbol: "BTCUSDT-PERP", tsNs: 10, windowMs: 5000, nQuotes: 7, nTrades: 2, tradeVolume: 0.5, lastPrice: 61837.6,
        warm: false,
        features: FeatureVector(
            spreadBps: 0.0016, imbalance: 0.42, depthImbalance: -0.1, ofiNorm: 1.5, realizedVolBps: 0.3,
            midReturnBps: -2.25, tickRate: 12.4, micropriceOffsetBps: -0.0003))

    @Test func canonicalEntriesTakeTheFastPath() throws {
        for tick in [Self.quote, Self.trade] {
            let fields = try StreamFieldEncoder.encode(tick)
            #expect(agree(Tick.self, fields, bits: bits))
            #expect(Tick.decodeFast(fields) == tick)
        }
        let fields = try StreamFieldEncoder.encode(Self.snapshot)
        #expect(agree(FeatureSnapshot.self, fields, bits: bits))
        #expect(FeatureSnapshot.decodeFast(fields).map(bits) == bits(Self.snapshot))
    }

    @Test func theFastPathAcceptsWhatTheCodableDecoderReadsTheSameWay() throws {
        let quote = try StreamFieldEncoder.encode(Self.quote)
        // `null` optionals are absent; unknown fields are ignored; a repeated field counts with its last value;
        // a schema older than ours is read.
        #expect(agree(Tick.self, with(quote, "bids", "null"), bits: bits))
        #expect(Tick.decodeFast(with(quote, "bids", "null"))?.bids == nil)
        #expect(agree(Tick.self, quote + [("written_at_ns", "17")], bits: bits))
        #expect(agree(Tick.self, quote + [("bid", "61837.62")], bits: bits))
        #expect(Tick.decodeFast(quote + [("bid", "61837.62")])?.bid == 61837.62)
        #expect(agree(Tick.self, with(quote, "v", "0"), bits: bits))
        #expect(agree(Tick.self, with(quote, "bids", "[]"), bits: bits))
        #expect(agree(Tick.self, with(quote, "bids", "[[1E+2,-0.5e-3],[0,-0],[]]"), bits: bits))
        let snapshot = try StreamFieldEncoder.encode(Self.snapshot)
        #expect(agree(FeatureSnapshot.self, with(snapshot, "warm", nil), bits: bits))
        #expect(FeatureSnapshot.decodeFast(with(snapshot, "warm", nil))?.warm == true)
        #expect(agree(FeatureSnapshot.self, with(snapshot, "warm", "1"), bits: bits))
    }

    @Test func malformedTicksGetTheCodableError() throws {
        let quote = try StreamFieldEncoder.encode(Self.quote)
        let trade = try StreamFieldEncoder.encode(Self.trade)
        let badNumbers = ["", "abc", "NaN", "nan", "inf", "-inf", "1e999", "0x10", " 1", "1 ", "null"]
        var cases: [[(String, String)]] = []
        for name in ["v", "symbol", "ts_ns", "kind"] { cases.append(with(quote, name, nil)) }
        for text in ["", "2", "x", "1.0", "null"] { cases.append(with(quote, "v", text)) }
        for text in ["", "1.5", "9223372036854775808", "null", "abc"] { cases.append(with(quote, "ts_ns", text)) }
        for text in ["", "QUOTE", "book", "null"] { cases.append(with(quote, "kind", text)) }
        for name in ["bid", "bid_size", "ask", "ask_size"] {
            for text in badNumbers { cases.append(with(quote, name, text)) }
        }
        for name in ["price", "size"] {
            for text in badNumbers { cases.append(with(trade, name, text)) }
        }
        for text in ["", "x", "SELL"] { cases.append(with(trade, "side", text)) }
        for text in ["", "1.5", "x"] {
            cases.append(with(trade, "seq", text))
            cases.append(with(trade, "exchange_ts_ns", text))
        }
        let badLevels = [
            "", "[", "]", "[[", "[[1,2]", "[[1,2],]", "[[1,2]]x", "[ [1,2]]", "[[1, 2]]", "[[01,2]]", "[[1.,2]]",
            "[[.5,2]]", "[[+1,2]]", "[[1e,2]]", "[[1e+,2]]", "[[-,2]]", "[[1,2],[3,\"4\"]]", "[[1,null]]",
            "[[1e999,1]]", "[[1e-400,1]]", "[[NaN,1]]", "[1,2]", "{\"a\":1}", "[[1,2]"
        ]
        for text in badLevels {
            cases.append(with(quote, "bids", text))
            cases.append(with(quote, "asks", text))
        }
        var fastTook = 0
        for fields in cases where agree(Tick.self, fields, bits: bits) { fastTook += 1 }
        // The few cases above that are valid after all (e.g. `null` optionals) are the only ones taken.
        #expect(fastTook < cases.count / 4)
    }

    @Test func malformedSnapshotsGetTheCodableError() throws {
        let snapshot = try StreamFieldEncoder.encode(Self.snapshot)
        var cases: [[(String, String)]] = []
        for (name, _) in snapshot where name != "warm" {
            cases.append(with(snapshot, name, nil))
            for text in ["", "x", "NaN", "inf", "1e999", "null", "1.5", "9223372036854775808"] {
                cases.append(with(snapshot, name, text))
            }
        }
        for text in ["", "yes", "TRUE", "2"] { cases.append(with(snapshot, "warm", text)) }
        for fields in cases { agree(FeatureSnapshot.self, fields, bits: bits) }
        // And the error names the field.
        #expect(throws: MessageDecodingError(field: "ofi_norm", reason: "not a finite number")) {
            try StreamFieldDecoder.decode(FeatureSnapshot.self, from: with(snapshot, "ofi_norm", "inf"))
        }
        #expect(throws: MessageDecodingError(field: "n_quotes", reason: "missing")) {
            try StreamFieldDecoder.decode(FeatureSnapshot.self, from: with(snapshot, "n_quotes", nil))
        }
    }
}

/// The readers over bytes against the Codable decoder on seeded random input: numbers of every shape the
/// byte-level number reader takes or declines, and whole messages with random values.
@Suite struct FastNumberTests {
    /// A decimal text: sign, 1–20 integer digits (leading zeros too), an optional fraction of 1–20 digits,
    /// an optional exponent of either case and sign.
    static func decimal(_ random: inout SeededGenerator) -> String {
        func digits(_ n: Int) -> String {
            String((0..<n).map { _ in Character(String(Int.random(in: 0...9, using: &random))) })
        }
        var text = Bool.random(using: &random) ? "-" : ""
        text += digits(Int.random(in: 1...(Bool.random(using: &random) ? 3 : 20), using: &random))
        if Bool.random(using: &random) { text += "." + digits(Int.random(in: 1...20, using: &random)) }
        if Int.random(in: 0..<4, using: &random) == 0 {
            text += ["e", "E", "e-", "e+", "E-"].randomElement(using: &random)!
            text += String(Int.random(in: 0...(Bool.random(using: &random) ? 30 : 400), using: &random))
        }
        return text
    }

    @Test func numbersReadAsDoubleReadsThem() throws {
        var random = SeededGenerator(seed: 1515)
        let quote = try StreamFieldEncoder.encode(FastDecoderTests.quote)
        var taken = 0
        for _ in 0..<20_000 {
            let text = Self.decimal(&random)
            let fields = with(quote, "bid", text)
            if agree(Tick.self, fields, bits: bits) { taken += 1 }
            if let value = Tick.decodeFast(fields)?.bid {
                #expect(value.bitPattern == Double(text)?.bitPattern, "\(text)")
            }
            // Prices as the venues send them: up to 15 significant digits, the exact path.
            let price = String(Double(Int.random(in: 1...999_999_999, using: &random)) / 1e4)
            #expect(Tick.decodeFast(with(quote, "ask", price))?.ask?.bitPattern == Double(price)?.bitPattern)
        }
        // Nearly every finite decimal is taken (those overflowing to infinity are not).
        #expect(taken > 15_000)
        // Integers: Int64's range, exactly; outside it the Codable decoder decides.
        for text in ["0", "-0", "9223372036854775807", "-9223372036854775808", "007"] {
            #expect(Tick.decodeFast(with(quote, "ts_ns", text))?.tsNs == Int64(text))
        }
        for text in ["9223372036854775808", "-9223372036854775809", "+1", "1_0", "１"] {
            #expect(Tick.decodeFast(with(quote, "ts_ns", text)) == nil)
            agree(Tick.self, with(quote, "ts_ns", text), bits: bits)
        }
    }

    @Test func randomMessagesReadAsTheCodableDecoderReadsThem() throws {
        var random = SeededGenerator(seed: 1516)
        func number() -> Double {
            switch Int.random(in: 0..<4, using: &random) {
            case 0: Double(Int.random(in: -1_000_000...1_000_000, using: &random)) / 100
            case 1: Double.random(in: -1...1, using: &random)
            case 2: Double.random(in: -1e12...1e12, using: &random)
            default: Double(bitPattern: UInt64.random(in: 0...UInt64.max, using: &random) & 0x7FEF_FFFF_FFFF_FFFF)
            }
        }
        for i in 0..<2_000 {
            let levels = (0..<Int.random(in: 0...10, using: &random)).map { _ in [number(), abs(number())] }
            let tick =
                i % 3 == 0
                ? Tick(
                    symbol: "S\(i)", tsNs: Int64.random(in: 0...Int64.max, using: &random), kind: .trade,
                    price: number(), size: abs(number()), side: i % 2 == 0 ? .buy : .sell, venue: "binance",
                    seq: Int64(i), exchangeTsNs: Int64(i))
                : Tick.quote(
                    symbol: "SYMBOL-\(i)-PERP", tsNs: Int64(i), bid: number(), bidSize: abs(number()), ask: number(),
                    askSize: abs(number()), bids: levels, asks: levels.reversed(), venue: i % 5 == 0 ? nil : "kraken")
            let took = agree(Tick.self, try StreamFieldEncoder.encode(tick), bits: bits)
            // The one canonical text the reader leaves to JSONDecoder: a subnormal number inside `bids`/`asks`.
            let subnormal = levels.joined().contains { $0 != 0 && !$0.isNormal }
            #expect(took || subnormal)
            let snapshot = FeatureSnapshot(
                symbol: "S\(i)", tsNs: Int64(i), windowMs: 5000, nQuotes: i, nTrades: i / 2, tradeVolume: abs(number()),
                lastPrice: number(), warm: i % 4 != 0,
                features: FeatureVector(
                    spreadBps: number(), imbalance: number(), depthImbalance: number(), ofiNorm: number(),
                    realizedVolBps: number(), midReturnBps: number(), tickRate: number(), micropriceOffsetBps: number())
            )
            #expect(agree(FeatureSnapshot.self, try StreamFieldEncoder.encode(snapshot), bits: bits))
        }
    }
}
