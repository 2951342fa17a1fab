import GatewayEngine
import HTTPTypes
import ServiceKit
import TEModels

/// A client mistake in a request: answered with 400 `{"error":{"code","message","field"}}`.
public struct RequestError: Error, Equatable, Sendable {
    public enum Code: String, Sendable, CaseIterable {
        case malformedJSON = "malformed_json"
        case invalidType = "invalid_type"
        case unknownField = "unknown_field"
        case duplicateField = "duplicate_field"
        case missingField = "missing_field"
        case invalidSymbol = "invalid_symbol"
        case invalidFeatures = "invalid_features"
        case nonFiniteNumber = "non_finite_number"
        case invalidValue = "invalid_value"
        case bodyTooLarge = "body_too_large"
        case invalidQuery = "invalid_query"
        /// The HTTP/1.1 framing itself (Content-Length, chunking, the head).
        case malformedHTTP = "malformed_http"
        case unsupportedMediaType = "unsupported_media_type"
        case notFound = "not_found"
        case methodNotAllowed = "method_not_allowed"
    }

    public var code: Code
    public var message: String
    public var field: String?

    public init(_ code: Code, _ message: String, field: String? = nil) {
        self.code = code
        self.message = message
        self.field = field
    }

    public var json: String { Self.json(code: code.rawValue, message: message, field: field) }

    /// The HTTP status this error is answered with.
    public var status: HTTPResponse.Status {
        switch code {
        case .unsupportedMediaType: .unsupportedMediaType
        case .notFound: .notFound
        case .methodNotAllowed: .methodNotAllowed
        case .malformedJSON, .invalidType, .unknownField, .duplicateField, .missingField, .invalidSymbol,
            .invalidFeatures,
            .nonFiniteNumber, .invalidValue, .bodyTooLarge, .invalidQuery, .malformedHTTP:
            .badRequest
        }
    }

    /// `{"error":{"code","message","field"}}`, the body of every client-error answer.
    static func json(code: String, message: String, field: String?) -> String {
        let field = field.map { "\"\(JSONText.escape($0))\"" } ?? "null"
        return "{\"error\":{\"code\":\"\(code)\",\"message\":\"\(JSONText.escape(message))\",\"field\":\(field)}}"
    }
}

/// Strict parser of the `POST /v1/score` body. Hand-written rather than `JSONDecoder` because it is on
/// the hot path (about a microsecond instead of tens) and because it must reject unknown and duplicate
/// fields and name the offending field precisely.
public enum ScoreRequestParser {
    public static let maxBodyBytes = 64 * 1024
    static let knownFields = ["symbol", "ts_ns", "features", "freshness_ms"]

    public static func parse(_ bytes: some Collection<UInt8>) throws(RequestError) -> ScoreRequest {
        if let result = bytes.withContiguousStorageIfAvailable({ buffer in
            Result { () throws(RequestError) -> ScoreRequest in try parse(UnsafeRawBufferPointer(buffer)) }
        }) {
            return try result.get()
        }
        let array = Array(bytes)
        return try array.withUnsafeBytes { buffer in
            Result { () throws(RequestError) -> ScoreRequest in try parse(buffer) }
        }.get()
    }

    public static func parseResult(_ buffer: UnsafeRawBufferPointer) -> Result<ScoreRequest, RequestError> {
        do {
            return .success(try parse(buffer))
        } catch {
            return .failure(error)
        }
    }

