import Foundation
import MarketData
import TECore
import TEModels

/// An invariant that did not hold for a fuzz input. The libFuzzer binaries (fuzz/) crash on it, so
/// libFuzzer keeps the input; the regression test (Tests/FuzzRegressionTests) fails on it.
public struct FuzzViolation: Error, CustomStringConvertible {
    public var description: String

    public init(_ description: String) { self.description = description }
}

/// The fuzz targets, by the directory name of their seeds (fuzz/corpus/<name>) and findings
/// (fuzz/regressions/<name>). The same entry points run under libFuzzer and in the unit tests.
public enum FuzzTarget: String, CaseIterable, Sendable {
    case normalizer
    case streamCodec = "stream-codec"

    public func run(_ bytes: [UInt8]) throws(FuzzViolation) {
        switch self {
        case .normalizer: try NormalizerFuzz.run(bytes)
        case .streamCodec: try StreamCodecFuzz.run(bytes)
        }
    }

    public func fuzz(_ start: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
        fuzzCallback(rawValue, start, count, run)
    }
}

/// libFuzzer's callback around a target's `run`: a violation is a crash, which is what libFuzzer records.
public func fuzzCallback(
    _ name: String, _ start: UnsafePointer<UInt8>?, _ count: Int, _ run: ([UInt8]) throws(FuzzViolation) -> Void
) -> Int32 {
    do {
        try run(start.map { Array(UnsafeBufferPointer(start: $0, count: count)) } ?? [])
    } catch {
        fatalError("\(name): \(error)")
    }
    return 0
}

/// The input splits at each newline into venue messages, fed in order to one `MarketNormalizer` (so depth
/// diffs meet their snapshot), each with the Kafka key `BTCUSDT` and a receive time 100 ms after the last.
///
/// Invariants: every tick passes `validated()` (finite positive prices, finite sizes, uncrossed book); a
/// venue message's tick carries the receive time and a known venue, and its depth levels are at most `depthLevels`, start at the top of book and
/// are strictly ordered away from it; the tick round-trips through the stream codec exactly; a rejection
/// has one of the declared codes.
public enum NormalizerFuzz {
    static let depthLevels = 5
    static let venues: Set<String> = ["binance", "binance-usdm", "binance-coinm", "hyperliquid", "kraken"]

    public static func run(_ bytes: [UInt8]) throws(FuzzViolation) {
        var normalizer = MarketNormalizer(depthLevels: depthLevels)
        var receiveTsNs: Int64 = 1_723_161_240_000_000_000
        for line in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true) {
            receiveTsNs += 100_000_000
            let result = normalizer.normalize(payload: Array(line), receiveTsNs: receiveTsNs, key: "BTCUSDT")
            switch result {
            case .ticks(let ticks):
                let venueMessage = !isTickJSON(line)
                for tick in ticks { try check(tick, receiveTsNs: receiveTsNs, venueMessage: venueMessage) }
            case .ignored: break
            case .rejected(let rejection):
                guard NormalizeRejection.codes.contains(rejection.code) else {
                    throw FuzzViolation("undeclared rejection code \(rejection)")
                }
            }
            _ = normalizer.takeBookEvents()
            _ = normalizer.takeChangedBooks()
        }
    }

    /// Normalized Tick JSON passes through as written (its own `ts_ns`, venue and depth), so only
    /// `validated()` and the round trip apply to it: an object with `kind` and none of the Binance keys.
    static func isTickJSON(_ line: ArraySlice<UInt8>) -> Bool {
        guard let object = (try? JSONSerialization.jsonObject(with: Data(line))) as? [String: Any] else { return false }
        return object["kind"] != nil && object["stream"] == nil && object["lastUpdateId"] == nil
            && !(object["event"] is String)
    }

    static func check(_ tick: Tick, receiveTsNs: Int64, venueMessage: Bool) throws(FuzzViolation) {
        do {
            _ = try tick.validated()
        } catch {
            throw FuzzViolation("an invalid tick came out: \(error) in \(tick)")
        }
        if venueMessage {
            guard tick.tsNs == receiveTsNs else { throw FuzzViolation("ts_ns is not the receive time in \(tick)") }
            guard let venue = tick.venue, venues.contains(venue) else {
                throw FuzzViolation("unknown venue in \(tick)")
            }
        }
        if venueMessage, tick.kind == .quote, let bid = tick.bid, let ask = tick.ask {
            try checkDepth(tick.bids, top: [bid, tick.bidSize ?? -1], descending: true, tick)
            try checkDepth(tick.asks, top: [ask, tick.askSize ?? -1], descending: false, tick)
        }
        try StreamCodecFuzz.roundTrip(tick)
    }

    static func checkDepth(_ levels: [[Double]]?, top: [Double], descending: Bool, _ tick: Tick) throws(FuzzViolation) {
        guard let levels else { return }
        guard levels.count <= depthLevels else {
            throw FuzzViolation("\(levels.count) levels > \(depthLevels) in \(tick)")
        }
        // Kraken's quote is its book's top; Binance's level 0 is the bookTicker itself.
        guard let first = levels.first, first == top else {
            throw FuzzViolation("depth does not start at the top of book in \(tick)")
        }
        for (a, b) in zip(levels, levels.dropFirst()) where descending ? !(a[0] > b[0]) : !(a[0] < b[0]) {
            throw FuzzViolation("depth levels out of order (\(a[0]), \(b[0])) in \(tick)")
        }
    }
}

