import Foundation
import TEModels
import Testing

@Suite struct StreamCodingTests {
    let features = FeatureVector(
        spreadBps: 0.0016, imbalance: 0.42, depthImbalance: -0.1, ofiNorm: 1.5, realizedVolBps: 0.3,
        midReturnBps: -2.25, tickRate: 12.4, micropriceOffsetBps: 0.0003)

    func roundTrip<M: StreamMessage & Equatable>(_ message: M) throws -> [(String, String)] {
        let fields = try StreamFieldEncoder.encode(message)
        #expect(fields.first?.0 == "v")
        #expect(fields.first?.1 == String(M.schemaVersion))
        let decoded = try StreamFieldDecoder.decode(M.self, from: fields)
        #expect(decoded == message)
        // The same type reads the JSON form (Kafka values, HTTP bodies).
        let json = try JSONEncoder().encode(message)
        #expect(try JSONDecoder().decode(M.self, from: json) == message)
        return fields
    }

    @Test func tickQuoteFieldsAreReadableText() throws {
        let tick = Tick.quote(
            symbol: "BTCUSDT", tsNs: 1_723_161_254_087_891_268, bid: 61837.63, bidSize: 3.78826, ask: 61837.64,
            askSize: 1.54698, bids: [[61837.63, 3.78826], [61837.5, 0.1]], asks: [[61837.64, 1.54698]],
            venue: "binance")
        let fields = Dictionary(uniqueKeysWithValues: try roundTrip(tick))
        #expect(fields["symbol"] == "BTCUSDT")
        #expect(fields["ts_ns"] == "1723161254087891268")
        #expect(fields["kind"] == "quote")
        #expect(fields["bid"] == "61837.63")
        #expect(fields["bids"] == "[[61837.63,3.78826],[61837.5,0.1]]")
        #expect(fields["price"] == nil)
    }

    @Test func tickTrade() throws {
        _ = try roundTrip(Tick.trade(symbol: "ETHUSDT", tsNs: 5, price: 2500.5, size: 0.25, side: .sell))
    }

    @Test func everyMessageRoundTrips() throws {
        let snapshot = FeatureSnapshot(
            symbol: "BTCUSDT", tsNs: 10, windowMs: 5000, nQuotes: 7, nTrades: 2, tradeVolume: 0.5,
            lastPrice: 61837.6, warm: true, features: features)
        let fields = Dictionary(uniqueKeysWithValues: try roundTrip(snapshot))
        #expect(fields["spread_bps"] == "0.0016")
        #expect(fields["mid_return_bps"] == "-2.25")
        _ = try roundTrip(
            Signal(
                id: Signal.makeID(symbol: "BTCUSDT", strategy: "rapid_rise", tsNs: 10), symbol: "BTCUSDT",
                strategy: "rapid_rise", direction: .buy, confidence: 0.7, tsNs: 10, features: features))
        _ = try roundTrip(
            Opportunity(
                id: "o1", symbol: "BTCUSDT", direction: .sell, confidence: 0.9, strategies: ["a", "b"],
                signalIds: ["s1", "s2"], firstTsNs: 1, lastTsNs: 2, count: 2, emitReason: "first"))
        _ = try roundTrip(
            AuditRecord(
                decisionId: "6f9619ff-8b86-4011-b42d-00c04fc964ff", requestId: "6F9619FF-8B86-D011-B42D-00C04FC964FF",
                tsNs: 3, symbol: "BTCUSDT", decision: .noTrade,
                score: 0.25, source: .model, modelName: "trade_eligibility", modelVersion: "1", modelHash: "abc",
                features: features, featureAgeMs: 1.5, latencyUs: 800, canary: CanaryResult(version: "2", score: 0.3)))
        _ = try roundTrip(
            DeadLetter(stage: "ingest", reason: "bad JSON", payload: "{", source: "kafka:ticks/0@5", tsNs: 9))
    }

