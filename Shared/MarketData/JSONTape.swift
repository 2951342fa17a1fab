/// A JSON document parsed in one pass into a flat tape of nodes over the payload's bytes: no `[String: Any]`,
/// no `String` per key or value. The normalizer reads the few fixed venue shapes through it, decoding only the
/// fields it uses, straight from the bytes.
///
/// Accepts exactly RFC 8259 JSON with an object or array at the top (what `JSONSerialization` accepts without
/// `.fragmentsAllowed`): UTF-8 checked, no control characters in strings, valid escapes and surrogate pairs,
/// no leading zeros, no trailing bytes but whitespace, nesting ≤ 512; like it, one trailing comma in a container. Anything else is `bad_json`.
struct JSONTape {
    enum Kind: UInt8 { case object, array, string, number, boolTrue, boolFalse, null }

    struct Node {
        var kind: Kind
        /// A string with escapes (its bytes are not its text).
        var escaped: Bool
        /// String: the bytes between the quotes; number: its text; container: its brackets.
        var start: Int32
        var end: Int32
        /// Index of the node after this one's subtree (containers: after their last descendant).
        var next: Int32
    }

    private(set) var nodes: [Node] = []
    static let maxDepth = 512

    /// Parses `bytes`; false when they are not one JSON object or array.
    mutating func parse(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        nodes.removeAll(keepingCapacity: true)
        guard bytes.count < Int(Int32.max) else { return false }
        var parser = Parser(bytes: bytes)
        parser.skipWhitespace()
        guard parser.i < bytes.count, bytes[parser.i] == UInt8(ascii: "{") || bytes[parser.i] == UInt8(ascii: "[")
        else {
            return false
        }
        guard parser.value(into: &nodes, depth: 0) else { return false }
        parser.skipWhitespace()
        return parser.i == bytes.count
    }

    private struct Parser {
        let bytes: UnsafeBufferPointer<UInt8>
        var i = 0

        init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

        mutating func skipWhitespace() {
            while i < bytes.count {
                switch bytes[i] {
                case 0x20, 0x09, 0x0A, 0x0D: i += 1
                default: return
                }
            }
        }

        mutating func value(into nodes: inout [Node], depth: Int) -> Bool {
            guard i < bytes.count else { return false }
            switch bytes[i] {
            case UInt8(ascii: "{"): return container(into: &nodes, depth: depth, object: true)
            case UInt8(ascii: "["): return container(into: &nodes, depth: depth, object: false)
            case UInt8(ascii: "\""): return string(into: &nodes)
            case UInt8(ascii: "t"): return literal("true", .boolTrue, into: &nodes)
            case UInt8(ascii: "f"): return literal("false", .boolFalse, into: &nodes)
            case UInt8(ascii: "n"): return literal("null", .null, into: &nodes)
            default: return number(into: &nodes)
            }
        }

        mutating func container(into nodes: inout [Node], depth: Int, object: Bool) -> Bool {
            guard depth < JSONTape.maxDepth else { return false }
            let index = nodes.count
            nodes.append(Node(kind: object ? .object : .array, escaped: false, start: Int32(i), end: 0, next: 0))
            let close = object ? UInt8(ascii: "}") : UInt8(ascii: "]")
            i += 1
            skipWhitespace()
            if i < bytes.count, bytes[i] == close {
                i += 1
            } else {
                while true {
                    if object {
                        guard i < bytes.count, bytes[i] == UInt8(ascii: "\""), string(into: &nodes) else {
                            return false
                        }
                        skipWhitespace()
                        guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { return false }
                        i += 1
                        skipWhitespace()
                    }
                    guard value(into: &nodes, depth: depth + 1) else { return false }
                    skipWhitespace()
                    guard i < bytes.count else { return false }
                    if bytes[i] == UInt8(ascii: ",") {
                        i += 1
                        skipWhitespace()
                        // JSONSerialization accepts one trailing comma.
                        if i < bytes.count, bytes[i] == close {
                            i += 1
                            break
                        }
                        continue
                    }
                    guard bytes[i] == close else { return false }
                    i += 1
                    break
                }
            }
            nodes[index].end = Int32(i)
            nodes[index].next = Int32(nodes.count)
            return true
        }

        mutating func literal(_ word: StaticString, _ kind: Kind, into nodes: inout [Node]) -> Bool {
            let n = word.utf8CodeUnitCount
            guard bytes.count - i >= n else { return false }
            for k in 0..<n where bytes[i + k] != word.utf8Start[k] { return false }
            nodes.append(
                Node(kind: kind, escaped: false, start: Int32(i), end: Int32(i + n), next: Int32(nodes.count + 1)))
            i += n
            return true
        }

