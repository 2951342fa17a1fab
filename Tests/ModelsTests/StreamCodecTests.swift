import Foundation
import TEModels
import Testing

/// Seeded, so a failure names the values that caused it and reruns the same way.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Values the codecs meet: prices and sizes with few decimals, integers, tiny and huge magnitudes,
/// negative zero, subnormals, arbitrary bit patterns; `nonFinite` adds NaN and ±infinity.
func randomDouble(_ g: inout SplitMix64, nonFinite: Bool = false) -> Double {
    switch Int.random(in: 0..<(nonFinite ? 10 : 8), using: &g) {
    case 0: return Double(Int.random(in: 1...10_000_000, using: &g)) / 100
    case 1: return Double(Int.random(in: -1_000_000...1_000_000, using: &g)) / 100_000_000
    case 2: return Double(Int64.random(in: -(1 << 60)...(1 << 60), using: &g))
    case 3:
        return [0.0, -0.0, 1e15, -1e15, 999_999_999_999_999, 1e-7, .leastNonzeroMagnitude, 0x1p-1070, 1e300, 0x1p53 + 2]
            .randomElement(using: &g)!
    case 4: return Double.random(in: -1...1, using: &g)
    case 5, 6, 7:
        var d: Double
        repeat { d = Double(bitPattern: g.next()) } while !d.isFinite
        return d
    default: return [Double.nan, .infinity, -.infinity].randomElement(using: &g)!
    }
}

func randomText(_ g: inout SplitMix64) -> String {
    let pieces = [
        "BTC", "usdt", "-", "/", "\"", "\\", "\n", "\u{1}", "\u{1f}", "é", "€", " ", "null", "0", ":", "{}", "[]"
    ]
    let text = (0..<Int.random(in: 0...6, using: &g)).map { _ in pieces.randomElement(using: &g)! }.joined()
    // An optional field whose text is `null` reads as absent (the contract's rule): not a round trip.
    return text == "null" ? "nul" : text
}

func randomFeatures(_ g: inout SplitMix64, nonFinite: Bool = false) -> FeatureVector {
    FeatureVector(
        spreadBps: randomDouble(&g, nonFinite: nonFinite), imbalance: randomDouble(&g, nonFinite: nonFinite),
        depthImbalance: randomDouble(&g, nonFinite: nonFinite), ofiNorm: randomDouble(&g, nonFinite: nonFinite),
        realizedVolBps: randomDouble(&g, nonFinite: nonFinite), midReturnBps: randomDouble(&g, nonFinite: nonFinite),
        tickRate: randomDouble(&g, nonFinite: nonFinite),
        micropriceOffsetBps: randomDouble(&g, nonFinite: nonFinite))
}

func maybe<T>(_ g: inout SplitMix64, _ make: (inout SplitMix64) -> T) -> T? {
    Bool.random(using: &g) ? make(&g) : nil
}

func randomTick(_ g: inout SplitMix64, nonFinite: Bool) -> Tick {
    func levels(_ g: inout SplitMix64) -> [[Double]] {
        (0..<Int.random(in: 0...4, using: &g)).map { _ in
            (0..<Int.random(in: 0...3, using: &g)).map { _ in randomDouble(&g, nonFinite: nonFinite) }
        }
    }
    return Tick(
        symbol: randomText(&g), tsNs: Int64.random(in: .min ... .max, using: &g),
        kind: Bool.random(using: &g) ? .quote : .trade,
        bid: maybe(&g) { randomDouble(&$0, nonFinite: nonFinite) },
        bidSize: maybe(&g) { randomDouble(&$0, nonFinite: nonFinite) },
        ask: maybe(&g) { randomDouble(&$0, nonFinite: nonFinite) },
        askSize: maybe(&g) { randomDouble(&$0, nonFinite: nonFinite) },
        bids: maybe(&g, levels), asks: maybe(&g, levels),
        price: maybe(&g) { randomDouble(&$0, nonFinite: nonFinite) },
        size: maybe(&g) { randomDouble(&$0, nonFinite: nonFinite) },
        side: maybe(&g) { Bool.random(using: &$0) ? .buy : .sell }, venue: maybe(&g, randomText),
        seq: maybe(&g) { Int64.random(in: .min ... .max, using: &$0) },
        exchangeTsNs: maybe(&g) { Int64.random(in: .min ... .max, using: &$0) })
}

