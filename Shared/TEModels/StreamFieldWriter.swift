/// Stream fields written straight into bytes: name, value, name, value, … in one flat buffer plus each
/// argument's length — the layout `RedisCommand` sends — so encoding an entry builds no String per field.
///
/// The text is the contract of DESIGN.md "Messages" and what the Codable encoder wrote: integers in
/// decimal; a `Double` field integral and below 1e15 in magnitude as an integer, any other in Swift's
/// shortest round-trip form (`description`, so `nan`/`inf` stay as they were); nested values as JSON
/// text the way `JSONEncoder` (sorted keys, slashes unescaped) writes them.
public struct StreamFieldWriter: Sendable {
    public private(set) var bytes: [UInt8] = []
    /// Byte length of each argument: names at even, values at odd positions.
    public private(set) var lengths: [Int] = []

    public init(capacity: Int = 256) {
        bytes.reserveCapacity(capacity)
        lengths.reserveCapacity(32)
    }

    /// `v` then the message's fields: the typed codec when `M` has one, the Codable encoder otherwise.
    public init<M: StreamMessage>(encoding message: M) throws(MessageEncodingError) {
        if let typed = message as? any StreamFieldEncodable {
            self = try typed.streamFields()
            return
        }
        self.init()
        let pairs: [(String, String)]
        do {
            pairs = try StreamFieldEncoder.encodeCodable(message)
        } catch {
            throw MessageEncodingError(field: "", reason: "\(error)")
        }
        for (name, value) in pairs { field(name, value) }
    }

    public var fieldCount: Int { lengths.count / 2 }

    /// The fields as text, for callers that keep text (`te`, dead-letter payloads, tests).
    public var pairs: [(String, String)] {
        var out: [(String, String)] = []
        out.reserveCapacity(fieldCount)
        bytes.withUnsafeBufferPointer { all in
            var offset = 0
            var i = 0
            while i + 1 < lengths.count {
                let name = String(
                    decoding: UnsafeBufferPointer(rebasing: all[offset..<offset + lengths[i]]), as: UTF8.self)
                offset += lengths[i]
                let value = String(
                    decoding: UnsafeBufferPointer(rebasing: all[offset..<offset + lengths[i + 1]]), as: UTF8.self)
                offset += lengths[i + 1]
                out.append((name, value))
                i += 2
            }
        }
        return out
    }

    // MARK: Fields

    public mutating func field(_ name: String, _ value: String) {
        argument(name)
        argument(value)
    }

    public mutating func field(_ name: StaticString, int value: Int64) {
        argument(name)
        let start = bytes.count
        Self.appendInteger(value, to: &bytes)
        lengths.append(bytes.count - start)
    }

    public mutating func field(_ name: StaticString, int value: Int) { field(name, int: Int64(value)) }

    public mutating func field(_ name: StaticString, double value: Double) {
        argument(name)
        let start = bytes.count
        Self.appendScalar(value, to: &bytes)
        lengths.append(bytes.count - start)
    }

    public mutating func field(_ name: StaticString, bool value: Bool) {
        argument(name)
        argument(value ? "true" : "false")
    }

    /// A field whose value is JSON text written by `body`; nothing is kept when `body` throws.
    public mutating func field(
        _ name: StaticString, json body: (inout JSONTextWriter) throws(MessageEncodingError) -> Void
    ) throws(MessageEncodingError) {
        let mark = (bytes.count, lengths.count)
        argument(name)
        var json = JSONTextWriter(bytes: [])
        swap(&json.bytes, &bytes)
        let start = json.bytes.count
        var failure: MessageEncodingError?
        do { try body(&json) } catch { failure = error }
        swap(&json.bytes, &bytes)
        if var failure {
            bytes.removeSubrange(mark.0...)
            lengths.removeSubrange(mark.1...)
            failure.field = failure.field.isEmpty ? "\(name)" : "\(name)\(failure.field)"
            throw failure
        }
        lengths.append(bytes.count - start)
    }

    private mutating func argument(_ text: String) {
        var text = text
        let n = text.withUTF8 { utf8 in
            bytes.append(contentsOf: utf8)
            return utf8.count
        }
        lengths.append(n)
    }

    private mutating func argument(_ text: StaticString) {
        text.withUTF8Buffer { bytes.append(contentsOf: $0) }
        lengths.append(text.utf8CodeUnitCount)
    }

    // MARK: Number text

    public static func appendInteger(_ value: Int64, to bytes: inout [UInt8]) {
        if value < 0 { bytes.append(UInt8(ascii: "-")) }
        var magnitude = value.magnitude
        let start = bytes.count
        repeat {
            bytes.append(UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: magnitude % 10))
            magnitude /= 10
        } while magnitude > 0
        var (i, j) = (start, bytes.count - 1)
        while i < j {
            bytes.swapAt(i, j)
            i += 1
            j -= 1
        }
    }

    /// A `Double` field: integral values below 1e15 as integers (`-0` as `0`), others as `description`.
    static func appendScalar(_ value: Double, to bytes: inout [UInt8]) {
        if value == value.rounded(), abs(value) < 1e15 {
            appendInteger(Int64(value), to: &bytes)
        } else {
            appendDescription(value, to: &bytes)
        }
    }

    /// `value.description` without making a String: `Double.write(to:)` hands its stack buffer to
    /// `_writeASCII`.
    public static func appendDescription(_ value: Double, to bytes: inout [UInt8]) {
        var sink = ASCIISink()
        swap(&sink.bytes, &bytes)
        value.write(to: &sink)
        swap(&sink.bytes, &bytes)
    }
}

