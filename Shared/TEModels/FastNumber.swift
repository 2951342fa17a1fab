import Foundation
import TECore

/// Numbers read straight from field bytes, for the stream readers. Each reads a strict subset of what
/// `Int64(_:)` / `Double(_:)` read, with the same value, and declines the rest (nil): the reader then
/// leaves the entry to the Codable decoder, which decides.
enum FastNumber {
    /// `-?[0-9]+` in range.
    static func int64(_ text: FieldBytes) -> Int64? {
        let b = text.buffer
        var i = 0
        let negative = !b.isEmpty && b[0] == UInt8(ascii: "-")
        if negative { i = 1 }
        guard i < b.count else { return nil }
        // Accumulated negatively: Int64.min has no positive counterpart.
        var value: Int64 = 0
        while i < b.count {
            let d = b[i] &- UInt8(ascii: "0")
            guard d < 10 else { return nil }
            let (times10, o1) = value.multipliedReportingOverflow(by: 10)
            let (next, o2) = times10.subtractingReportingOverflow(Int64(d))
            guard !o1, !o2 else { return nil }
            value = next
            i += 1
        }
        if negative { return value }
        return value == .min ? nil : -value
    }

    /// Exact powers of ten a `Double` holds.
    private static let powersOfTen: [Double] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18,
        1e19, 1e20, 1e21, 1e22
    ]

    /// `-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?`, correctly rounded. Up to 15 significant digits with a small
    /// exponent (every price and size the venues send) it is one exact product or quotient of two exact
    /// doubles, so one rounding (Clinger's fast path); anything longer goes to `strtod`, as `Double(_:)` does.
    static func double(_ b: UnsafeBufferPointer<UInt8>) -> Double? {
        var i = 0
        let negative = !b.isEmpty && b[0] == UInt8(ascii: "-")
        if negative { i = 1 }
        var mantissa: UInt64 = 0
        var digits = 0  // significant digits in `mantissa`
        var scale = 0  // power of ten the mantissa is off by
        var intDigits = 0
        while i < b.count, b[i] &- UInt8(ascii: "0") < 10 {
            if mantissa != 0 || b[i] != UInt8(ascii: "0") {
                if digits < 19 {
                    mantissa = mantissa &* 10 &+ UInt64(b[i] &- UInt8(ascii: "0"))
                } else {
                    scale += 1
                }
                digits += 1
            }
            intDigits += 1
            i += 1
        }
        guard intDigits > 0 else { return nil }
        if i < b.count, b[i] == UInt8(ascii: ".") {
            i += 1
            var fracDigits = 0
            while i < b.count, b[i] &- UInt8(ascii: "0") < 10 {
                if mantissa != 0 || b[i] != UInt8(ascii: "0") {
                    if digits < 19 {
                        mantissa = mantissa &* 10 &+ UInt64(b[i] &- UInt8(ascii: "0"))
                        scale -= 1
                    }
                    digits += 1
                } else {
                    scale -= 1
                }
                fracDigits += 1
                i += 1
            }
            guard fracDigits > 0 else { return nil }
        }
        if i < b.count, b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E") {
            i += 1
            var expNegative = false
            if i < b.count, b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-") {
                expNegative = b[i] == UInt8(ascii: "-")
                i += 1
            }
            var exponent = 0
            var expDigits = 0
            while i < b.count, b[i] &- UInt8(ascii: "0") < 10 {
                if exponent < 100_000 { exponent = exponent * 10 + Int(b[i] &- UInt8(ascii: "0")) }
                expDigits += 1
                i += 1
            }
            guard expDigits > 0 else { return nil }
            scale += expNegative ? -exponent : exponent
        }
        guard i == b.count else { return nil }
        if mantissa == 0 { return negative ? -0.0 : 0.0 }
        if digits <= 15, scale >= -22, scale <= 22 {
            let m = Double(mantissa)
            let value = scale >= 0 ? m * powersOfTen[scale] : m / powersOfTen[-scale]
            return negative ? -value : value
        }
        return libcDouble(b)
    }

    /// The C library's correctly rounded reading (what `Double(_:)` calls), on a NUL-terminated copy.
    private static func libcDouble(_ b: UnsafeBufferPointer<UInt8>) -> Double? {
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: b.count + 1) { text -> Double? in
            for k in 0..<b.count { text[k] = CChar(bitPattern: b[k]) }
            text[b.count] = 0
            var end: UnsafeMutablePointer<CChar>?
            let value = strtod(text.baseAddress!, &end)
            // A locale whose decimal point is not `.` stops early: then decline.
            guard end == text.baseAddress! + b.count else { return nil }
            return value
        }
    }
}