func randomSnapshot(_ g: inout SplitMix64, nonFinite: Bool) -> FeatureSnapshot {
    FeatureSnapshot(
        symbol: randomText(&g), tsNs: Int64.random(in: .min ... .max, using: &g),
        windowMs: Int.random(in: 0...100_000, using: &g),
        nQuotes: Int.random(in: 0...1_000_000, using: &g), nTrades: Int.random(in: -5...1_000_000, using: &g),
        tradeVolume: randomDouble(&g, nonFinite: nonFinite), lastPrice: randomDouble(&g, nonFinite: nonFinite),
        warm: Bool.random(using: &g), features: randomFeatures(&g, nonFinite: nonFinite))
}

func randomSignal(_ g: inout SplitMix64, nonFinite: Bool) -> Signal {
    Signal(
        id: randomText(&g), symbol: randomText(&g), strategy: randomText(&g),
        direction: Bool.random(using: &g) ? .buy : .sell,
        confidence: randomDouble(&g, nonFinite: nonFinite), tsNs: Int64.random(in: .min ... .max, using: &g),
        features: randomFeatures(&g, nonFinite: nonFinite))
}

func randomOpportunity(_ g: inout SplitMix64, nonFinite: Bool) -> Opportunity {
    Opportunity(
        id: randomText(&g), symbol: randomText(&g), direction: Bool.random(using: &g) ? .buy : .sell,
        confidence: randomDouble(&g, nonFinite: nonFinite),
        strategies: (0..<Int.random(in: 0...3, using: &g)).map { _ in randomText(&g) },
        signalIds: (0..<Int.random(in: 0...3, using: &g)).map { _ in randomText(&g) },
        firstTsNs: Int64.random(in: .min ... .max, using: &g), lastTsNs: Int64.random(in: .min ... .max, using: &g),
        count: Int.random(in: .min ... .max, using: &g), emitReason: maybe(&g, randomText),
        conflict: maybe(&g) { Bool.random(using: &$0) })
}

func randomAudit(_ g: inout SplitMix64, nonFinite: Bool) -> AuditRecord {
    AuditRecord(
        decisionId: randomText(&g), requestId: randomText(&g), tsNs: Int64.random(in: .min ... .max, using: &g),
        symbol: randomText(&g), decision: [.trade, .noTrade, .abstain].randomElement(using: &g)!,
        score: maybe(&g) { randomDouble(&$0, nonFinite: nonFinite) },
        source: ScoreSource.allCases.randomElement(using: &g)!,
        modelName: maybe(&g, randomText), modelVersion: maybe(&g, randomText), modelHash: maybe(&g, randomText),
        features: maybe(&g) { randomFeatures(&$0, nonFinite: nonFinite) },
        featureAgeMs: maybe(&g) { randomDouble(&$0, nonFinite: nonFinite) },
        latencyUs: Int64.random(in: .min ... .max, using: &g),
        // A canary score is finite here: the codec leaves a non-finite one out (see `canaryScoreThatIsNotANumberIsLeftOut`).
        canary: maybe(&g) { g in
            CanaryResult(version: randomText(&g), score: maybe(&g) { randomDouble(&$0) }, mode: maybe(&g, randomText))
        },
        reason: maybe(&g, randomText), featureSnapshotId: maybe(&g, randomText),
        featureTsNs: maybe(&g) { Int64.random(in: .min ... .max, using: &$0) }, traceId: maybe(&g, randomText),
        client: maybe(&g, randomText))
}