private struct ASCIISink: TextOutputStream {
    var bytes: [UInt8] = []
    mutating func write(_ string: String) { bytes.append(contentsOf: string.utf8) }
    mutating func _writeASCII(_ buffer: UnsafeBufferPointer<UInt8>) { bytes.append(contentsOf: buffer) }
}

/// JSON text the way `JSONEncoder` writes it with `.sortedKeys` and `.withoutEscapingSlashes`: numbers
/// as `description` without a trailing `.0`, strings with `\"` `\\` `\b` `\f` `\n` `\r` `\t` and `\u00xx`
/// escapes. A non-finite number cannot be JSON and throws, as `JSONEncoder` does.
public struct JSONTextWriter: Sendable {
    public fileprivate(set) var bytes: [UInt8]

    public init(bytes: [UInt8] = []) { self.bytes = bytes }

    public mutating func raw(_ text: StaticString) { text.withUTF8Buffer { bytes.append(contentsOf: $0) } }

    public mutating func number(_ value: Double, field: String = "") throws(MessageEncodingError) {
        guard value.isFinite else {
            throw MessageEncodingError(field: field, reason: "\(value) cannot be JSON")
        }
        StreamFieldWriter.appendDescription(value, to: &bytes)
        let n = bytes.count
        if n >= 2, bytes[n - 2] == UInt8(ascii: "."), bytes[n - 1] == UInt8(ascii: "0") { bytes.removeLast(2) }
    }

    public mutating func string(_ text: String) {
        bytes.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): raw("\\\"")
            case UInt8(ascii: "\\"): raw("\\\\")
            case 0x08: raw("\\b")
            case 0x0C: raw("\\f")
            case UInt8(ascii: "\n"): raw("\\n")
            case UInt8(ascii: "\r"): raw("\\r")
            case UInt8(ascii: "\t"): raw("\\t")
            case 0..<0x20:
                raw("\\u00")
                bytes.append(Self.hexDigit(byte >> 4))
                bytes.append(Self.hexDigit(byte & 0xF))
            default: bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    private static func hexDigit(_ nibble: UInt8) -> UInt8 {
        nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") + nibble - 10
    }

    /// `[[p,s],…]`.
    public mutating func levels(_ levels: [[Double]]) throws(MessageEncodingError) {
        bytes.append(UInt8(ascii: "["))
        for (i, level) in levels.enumerated() {
            if i > 0 { bytes.append(UInt8(ascii: ",")) }
            bytes.append(UInt8(ascii: "["))
            for (j, value) in level.enumerated() {
                if j > 0 { bytes.append(UInt8(ascii: ",")) }
                try number(value, field: "[\(i)][\(j)]")
            }
            bytes.append(UInt8(ascii: "]"))
        }
        bytes.append(UInt8(ascii: "]"))
    }

    public mutating func strings(_ values: [String]) {
        bytes.append(UInt8(ascii: "["))
        for (i, value) in values.enumerated() {
            if i > 0 { bytes.append(UInt8(ascii: ",")) }
            string(value)
        }
        bytes.append(UInt8(ascii: "]"))
    }

    /// A feature vector as an object by feature name, keys sorted.
    public mutating func features(_ f: FeatureVector) throws(MessageEncodingError) {
        raw("{\"depth_imbalance\":")
        try number(f.depthImbalance, field: ".depth_imbalance")
        raw(",\"imbalance\":")
        try number(f.imbalance, field: ".imbalance")
        raw(",\"microprice_offset_bps\":")
        try number(f.micropriceOffsetBps, field: ".microprice_offset_bps")
        raw(",\"mid_return_bps\":")
        try number(f.midReturnBps, field: ".mid_return_bps")
        raw(",\"ofi_norm\":")
        try number(f.ofiNorm, field: ".ofi_norm")
        raw(",\"realized_vol_bps\":")
        try number(f.realizedVolBps, field: ".realized_vol_bps")
        raw(",\"spread_bps\":")
        try number(f.spreadBps, field: ".spread_bps")
        raw(",\"tick_rate\":")
        try number(f.tickRate, field: ".tick_rate")
        raw("}")
    }

    /// The text written so far.
    public var text: String { String(decoding: bytes, as: UTF8.self) }
}

/// A value the stream text cannot carry (a non-finite number inside JSON text). `field` is the wire
/// name (`features.ofi_norm`, `bids[0][1]`).
public struct MessageEncodingError: Error, Equatable, CustomStringConvertible {
    public var field: String
    public var reason: String

    public init(field: String, reason: String) {
        self.field = field
        self.reason = reason
    }

    public var description: String { "field '\(field)': \(reason)" }
}