/// The input's first line names the message type (`Tick`, `FeatureSnapshot`, `Signal`, `Opportunity`,
/// `AuditRecord`, `DeadLetter`; anything else picks one by its first byte); each further line is one
/// stream field `name=value`.
///
/// Invariants: what the hand-written fast reader accepts, the Codable decoder decodes to the same value;
/// what decodes encodes, with no non-finite number in it, and decodes back to the same value.
public enum StreamCodecFuzz {
    static let typeNames = ["Tick", "FeatureSnapshot", "Signal", "Opportunity", "AuditRecord", "DeadLetter"]

    public static func run(_ bytes: [UInt8]) throws(FuzzViolation) {
        var lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        guard !lines.isEmpty else { return }
        let name = String(decoding: lines.removeFirst(), as: UTF8.self)
        // The fields as the Redis client hands them over: every name and value's bytes, as they are, in one
        // buffer (invalid UTF-8 included); the Codable reference reads their text.
        var buffer: [UInt8] = []
        var ends: [Int] = []
        for line in lines {
            let equals = line.firstIndex(of: UInt8(ascii: "=")) ?? line.endIndex
            buffer.append(contentsOf: line[..<equals])
            ends.append(buffer.count)
            if equals < line.endIndex { buffer.append(contentsOf: line[(equals + 1)...]) }
            ends.append(buffer.count)
        }
        let fields = StreamFields(bytes: buffer, ends: ends, first: 0, count: lines.count)
        let index = typeNames.firstIndex(of: name) ?? Int(bytes.first ?? 0) % typeNames.count
        switch typeNames[index] {
        case "Tick": try check(Tick.self, fields)
        case "FeatureSnapshot": try check(FeatureSnapshot.self, fields)
        case "Signal": try check(Signal.self, fields)
        case "Opportunity": try check(Opportunity.self, fields)
        case "AuditRecord": try check(AuditRecord.self, fields)
        default: try check(DeadLetter.self, fields)
        }
    }

    static func check<M: StreamMessage & Equatable>(_ type: M.Type, _ fields: StreamFields) throws(FuzzViolation) {
        let decoded = Result { () throws(MessageDecodingError) in
            try StreamFieldDecoder.decodeCodable(M.self, from: Array(fields))
        }
        if let fast = M.self as? any StreamFieldDecodable.Type, let value = fields.withView({ fast.decodeFast($0) }) {
            guard case .success(let reference) = decoded, let value = value as? M, value == reference else {
                throw FuzzViolation("the fast reader accepted \(value); the Codable decoder gives \(decoded)")
            }
        }
        // The stages' entry point gives the Codable decoder's answer, value or error.
        switch (
            decoded, Result { () throws(MessageDecodingError) in try StreamFieldDecoder.decode(M.self, from: fields) }
        ) {
        case (.success(let a), .success(let b)) where a == b: break
        case (.failure(let a), .failure(let b)) where a == b: break
        case (let a, let b): throw FuzzViolation("decode gives \(b); the Codable decoder \(a)")
        }
        guard case .success(let message) = decoded else { return }
        try roundTrip(message)
    }

    static func roundTrip<M: StreamMessage & Equatable>(_ message: M) throws(FuzzViolation) {
        let fields: [(String, String)]
        do {
            fields = try StreamFieldEncoder.encode(message)
        } catch {
            throw FuzzViolation("\(message) decodes but does not encode: \(error)")
        }
        // A message's own codec writes exactly the Codable encoding's text (the contract).
        if message is any StreamFieldEncodable, let reference = try? StreamFieldEncoder.encodeCodable(message),
            reference.map(\.0) != fields.map(\.0) || reference.map(\.1) != fields.map(\.1)
        {
            throw FuzzViolation("the codec writes \(fields); the Codable encoding \(reference)")
        }
        for (name, value) in fields where ["nan", "inf", "-inf", "+inf"].contains(value.lowercased()) {
            throw FuzzViolation("field \(name) encodes the non-finite \(value) for \(message)")
        }
        let again: M
        do {
            again = try StreamFieldDecoder.decode(M.self, from: fields)
        } catch {
            throw FuzzViolation("\(message) encodes to \(fields), which does not decode: \(error)")
        }
        guard again == message else {
            throw FuzzViolation("\(message) encodes to \(fields), which decodes to \(again)")
        }
    }
}