/// Each codec against the Codable encoding (the contract): the same names, order and text for any value,
/// the same failure for a value JSON cannot carry; and its reader against the Codable decoder.
@Suite struct StreamCodecTests {
    static let rounds = 3000

    /// Equal text, or both fail; the reader (through `agree`) matches the Codable decoder on the text.
    func check<M: StreamFieldEncodable & StreamFieldDecodable & Equatable>(
        _ message: M, bits: (M) -> [UInt64?], sourceLocation: SourceLocation = #_sourceLocation
    ) {
        let reference = Result { try StreamFieldEncoder.encodeCodable(message) }
        let typed = Result { () throws(MessageEncodingError) -> [(String, String)] in try message.streamFields().pairs }
        switch (reference, typed) {
        case (.success(let a), .success(let b)):
            #expect(a.map(\.0) == b.map(\.0), "names of \(message)", sourceLocation: sourceLocation)
            #expect(a.map(\.1) == b.map(\.1), "text of \(message)", sourceLocation: sourceLocation)
            agree(M.self, b, bits: bits, sourceLocation: sourceLocation)
        case (.failure, .failure(let error)):
            // The field names where the value is: `features.tick_rate`, `bids[0][1]`.
            #expect(!error.field.isEmpty, sourceLocation: sourceLocation)
        case (.success, .failure(let error)):
            Issue.record("codec failed where Codable wrote: \(error) for \(message)", sourceLocation: sourceLocation)
        case (.failure(let error), .success):
            Issue.record("codec wrote where Codable failed: \(error) for \(message)", sourceLocation: sourceLocation)
        }
    }

    @Test func ticks() {
        var g = SplitMix64(state: 1)
        for _ in 0..<Self.rounds { check(randomTick(&g, nonFinite: true), bits: bits) }
    }

    @Test func snapshots() {
        var g = SplitMix64(state: 2)
        for _ in 0..<Self.rounds { check(randomSnapshot(&g, nonFinite: true), bits: bits) }
    }

    @Test func signals() {
        var g = SplitMix64(state: 3)
        for _ in 0..<Self.rounds { check(randomSignal(&g, nonFinite: true), bits: { $0.bits }) }
    }

    @Test func opportunities() {
        var g = SplitMix64(state: 4)
        for _ in 0..<Self.rounds { check(randomOpportunity(&g, nonFinite: true), bits: { [$0.confidence.bitPattern] }) }
    }

    @Test func auditRecords() {
        var g = SplitMix64(state: 5)
        for _ in 0..<Self.rounds { check(randomAudit(&g, nonFinite: true), bits: { $0.bits }) }
    }

    /// Finite values come back from the text (`-0` as `0` in a top-level field, as before).
    @Test func finiteValuesRoundTrip() throws {
        var g = SplitMix64(state: 6)
        func roundTrip<M: StreamFieldEncodable & Equatable>(_ m: M) throws -> M {
            try StreamFieldDecoder.decode(M.self, from: try m.streamFields().pairs)
        }
        for _ in 0..<Self.rounds {
            let tick = randomTick(&g, nonFinite: false)
            #expect(try roundTrip(tick) == tick)
            let snapshot = randomSnapshot(&g, nonFinite: false)
            #expect(try roundTrip(snapshot) == snapshot)
            let signal = randomSignal(&g, nonFinite: false)
            #expect(try roundTrip(signal) == signal)
            let audit = randomAudit(&g, nonFinite: false)
            #expect(try roundTrip(audit) == audit)
            let opportunity = randomOpportunity(&g, nonFinite: false)
            #expect(try roundTrip(opportunity) == opportunity)
        }
    }