    public static func parse(_ buffer: UnsafeRawBufferPointer) throws(RequestError) -> ScoreRequest {
        guard buffer.count <= maxBodyBytes else {
            throw RequestError(.bodyTooLarge, "body exceeds \(maxBodyBytes) bytes")
        }
        var p = JSONScanner(buffer)
        var symbol: String?
        var tsNs: Int64?
        var features: [Double]?
        var freshnessMs: Int?
        var seen: Set<String> = []

        p.skipSpace()
        guard p.peek() == UInt8(ascii: "{") else {
            throw RequestError(.malformedJSON, p.atEnd ? "empty body" : "the body must be a JSON object")
        }
        p.advance()
        p.skipSpace()
        if p.peek() == UInt8(ascii: "}") {
            p.advance()
        } else {
            while true {
                p.skipSpace()
                guard p.peek() == UInt8(ascii: "\"") else { throw p.malformed("expected a field name") }
                let key = try p.string(field: nil)
                p.skipSpace()
                guard p.peek() == UInt8(ascii: ":") else { throw p.malformed("expected ':' after \"\(key)\"") }
                p.advance()
                p.skipSpace()
                guard seen.insert(key).inserted else {
                    throw RequestError(.duplicateField, "field appears twice", field: key)
                }
                switch key {
                case "symbol":
                    guard p.peek() == UInt8(ascii: "\"") else {
                        throw try p.typeError(field: key, expected: "a string")
                    }
                    symbol = try p.string(field: key)
                case "ts_ns":
                    if try p.null() { break }
                    tsNs = try p.integer(field: key)
                case "freshness_ms":
                    if try p.null() { break }
                    let value = try p.integer(field: key)
                    guard value >= 0, value <= 86_400_000 else {
                        throw RequestError(.invalidValue, "must be between 0 and 86400000", field: key)
                    }
                    freshnessMs = Int(value)
                case "features":
                    if try p.null() { break }
                    features = try p.numberArray(field: key)
                default:
                    throw RequestError(
                        .unknownField, "unknown field; allowed: \(knownFields.joined(separator: ", "))", field: key)
                }
                p.skipSpace()
                if p.peek() == UInt8(ascii: ",") {
                    p.advance()
                    continue
                }
                guard p.peek() == UInt8(ascii: "}") else { throw p.malformed("expected ',' or '}'") }
                p.advance()
                break
            }
        }
        p.skipSpace()
        guard p.atEnd else { throw p.malformed("unexpected data after the object") }

        guard let symbol else { throw RequestError(.missingField, "required", field: "symbol") }
        guard Symbol.isValid(symbol) else {
            throw RequestError(
                .invalidSymbol, "not a valid symbol (upper-case letters and digits, one separator, 2-32 characters)",
                field: "symbol")
        }
        if let features {
            guard features.count == FeatureVector.count else {
                throw RequestError(
                    .invalidFeatures, "expected \(FeatureVector.count) numbers, got \(features.count)",
                    field: "features")
            }
        }
        if let tsNs, tsNs < 0 { throw RequestError(.invalidValue, "must not be negative", field: "ts_ns") }
        return ScoreRequest(symbol: symbol, tsNs: tsNs, features: features, freshnessMs: freshnessMs)
    }
}

/// A cursor over JSON bytes with just what the request parser needs.
struct JSONScanner {
    let bytes: UnsafeRawBufferPointer
    var index = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    var atEnd: Bool { index >= bytes.count }
    func peek() -> UInt8? { index < bytes.count ? bytes[index] : nil }
    mutating func advance() { index += 1 }

