import Foundation
import Testing

@testable import MarketData

/// The tape against Foundation's `JSONSerialization` (what the normalizer used before): same documents
/// accepted, same structure, same strings, and every number — JSON numbers and the decimal strings venues
/// send prices in — bit-identical.
@Suite struct JSONTapeTests {
    /// Walks both parses in step; returns the first difference.
    static func difference(_ foundation: Any, _ json: JSONView, _ v: JSONView.Value, path: String = "$") -> String? {
        switch foundation {
        case let object as [String: Any]:
            guard json.kind(v) == .object else { return "\(path): object vs \(json.kind(v))" }
            let members = json.members(v)
            guard members.count == object.count else { return "\(path): \(object.count) vs \(members.count) members" }
            for (key, value) in members {
                guard let expected = object[key] else { return "\(path): key \(key) only in the tape" }
                if let d = difference(expected, json, value, path: "\(path).\(key)") { return d }
            }
        case let array as [Any]:
            guard json.kind(v) == .array else { return "\(path): array vs \(json.kind(v))" }
            let elements = Array(json.elements(v))
            guard elements.count == array.count else { return "\(path): \(array.count) vs \(elements.count) elements" }
            for (i, (a, b)) in zip(array, elements).enumerated() {
                if let d = difference(a, json, b, path: "\(path)[\(i)]") { return d }
            }
        case let string as String:
            guard json.string(v) == string else { return "\(path): \"\(string)\" vs \(json.describe(v))" }
            // Venues' decimal strings: the normalizer's number from the bytes equals Double(String).
            let tape = try? MarketNormalizer.number(json, v, field: "")
            let reference = Double(string).flatMap { $0.isFinite ? $0 : nil }
            guard tape?.bitPattern == reference?.bitPattern else {
                return "\(path): Double(\"\(string)\") \(String(describing: reference)) vs \(String(describing: tape))"
            }
        case is NSNull:
            guard json.kind(v) == .null else { return "\(path): null vs \(json.kind(v))" }
        case let number as NSNumber:
            if json.kind(v) == .boolTrue || json.kind(v) == .boolFalse {
                guard (foundation as? Bool) == (json.kind(v) == .boolTrue) else { return "\(path): bool" }
                return nil
            }
            guard let d = json.jsonNumber(v) else { return "\(path): number vs \(json.kind(v))" }
            guard d.bitPattern == number.doubleValue.bitPattern else { return "\(path): \(number) vs \(d)" }
            guard json.jsonInteger(v) == number.int64Value else {
                return "\(path): integer \(number.int64Value) vs \(String(describing: json.jsonInteger(v)))"
            }
        default:
            return "\(path): unexpected \(type(of: foundation))"
        }
        return nil
    }

    static func check(_ payload: [UInt8]) -> String? {
        let foundation = try? JSONSerialization.jsonObject(with: Data(payload))
        var tape = JSONTape()
        return payload.withUnsafeBufferPointer { bytes in
            let parsed = tape.parse(bytes)
            guard let foundation else { return parsed ? "accepted what JSONSerialization refuses" : nil }
            guard parsed else { return "refused what JSONSerialization accepts" }
            return difference(foundation, JSONView(bytes: bytes, tape: tape), JSONView.Value(index: 0))
        }
    }

    static let recordings = [
        "binance/spot_btcusdt_20240808.gz", "binance/spot_ethusdt_20240808.gz", "binance/usdm_btcusdt_20240808.gz",
        "binance/usdm_ethusdt_20240808.gz", "binance/usdm_btcusdt_20240718.gz", "binance/usdm_ethusdt_20240718.gz",
        "binance/cm_ethusd_perp_20240808.gz", "hyperliquid/btcusd_20250126.gz", "cryptofeed/KRAKEN.jsonl.zst",
        "cryptofeed/BINANCE.jsonl.zst"
    ]

    @Test(
        "every message of every recording parses as JSONSerialization parses it, numbers bit-identical",
        arguments: recordings)
    func recordingsAgreeWithJSONSerialization(_ file: String) throws {
        let reader = try RecordingReader(path: "\(dataDirectory)/\(file)")
        var messages = 0
        var differences: [String] = []
        while let message = try reader.next() {
            messages += 1
            if let d = Self.check(message.payload), differences.count < 5 {
                differences.append("message \(messages): \(d)")
            }
        }
        #expect(messages > 50)
        #expect(differences.isEmpty, "\(differences)")
    }

    @Test func acceptsAndRefusesWhatJSONSerializationDoes() {
        let documents = [
            "{}", "[]", " {\"a\" : [1, -0, 0.5, 1e3, 1E-3, -12.5e+2, true, false, null]} ",
            "{\"a\":\"\\u00e9\\n\\\"\"}",
            "{\"a\":\"\\ud83d\\ude00\"}", "{\"é\":\"ü\"}",
            "[18446744073709551615, 9223372036854775807, -9223372036854775808]",
            "[0.1, 0.25, 2.2250738585072014e-308, 1.5e3, -7.25]",
            "{not json", "", "5", "\"a\"", "[01]", "[1.]", "[.5]", "[+1]", "[1e]", "[-]", "{\"a\":1,}", "[1,]", "[1 2]",
            "{\"a\" 1}", "{1:2}", "[\"\t\"]", "[\"\\x\"]", "[\"\\ud800\"]", "[\"\\udc00\"]", "[tru]", "[nul]", "{} {}",
            "[1]x", "[\"abc]", "{\"a\":[1,{\"b\":[]}]}", "[NaN]", "[Infinity]",
            "[\"NaN\", \"inf\", \"1e400\", \"0x10\", \" 5\"]"
        ]
        var failures: [String] = []
        for document in documents {
            if let d = Self.check(Array(document.utf8)) { failures.append("\(document): \(d)") }
        }
        for bytes: [UInt8] in [
            [0x5B, 0x22, 0xFF, 0x22, 0x5D], [0x5B, 0x22, 0xC3, 0x22, 0x5D], [0x5B, 0x22, 0xED, 0xA0, 0x80, 0x22, 0x5D]
        ] {
            if let d = Self.check(bytes) { failures.append("\(bytes): \(d)") }
        }
        #expect(failures.isEmpty, "\(failures)")
    }

    @Test func decimalTextIsDoubleOfTheString() {
        for text in [
            "61837.63000000", "0.00100000", "3.78826", "105055.0", "0", "-0", "100", "007", "9007199254740993",
            "0.1", "1234567890.123456789", "2682.17", "1e5", "+5", ".5", "5.", "-1.5", "99999999999999999999"
        ] {
            let bytes = Array(text.utf8)
            let parsed = bytes.withUnsafeBufferPointer { DecimalText.double($0) }
            #expect(parsed?.bitPattern == Double(text)?.bitPattern, "\(text)")
        }
    }
}