    /// Number text: a field is an integer when integral below 1e15, else Swift's shortest round-trip text;
    /// inside JSON it is what JSONEncoder writes.
    @Test func numberTextMatchesTheOldRulesAndJSONEncoder() throws {
        var g = SplitMix64(state: 7)
        let encoder = JSONEncoder()
        for _ in 0..<20_000 {
            let d = randomDouble(&g, nonFinite: true)
            var w = StreamFieldWriter()
            w.field("x", double: d)
            let old = d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : "\(d)"
            #expect(w.pairs[0].1 == old)
            var json = JSONTextWriter()
            if d.isFinite {
                try json.number(d)
                let reference = String(decoding: try encoder.encode([d]), as: UTF8.self).dropFirst().dropLast()
                #expect(json.text == String(reference), "\(d)")
            } else {
                #expect(throws: MessageEncodingError.self) { try json.number(d) }
            }
        }
        var w = StreamFieldWriter()
        for n in [Int64.min, Int64.max, 0, -1, 10, -10, 1_723_161_254_087_891_268] { w.field("n", int: n) }
        #expect(
            w.pairs.map(\.1) == [
                "-9223372036854775808", "9223372036854775807", "0", "-1", "10", "-10", "1723161254087891268"
            ])
    }

    @Test func stringEscapesMatchJSONEncoder() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var g = SplitMix64(state: 8)
        var samples = (0..<2000).map { _ in randomText(&g) }
        samples.append(String(decoding: (0..<0x80).map { UInt8($0) }, as: UTF8.self))
        for s in samples {
            var json = JSONTextWriter()
            json.strings([s, s])
            #expect(json.text == String(decoding: try encoder.encode([s, s]), as: UTF8.self))
        }
    }

    /// An audit entry as `redis-cli XRANGE te:audit` shows it.
    @Test func auditFieldsAsWritten() throws {
        let record = AuditRecord(
            decisionId: "00000000-0000-4000-8000-000000000001", requestId: "req-1", tsNs: 1_700_000_000_123_456_789,
            symbol: "BTCUSDT", decision: .trade, score: 0.75, source: .model, modelName: "trade_eligibility",
            modelVersion: "1", modelHash: "abc", features: StreamFieldDecodingHostileTests.features, featureAgeMs: 12.5,
            latencyUs: 640, canary: CanaryResult(version: "2", score: 0.7, mode: "shadow"), reason: nil,
            featureSnapshotId: "1700000000123-7", featureTsNs: 1_700_000_000_100_000_000,
            traceId: "4bf92f3577b34da6a3ce929d0e0e4736", client: "desk-a")
        let fields = try record.streamFields().pairs
        #expect(
            fields.map(\.0) == [
                "v", "symbol", "decision", "score", "source", "features", "canary", "client", "decision_id",
                "request_id",
                "ts_ns", "model_name", "model_version", "model_hash", "feature_snapshot_id", "feature_ts_ns",
                "feature_age_ms",
                "latency_us", "trace_id"
            ])
        let byName = Dictionary(uniqueKeysWithValues: fields)
        #expect(byName["v"] == "2")
        #expect(byName["feature_ts_ns"] == "1700000000100000000")
        #expect(byName["score"] == "0.75")
        #expect(byName["feature_age_ms"] == "12.5")
        #expect(
            byName["features"]
                == #"{"depth_imbalance":0,"imbalance":-0.25,"microprice_offset_bps":0.1,"mid_return_bps":-3.125,"ofi_norm":1e-07,"realized_vol_bps":2,"spread_bps":0.5,"tick_rate":10}"#
        )
        #expect(byName["canary"] == #"{"mode":"shadow","score":0.7,"version":"2"}"#)
    }

    /// The gateway records no NaN: a canary score that is not a number is left out of the JSON (the
    /// Codable encoder would fail the whole record).
    @Test func canaryScoreThatIsNotANumberIsLeftOut() throws {
        let record = AuditRecord(
            decisionId: "d", requestId: "r", tsNs: 1, symbol: "BTCUSDT", decision: .abstain, score: nil,
            source: .abstain,
            modelName: nil, modelVersion: nil, modelHash: nil, features: nil, featureAgeMs: nil, latencyUs: 0,
            canary: CanaryResult(version: "2", score: .nan, mode: "shadow"))
        let fields = Dictionary(uniqueKeysWithValues: try record.streamFields().pairs)
        #expect(fields["canary"] == #"{"mode":"shadow","version":"2"}"#)
    }

    @Test func aFailedJSONFieldNamesTheValueAndLeavesNothingBehind() throws {
        let tick = Tick.quote(symbol: "BTCUSDT", tsNs: 1, bid: 1, bidSize: 1, ask: 2, askSize: 1, bids: [[1, .nan]])
        #expect(throws: MessageEncodingError(field: "bids[0][1]", reason: "nan cannot be JSON")) {
            try tick.streamFields()
        }
        var features = StreamFieldDecodingHostileTests.features
        features.ofiNorm = .infinity
        var w = StreamFieldWriter()
        w.field("a", "b")
        #expect(throws: MessageEncodingError(field: "features.ofi_norm", reason: "inf cannot be JSON")) {
            try w.field("features") { (j: inout JSONTextWriter) throws(MessageEncodingError) in try j.features(features)
            }
        }
        #expect(w.pairs.count == 1 && w.bytes.count == 2 && w.lengths == [1, 1])
    }

    /// The writer's bytes are the pairs' text, argument by argument (what XADD sends).
    @Test func bytesAndLengthsAreThePairs() throws {
        var g = SplitMix64(state: 9)
        for _ in 0..<200 {
            let w = try randomSignal(&g, nonFinite: false).streamFields()
            var offset = 0
            var flat: [[UInt8]] = []
            for n in w.lengths {
                flat.append(Array(w.bytes[offset..<offset + n]))
                offset += n
            }
            #expect(offset == w.bytes.count)
            #expect(flat == w.pairs.flatMap { [Array($0.0.utf8), Array($0.1.utf8)] })
        }
    }
}