    mutating func skipSpace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }

    func malformed(_ message: String) -> RequestError {
        RequestError(.malformedJSON, "\(message) at byte \(index)")
    }

    mutating func null() throws(RequestError) -> Bool {
        guard peek() == UInt8(ascii: "n") else { return false }
        guard index + 4 <= bytes.count, bytes[index + 1] == UInt8(ascii: "u"), bytes[index + 2] == UInt8(ascii: "l"),
            bytes[index + 3] == UInt8(ascii: "l")
        else { throw malformed("invalid literal") }
        index += 4
        return true
    }

    /// The error for a value of the wrong type: a type error when the value is well-formed JSON, else malformed.
    mutating func typeError(field: String, expected: String) throws(RequestError) -> RequestError {
        try skipValue()
        return RequestError(.invalidType, "expected \(expected)", field: field)
    }

    mutating func skipValue() throws(RequestError) {
        guard let c = peek() else { throw malformed("expected a value") }
        switch c {
        case UInt8(ascii: "\""): _ = try string(field: nil)
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            let close = c == UInt8(ascii: "{") ? UInt8(ascii: "}") : UInt8(ascii: "]")
            advance()
            skipSpace()
            if peek() == close {
                advance()
                return
            }
            while true {
                skipSpace()
                if close == UInt8(ascii: "}") {
                    guard peek() == UInt8(ascii: "\"") else { throw malformed("expected a field name") }
                    _ = try string(field: nil)
                    skipSpace()
                    guard peek() == UInt8(ascii: ":") else { throw malformed("expected ':'") }
                    advance()
                    skipSpace()
                }
                try skipValue()
                skipSpace()
                if peek() == UInt8(ascii: ",") {
                    advance()
                    continue
                }
                guard peek() == close else { throw malformed("expected ',' or '\(Character(UnicodeScalar(close)))'") }
                advance()
                return
            }
        case UInt8(ascii: "t"), UInt8(ascii: "f"), UInt8(ascii: "n"):
            for word in ["true", "false", "null"] where c == word.utf8.first! {
                let w = Array(word.utf8)
                guard index + w.count <= bytes.count else { throw malformed("invalid literal") }
                for (i, b) in w.enumerated() where bytes[index + i] != b { throw malformed("invalid literal") }
                index += w.count
                return
            }
        default:
            _ = try numberToken()
        }
    }

    mutating func string(field: String?) throws(RequestError) -> String {
        advance()  // opening quote
        let start = index
        var plain = true
        while index < bytes.count {
            let c = bytes[index]
            if c == UInt8(ascii: "\"") {
                let raw = UnsafeRawBufferPointer(rebasing: bytes[start..<index])
                index += 1
                if plain { return String(decoding: raw, as: UTF8.self) }
                return try unescape(raw)
            }
            if c == UInt8(ascii: "\\") {
                plain = false
                index += 2
                continue
            }
            if c < 0x20 { throw malformed("control character in a string") }
            index += 1
        }
        throw malformed("unterminated string")
    }

    func unescape(_ raw: UnsafeRawBufferPointer) throws(RequestError) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(raw.count)
        var i = 0
        while i < raw.count {
            let c = raw[i]
            guard c == UInt8(ascii: "\\") else {
                out.append(c)
                i += 1
                continue
            }
            guard i + 1 < raw.count else { throw malformed("bad escape") }
            switch raw[i + 1] {
            case UInt8(ascii: "\""): out.append(UInt8(ascii: "\""))
            case UInt8(ascii: "\\"): out.append(UInt8(ascii: "\\"))
            case UInt8(ascii: "/"): out.append(UInt8(ascii: "/"))
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                guard i + 6 <= raw.count,
                    let code = UInt32(
                        String(decoding: UnsafeRawBufferPointer(rebasing: raw[(i + 2)..<(i + 6)]), as: UTF8.self),
                        radix: 16)
                else { throw malformed("bad \\u escape") }
                // Surrogates are not needed by any valid field value; they decode to U+FFFD.
                let scalar = Unicode.Scalar(code) ?? "\u{FFFD}"
                out.append(contentsOf: Array(String(Character(scalar)).utf8))
                i += 6
                continue
            default: throw malformed("bad escape")
            }
            i += 2
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The bytes of a JSON number, validated against the JSON grammar.
    mutating func numberToken() throws(RequestError) -> UnsafeRawBufferPointer {
        let start = index
        if peek() == UInt8(ascii: "-") { advance() }
        func digits(_ s: inout JSONScanner) -> Int {
            var n = 0
            while let c = s.peek(), c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") {
                s.advance()
                n += 1
            }
            return n
        }
        let intDigits = digits(&self)
        guard intDigits > 0 else { throw malformed("expected a value") }
        if intDigits > 1, bytes[index - intDigits] == UInt8(ascii: "0") { throw malformed("leading zero in a number") }
        if peek() == UInt8(ascii: ".") {
            advance()
            guard digits(&self) > 0 else { throw malformed("digits expected after '.'") }
        }
        if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
            advance()
            if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { advance() }
            guard digits(&self) > 0 else { throw malformed("digits expected in exponent") }
        }
        return UnsafeRawBufferPointer(rebasing: bytes[start..<index])
    }

    mutating func isNumberStart() -> Bool {
        guard let c = peek() else { return false }
        return c == UInt8(ascii: "-") || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9"))
    }

    mutating func number(field: String) throws(RequestError) -> Double {
        guard isNumberStart() else {
            if let c = peek(), c == UInt8(ascii: "N") || c == UInt8(ascii: "I") {
                throw RequestError(.nonFiniteNumber, "NaN and Infinity are not numbers", field: field)
            }
            throw try typeError(field: field, expected: "a number")
        }
        let token = try numberToken()
        guard let value = Double(String(decoding: token, as: UTF8.self)) else {
            throw RequestError(.invalidType, "expected a number", field: field)
        }
        guard value.isFinite else { throw RequestError(.nonFiniteNumber, "not a finite number", field: field) }
        return value
    }

    mutating func integer(field: String) throws(RequestError) -> Int64 {
        guard isNumberStart() else { throw try typeError(field: field, expected: "an integer") }
        let token = try numberToken()
        guard let value = Int64(String(decoding: token, as: UTF8.self)) else {
            throw RequestError(.invalidType, "expected an integer (64-bit, no fraction or exponent)", field: field)
        }
        return value
    }

    /// Feature values: finite numbers that stay finite as FP32, the model's input type.
    mutating func numberArray(field: String) throws(RequestError) -> [Double] {
        guard peek() == UInt8(ascii: "[") else { throw try typeError(field: field, expected: "an array of numbers") }
        advance()
        var values: [Double] = []
        values.reserveCapacity(FeatureVector.count)
        skipSpace()
        if peek() == UInt8(ascii: "]") {
            advance()
            return values
        }
        while true {
            skipSpace()
            if values.count >= 1024 {
                throw RequestError(.invalidFeatures, "expected \(FeatureVector.count) numbers", field: field)
            }
            let element = "\(field)[\(values.count)]"
            let value = try number(field: element)
            // The model takes FP32: a double beyond Float's range would reach it as ±infinity.
            guard Float(value).isFinite else {
                throw RequestError(
                    .invalidValue, "outside the model's FP32 range (magnitude at most 3.4028235e38)", field: element)
            }
            values.append(value)
            skipSpace()
            if peek() == UInt8(ascii: ",") {
                advance()
                continue
            }
            guard peek() == UInt8(ascii: "]") else { throw malformed("expected ',' or ']'") }
            advance()
            return values
        }
    }
}