    @Test func malformedEntryNamesTheField() throws {
        var fields = Dictionary(
            uniqueKeysWithValues: try StreamFieldEncoder.encode(
                Tick.quote(symbol: "BTCUSDT", tsNs: 1, bid: 1, bidSize: 1, ask: 2, askSize: 1)))
        fields["bid"] = "abc"
        #expect(throws: MessageDecodingError(field: "bid", reason: "expected a number, got \"abc\"")) {
            try StreamFieldDecoder.decode(Tick.self, from: fields)
        }
        fields["bid"] = "nan"
        #expect(throws: MessageDecodingError(field: "bid", reason: "not a finite number")) {
            try StreamFieldDecoder.decode(Tick.self, from: fields)
        }
        fields["bid"] = "1"
        fields["kind"] = "bogus"
        #expect(throws: MessageDecodingError(field: "kind", reason: "unknown value \"bogus\"")) {
            try StreamFieldDecoder.decode(Tick.self, from: fields)
        }
        fields["kind"] = "quote"
        fields["bids"] = "[[1,"
        #expect(throws: MessageDecodingError.self) { try StreamFieldDecoder.decode(Tick.self, from: fields) }
        fields.removeValue(forKey: "bids")
        fields.removeValue(forKey: "symbol")
        #expect(throws: MessageDecodingError(field: "symbol", reason: "missing")) {
            try StreamFieldDecoder.decode(Tick.self, from: fields)
        }
        fields.removeValue(forKey: "v")
        #expect(throws: MessageDecodingError(field: "v", reason: "missing")) {
            try StreamFieldDecoder.decode(Tick.self, from: fields)
        }
    }

    @Test func jsonErrorsNameTheField() {
        let body = #"{"symbol":"BTCUSDT","features":[1,2,"x"]}"#
        do {
            _ = try JSONDecoder().decode(ScoreRequest.self, from: Data(body.utf8))
            Issue.record("expected a decoding error")
        } catch {
            let e = MessageDecodingError(error)
            #expect(e.field == "features[2]")
            #expect(e.reason == "expected a number")
        }
    }

    @Test func tickValidation() {
        let crossed = Tick.quote(symbol: "BTCUSDT", tsNs: 1, bid: 2, bidSize: 1, ask: 1, askSize: 1)
        #expect(throws: MessageDecodingError.self) { try crossed.validated() }
        let negative = Tick.quote(symbol: "BTCUSDT", tsNs: 1, bid: -1, bidSize: 1, ask: 1, askSize: 1)
        #expect(throws: MessageDecodingError(field: "bid", reason: "not positive")) { try negative.validated() }
        let nan = Tick.trade(symbol: "BTCUSDT", tsNs: 1, price: .nan, size: 1, side: .buy)
        #expect(throws: MessageDecodingError(field: "price", reason: "not a finite number")) { try nan.validated() }
        #expect(!Symbol.isValid("btc usdt"))
        #expect(Symbol.isValid("XBT/USD"))
    }
}

@Suite("binary-safe dead letters")
struct DeadLetterPayloadTests {
    @Test(
        "valid UTF-8 stays text; anything else is base64 with encoding=base64; both give the bytes back",
        arguments: [
            Array("{\"a\":\"é\"}".utf8), [0xff, 0xfe, 0x00, 0xc3, 0x28], [], [0x80], [0x61, 0xed, 0xa0, 0x80],
            Array(0...255)
        ])
    func payloads(bytes: [UInt8]) throws {
        let letter = DeadLetter(stage: "ingest", reason: "bad_json: x", payloadBytes: bytes, tsNs: 1)
        let valid = String(validating: bytes, as: UTF8.self) != nil
        #expect(letter.encoding == (valid ? nil : "base64"))
        #expect(letter.payloadBytes == bytes)
        let decoded = try StreamFieldDecoder.decode(DeadLetter.self, from: try StreamFieldEncoder.encode(letter))
        #expect(decoded == letter && decoded.payloadBytes == bytes)
    }

    @Test("base64 matches RFC 4648 and refuses damaged text")
    func base64() {
        #expect(Base64.encode(Array("foobar".utf8)) == "Zm9vYmFy")
        #expect(Base64.encode(Array("fooba".utf8)) == "Zm9vYmE=")
        #expect(Base64.encode(Array("foob".utf8)) == "Zm9vYg==")
        #expect(Base64.decode("Zm9vYg==") == Array("foob".utf8))
        #expect(Base64.decode("Zm9vYg=") == nil)
        #expect(Base64.decode("Zm9v!g==") == nil)
        var letter = DeadLetter(stage: "s", reason: "r", payload: "abc", tsNs: 1)
        letter.encoding = "rot13"
        #expect(letter.payloadBytes == nil)
    }
}