/// Entries a hand-written reader must not take differently from the Codable decoder: each field of a good
/// entry cut, padded, replaced by hostile text; JSON with white space, escapes, other key orders.
@Suite struct StreamFieldDecodingHostileTests {
    static let features = FeatureVector(
        spreadBps: 0.5, imbalance: -0.25, depthImbalance: 0, ofiNorm: 1e-7, realizedVolBps: 2, midReturnBps: -3.125,
        tickRate: 10, micropriceOffsetBps: 0.1)

    static let hostile = [
        "", " ", "null", "nan", "inf", "-inf", "1e999", "1e-400", "0x10", "+1", "01", "1.", ".5", "--1", "1e", "true",
        "\"", "[", "]", "{", "}", "[]", "{}", "[[]]", "[null]", "[\"a\\u0041\"]", "[\"a\",]", "[ \"a\"]", "\u{0}",
        "9223372036854775808", "-9223372036854775809", "99999999999999999999", "é", "buy", "sell", "quote",
        "{\"mode\":null,\"version\":\"2\"}", "{\"version\":\"2\",\"mode\":\"m\"}",
        "{\"score\":1e999,\"version\":\"2\"}",
        "{\"depth_imbalance\":0}", "[[1,2]", "[[1,2],[3,4]] "
    ]

    func mutations(_ fields: [(String, String)]) -> [[(String, String)]] {
        var out: [[(String, String)]] = []
        for (name, text) in fields {
            out.append(with(fields, name, nil))
            out.append(with(fields, name, String(text.dropLast())))
            out.append(with(fields, name, " " + text))
            out.append(with(fields, name, text + "0"))
            out.append(with(fields, name, text.replacingOccurrences(of: ",", with: ", ")))
            out.append(with(fields, name, text.replacingOccurrences(of: "\"", with: "\\\"")))
            for h in Self.hostile { out.append(with(fields, name, h)) }
        }
        out.append(fields + [("features", "null")])
        out.append(fields + fields)
        return out
    }