        private func isDigit(_ k: Int) -> Bool { k < bytes.count && bytes[k] >= 0x30 && bytes[k] <= 0x39 }

        mutating func number(into nodes: inout [Node]) -> Bool {
            let start = i
            if i < bytes.count, bytes[i] == UInt8(ascii: "-") { i += 1 }
            guard isDigit(i) else { return false }
            if bytes[i] == UInt8(ascii: "0") {
                i += 1
            } else {
                while isDigit(i) { i += 1 }
            }
            if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
                i += 1
                guard isDigit(i) else { return false }
                while isDigit(i) { i += 1 }
            }
            if i < bytes.count, bytes[i] | 0x20 == UInt8(ascii: "e") {
                i += 1
                if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") { i += 1 }
                guard isDigit(i) else { return false }
                while isDigit(i) { i += 1 }
            }
            nodes.append(
                Node(kind: .number, escaped: false, start: Int32(start), end: Int32(i), next: Int32(nodes.count + 1)))
            return true
        }

        /// At the opening quote.
        mutating func string(into nodes: inout [Node]) -> Bool {
            i += 1
            let start = i
            var escaped = false
            while i < bytes.count {
                let byte = bytes[i]
                switch byte {
                case UInt8(ascii: "\""):
                    nodes.append(
                        Node(
                            kind: .string, escaped: escaped, start: Int32(start), end: Int32(i),
                            next: Int32(nodes.count + 1)))
                    i += 1
                    return true
                case UInt8(ascii: "\\"):
                    escaped = true
                    guard escape() else { return false }
                case 0..<0x20:
                    return false
                case 0x80...:
                    guard utf8Sequence() else { return false }
                default:
                    i += 1
                }
            }
            return false
        }

        /// At a backslash: one valid escape (a high surrogate must be followed by an escaped low one).
        private mutating func escape() -> Bool {
            guard i + 1 < bytes.count else { return false }
            switch bytes[i + 1] {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                i += 2
                return true
            case UInt8(ascii: "u"):
                guard let unit = JSONTape.hex4(bytes, i + 2) else { return false }
                i += 6
                switch unit {
                case 0xD800...0xDBFF:
                    guard i + 1 < bytes.count, bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u"),
                        let low = JSONTape.hex4(bytes, i + 2), (0xDC00...0xDFFF).contains(low)
                    else { return false }
                    i += 6
                    return true
                case 0xDC00...0xDFFF: return false
                default: return true
                }
            default:
                return false
            }
        }

        /// At a byte ≥ 0x80: one well-formed UTF-8 sequence (no overlongs, surrogates or values past U+10FFFF).
        private mutating func utf8Sequence() -> Bool {
            let b0 = bytes[i]
            func continuation(_ k: Int, _ range: ClosedRange<UInt8> = 0x80...0xBF) -> Bool {
                i + k < bytes.count && range.contains(bytes[i + k])
            }
            let length: Int
            switch b0 {
            case 0xC2...0xDF: length = continuation(1) ? 2 : 0
            case 0xE0: length = continuation(1, 0xA0...0xBF) && continuation(2) ? 3 : 0
            case 0xE1...0xEC, 0xEE...0xEF: length = continuation(1) && continuation(2) ? 3 : 0
            case 0xED: length = continuation(1, 0x80...0x9F) && continuation(2) ? 3 : 0
            case 0xF0: length = continuation(1, 0x90...0xBF) && continuation(2) && continuation(3) ? 4 : 0
            case 0xF1...0xF3: length = continuation(1) && continuation(2) && continuation(3) ? 4 : 0
            case 0xF4: length = continuation(1, 0x80...0x8F) && continuation(2) && continuation(3) ? 4 : 0
            default: length = 0
            }
            i += length
            return length > 0
        }
    }

    static func hex4(_ bytes: UnsafeBufferPointer<UInt8>, _ at: Int) -> UInt16? {
        guard at + 4 <= bytes.count else { return nil }
        var value: UInt16 = 0
        for k in at..<(at + 4) {
            let b = bytes[k]
            let digit: UInt8
            switch b {
            case 0x30...0x39: digit = b - 0x30
            case 0x41...0x46: digit = b - 0x41 + 10
            case 0x61...0x66: digit = b - 0x61 + 10
            default: return nil
            }
            value = value << 4 | UInt16(digit)
        }
        return value
    }
}

/// A parsed document with its bytes: read access to the tape. Valid only while the bytes are.
struct JSONView {
    let bytes: UnsafeBufferPointer<UInt8>
    let tape: JSONTape

    struct Value: Equatable { let index: Int32 }

    var root: Value { Value(index: 0) }

    private func node(_ v: Value) -> JSONTape.Node { tape.nodes[Int(v.index)] }

    func kind(_ v: Value) -> JSONTape.Kind { node(v).kind }

    /// The value of `key` in object `v` (the first, if the key repeats); nil when `v` is no object or has no `key`.
    func member(_ v: Value, _ key: StaticString) -> Value? {
        let n = node(v)
        guard n.kind == .object else { return nil }
        var k = v.index + 1
        while k < n.next {
            let keyNode = tape.nodes[Int(k)]
            let value = k + 1
            if equals(keyNode, key) { return Value(index: value) }
            k = tape.nodes[Int(value)].next
        }
        return nil
    }

    /// The members of object `v` in document order (empty for anything else).
    func members(_ v: Value) -> [(key: String, value: Value)] {
        let n = node(v)
        guard n.kind == .object else { return [] }
        var out: [(key: String, value: Value)] = []
        var k = v.index + 1
        while k < n.next {
            out.append((string(Value(index: k)) ?? "", Value(index: k + 1)))
            k = tape.nodes[Int(k + 1)].next
        }
        return out
    }

    /// Whether object `v` has `key`.
    func has(_ v: Value, _ key: StaticString) -> Bool { member(v, key) != nil }

    /// The elements of array `v` (empty for anything else).
    func elements(_ v: Value) -> Elements {
        let n = node(v)
        return Elements(view: self, first: n.kind == .array ? v.index + 1 : n.next, end: n.next)
    }

    struct Elements: Sequence, IteratorProtocol {
        let view: JSONView
        var first: Int32
        let end: Int32

        mutating func next() -> Value? {
            guard first < end else { return nil }
            defer { first = view.tape.nodes[Int(first)].next }
            return Value(index: first)
        }

        var count: Int {
            var n = 0
            var it = self
            while it.next() != nil { n += 1 }
            return n
        }
    }

    private func equals(_ n: JSONTape.Node, _ text: StaticString) -> Bool {
        guard !n.escaped else { return decoded(n) == text.description }
        let count = Int(n.end - n.start)
        guard count == text.utf8CodeUnitCount else { return false }
        let p = text.utf8Start
        for k in 0..<count where bytes[Int(n.start) + k] != p[k] { return false }
        return true
    }

    /// Whether string `v` has escapes (its raw bytes are not its text).
    func isEscaped(_ v: Value) -> Bool { node(v).escaped }

    /// Whether `v` is the string `text`.
    func isString(_ v: Value, _ text: StaticString) -> Bool {
        let n = node(v)
        return n.kind == .string && equals(n, text)
    }

    /// The text of string `v`; nil for anything else.
    func string(_ v: Value) -> String? {
        let n = node(v)
        guard n.kind == .string else { return nil }
        return n.escaped ? decoded(n) : String(decoding: raw(n), as: UTF8.self)
    }

    private func raw(_ n: JSONTape.Node) -> UnsafeBufferPointer<UInt8> {
        UnsafeBufferPointer(rebasing: bytes[Int(n.start)..<Int(n.end)])
    }

    /// The raw bytes of a string or number (the JSON text between the quotes).
    func rawBytes(_ v: Value) -> UnsafeBufferPointer<UInt8> { raw(node(v)) }