    @Test func signals() throws {
        let signal = Signal(
            id: "BTCUSDT:r:1", symbol: "BTCUSDT", strategy: "r", direction: .buy, confidence: 0.7, tsNs: 1,
            features: Self.features)
        for fields in mutations(try signal.streamFields().pairs) { agree(Signal.self, fields, bits: { $0.bits }) }
        // Another key order and white space are JSON the Codable decoder reads.
        let reordered = with(
            try signal.streamFields().pairs, "features",
            #"{ "tick_rate": 10, "spread_bps": 0.5, "imbalance": -0.25, "depth_imbalance": 0, "ofi_norm": 1e-7, "realized_vol_bps": 2, "mid_return_bps": -3.125, "microprice_offset_bps": 0.1 }"#
        )
        #expect(!agree(Signal.self, reordered, bits: { $0.bits }))
        #expect(try StreamFieldDecoder.decode(Signal.self, from: reordered) == signal)
    }

    @Test func opportunities() throws {
        let o = Opportunity(
            id: "o1", symbol: "BTCUSDT", direction: .sell, confidence: 0.9, strategies: ["a", "b"],
            signalIds: ["s1", "s2"], firstTsNs: 1, lastTsNs: 2, count: 2, emitReason: "first", conflict: true)
        for fields in mutations(try o.streamFields().pairs) {
            agree(Opportunity.self, fields, bits: { [$0.confidence.bitPattern] })
        }
    }

    @Test func auditRecords() throws {
        let record = AuditRecord(
            decisionId: "00000000-0000-4000-8000-000000000001", requestId: "req-1", tsNs: 1_700_000_000_123_456_789,
            symbol: "BTCUSDT", decision: .trade, score: 0.75, source: .model, modelName: "trade_eligibility",
            modelVersion: "1", modelHash: "abc", features: Self.features, featureAgeMs: 12.5, latencyUs: 640,
            canary: CanaryResult(version: "2", score: 0.7, mode: "shadow"), reason: "r",
            featureSnapshotId: "1700000000123-7", featureTsNs: 1_700_000_000_100_000_000,
            traceId: "4bf92f3577b34da6a3ce929d0e0e4736", client: "desk-a")
        let fields = try record.streamFields().pairs
        #expect(agree(AuditRecord.self, fields, bits: { $0.bits }))
        for fields in mutations(fields) { agree(AuditRecord.self, fields, bits: { $0.bits }) }
    }

    @Test func ticks() throws {
        let fields = try FastDecoderTests.quote.streamFields().pairs
        for fields in mutations(fields) { agree(Tick.self, fields, bits: bits) }
    }

    /// A v1 audit entry (written before decision_id existed) reads with decision_id = its request_id.
    @Test func version1AuditEntryReadsWithRequestIDAsDecisionID() throws {
        let record = AuditRecord(
            decisionId: "d", requestId: "req-2", tsNs: 1, symbol: "ETHUSDT", decision: .abstain, score: nil,
            source: .abstain, modelName: nil, modelVersion: nil, modelHash: nil, features: nil, featureAgeMs: nil,
            latencyUs: 0, reason: "features_missing,cache_miss")
        var fields = try record.streamFields().pairs.filter { $0.0 != "decision_id" }
        fields[0] = ("v", "1")
        #expect(agree(AuditRecord.self, fields, bits: { $0.bits }))
        let decoded = try StreamFieldDecoder.decode(AuditRecord.self, from: fields)
        #expect(decoded.decisionId == "req-2")
    }
}

extension Signal {
    var bits: [UInt64?] { ([confidence] + features.values).map(\.bitPattern) }
}

extension AuditRecord {
    var bits: [UInt64?] {
        [score?.bitPattern, featureAgeMs?.bitPattern, canary?.score?.bitPattern]
            + (features?.values.map(\.bitPattern) ?? [])
    }
}