    /// A string's text with its escapes decoded (the tape checked them).
    private func decoded(_ n: JSONTape.Node) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(Int(n.end - n.start))
        var k = Int(n.start)
        let end = Int(n.end)
        func appendScalar(_ scalar: UInt32) {
            if let s = Unicode.Scalar(scalar) { out.append(contentsOf: Array(String(Character(s)).utf8)) }
        }
        while k < end {
            let b = bytes[k]
            guard b == UInt8(ascii: "\\") else {
                out.append(b)
                k += 1
                continue
            }
            let e = bytes[k + 1]
            k += 2
            switch e {
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                let unit = UInt32(JSONTape.hex4(bytes, k) ?? 0)
                k += 4
                if (0xD800...0xDBFF).contains(unit) {
                    let low = UInt32(JSONTape.hex4(bytes, k + 2) ?? 0)
                    k += 6
                    appendScalar(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))
                } else {
                    appendScalar(unit)
                }
            default: out.append(e)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// A JSON number's value (nil for anything else), as `JSONSerialization`'s NSNumber `doubleValue` gives it.
    func jsonNumber(_ v: Value) -> Double? {
        let n = node(v)
        guard n.kind == .number else { return nil }
        // An integer text is an integer NSNumber there (so "-0" is 0).
        if let integer = DecimalText.int64(raw(n)) { return Double(integer) }
        return DecimalText.double(raw(n))
    }

    /// A JSON number as an integer (a fraction is truncated, as NSNumber's `int64Value` does); nil when it is no
    /// number or does not fit.
    func jsonInteger(_ v: Value) -> Int64? {
        let n = node(v)
        guard n.kind == .number else { return nil }
        if let exact = DecimalText.int64(raw(n)) { return exact }
        // Past Int64.max an unsigned NSNumber, whose int64Value wraps.
        if let unsigned = UInt64(String(decoding: raw(n), as: UTF8.self)) { return Int64(bitPattern: unsigned) }
        guard let d = DecimalText.double(raw(n)), d.isFinite else { return nil }
        return Int64(exactly: d.rounded(.towardZero))
    }

    /// A short description of `v` for a rejection's detail.
    func describe(_ v: Value) -> String {
        let n = node(v)
        switch n.kind {
        case .string: return string(v) ?? ""
        case .object: return "an object"
        case .array: return "an array"
        case .boolTrue: return "true"
        case .boolFalse: return "false"
        case .null: return "null"
        case .number: return String(decoding: raw(n), as: UTF8.self)
        }
    }
}

/// Decimal text to numbers with the exact semantics of `Double(String)` (correctly rounded, shortest
/// round-trip): the common short decimals by the exact fast path (an integer mantissa below 2^53 and a power
/// of ten up to 10^22 are both exact, so one IEEE multiply or divide rounds correctly), the rest by
/// `Double(String)` itself.
enum DecimalText {
    private static let powers: [Double] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18,
        1e19, 1e20, 1e21, 1e22
    ]

    /// `Double(String(decoding: text, as: UTF8.self))`, without the `String` for plain decimals.
    static func double(_ text: UnsafeBufferPointer<UInt8>) -> Double? {
        if let fast = fastDouble(text) { return fast }
        return Double(String(decoding: text, as: UTF8.self))
    }

    /// `[-]digits[.digits]` with a mantissa below 2^53 (trailing fraction zeros dropped) and a scale within 10^22; nil otherwise.
    private static func fastDouble(_ text: UnsafeBufferPointer<UInt8>) -> Double? {
        let n = text.count
        let negative = n > 0 && text[0] == UInt8(ascii: "-")
        var k = negative ? 1 : 0
        var mantissa: UInt64 = 0
        var digits = 0
        var intDigits = 0
        var scale = 0
        var sawDot = false
        var trailingZeros = 0
        while k < n {
            let b = text[k]
            if b >= 0x30, b <= 0x39 {
                if mantissa == 0 && b == 0x30 {
                    // Leading zeros are not significant.
                    if sawDot { scale += 1 } else { intDigits += 1 }
                } else {
                    mantissa = mantissa &* 10 &+ UInt64(b - 0x30)
                    digits += 1
                    guard digits <= 19 else { return nil }
                    if sawDot { scale += 1 } else { intDigits += 1 }
                    trailingZeros = b == 0x30 ? trailingZeros + 1 : 0
                }
            } else if b == UInt8(ascii: "."), !sawDot {
                sawDot = true
                // "5." and ".5" are Double(String)'s business, not a plain decimal's.
                guard intDigits > 0, k + 1 < n else { return nil }
            } else {
                return nil
            }
            k += 1
        }
        guard intDigits > 0 else { return nil }
        // Drop trailing zeros: 61837.63000000 is 6183763 / 10^2.
        while trailingZeros > 0, scale > 0 {
            mantissa /= 10
            trailingZeros -= 1
            scale -= 1
        }
        guard mantissa < (1 << 53), scale <= 22 else { return nil }
        let value = scale == 0 ? Double(mantissa) : Double(mantissa) / powers[scale]
        return negative ? -value : value
    }

    /// `[-]digits` that fits an Int64; nil otherwise.
    static func int64(_ text: UnsafeBufferPointer<UInt8>) -> Int64? {
        let n = text.count
        let negative = n > 0 && text[0] == UInt8(ascii: "-")
        var k = negative ? 1 : 0
        guard k < n else { return nil }
        var value: Int64 = 0
        while k < n {
            let b = text[k]
            guard b >= 0x30, b <= 0x39 else { return nil }
            let (m, o1) = value.multipliedReportingOverflow(by: 10)
            let (s, o2) =
                negative ? m.subtractingReportingOverflow(Int64(b - 0x30)) : m.addingReportingOverflow(Int64(b - 0x30))
            guard !o1, !o2 else { return nil }
            value = s
            k += 1
        }
        return value
    }
}
